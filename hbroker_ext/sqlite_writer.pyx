# cython: language_level=3
"""The SQLite writer: transactions applied on a thread of their own, without the GIL.

Python's `sqlite3` module gives up the GIL around each statement step and takes it back after,
and binds every `None` and `bytes` parameter through its adaptation protocol (close to a
microsecond each). On a busy broker both add up: the writer thread waits for the event loop to
hand the GIL back between statements, and a message row costs several microseconds to bind.

Here a transaction is turned into C values on the event loop's thread (`submit`: one pass over
the rows, pointers into the `bytes` and `str` objects, which the caller keeps alive), and the
writer thread (`run`) executes it with prepared statements and never takes the GIL. It reports
each finished transaction by writing to an eventfd that the event loop watches (`fileno`,
`collect`). Transactions run one after another in the order they were submitted.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport strncpy

from posix.unistd cimport close, read, write


cdef extern from "Python.h":
    const char *PyUnicode_AsUTF8AndSize(object, Py_ssize_t *) except NULL


cdef extern from "<stdint.h>":
    ctypedef unsigned long long uint64_t


cdef extern from "<sys/eventfd.h>" nogil:
    int eventfd(unsigned int initval, int flags)
    int EFD_NONBLOCK
    int EFD_CLOEXEC


cdef extern from "<pthread.h>" nogil:
    ctypedef struct pthread_mutex_t:
        pass
    ctypedef struct pthread_cond_t:
        pass
    int pthread_mutex_init(pthread_mutex_t *, void *)
    int pthread_mutex_destroy(pthread_mutex_t *)
    int pthread_mutex_lock(pthread_mutex_t *)
    int pthread_mutex_unlock(pthread_mutex_t *)
    int pthread_cond_init(pthread_cond_t *, void *)
    int pthread_cond_destroy(pthread_cond_t *)
    int pthread_cond_wait(pthread_cond_t *, pthread_mutex_t *)
    int pthread_cond_signal(pthread_cond_t *)


cdef extern from "sqlite3.h" nogil:
    ctypedef struct sqlite3:
        pass
    ctypedef struct sqlite3_stmt:
        pass
    ctypedef long long sqlite3_int64
    ctypedef void (*sqlite3_destructor_type)(void *)
    sqlite3_destructor_type SQLITE_STATIC
    int SQLITE_OK
    int SQLITE_ROW
    int SQLITE_DONE
    int SQLITE_FULL
    int SQLITE_OPEN_READWRITE
    int SQLITE_OPEN_CREATE
    int SQLITE_OPEN_NOMUTEX
    unsigned int SQLITE_PREPARE_PERSISTENT
    const char *sqlite3_libversion()
    int sqlite3_open_v2(const char *, sqlite3 **, int, const char *)
    int sqlite3_close_v2(sqlite3 *)
    int sqlite3_prepare_v3(sqlite3 *, const char *, int, unsigned int, sqlite3_stmt **,
                           const char **)
    int sqlite3_bind_parameter_count(sqlite3_stmt *)
    int sqlite3_bind_null(sqlite3_stmt *, int)
    int sqlite3_bind_int64(sqlite3_stmt *, int, sqlite3_int64)
    int sqlite3_bind_double(sqlite3_stmt *, int, double)
    int sqlite3_bind_text(sqlite3_stmt *, int, const char *, int, sqlite3_destructor_type)
    int sqlite3_bind_blob(sqlite3_stmt *, int, const void *, int, sqlite3_destructor_type)
    int sqlite3_step(sqlite3_stmt *)
    int sqlite3_reset(sqlite3_stmt *)
    int sqlite3_finalize(sqlite3_stmt *)
    int sqlite3_busy_timeout(sqlite3 *, int)
    int sqlite3_extended_result_codes(sqlite3 *, int)
    int sqlite3_extended_errcode(sqlite3 *)
    const char *sqlite3_errmsg(sqlite3 *)
    const char *sqlite3_errstr(int)
    int sqlite3_get_autocommit(sqlite3 *)
    int sqlite3_exec(sqlite3 *, const char *, void *, void *, char **)


cdef enum:
    ERRMSG_SIZE = 256

# Value kinds.
cdef enum:
    V_NULL
    V_INT
    V_FLOAT
    V_TEXT
    V_BLOB


cdef struct Value:
    int kind
    int size
    sqlite3_int64 i
    double d
    const char *p


cdef struct Step:
    int stmt
    int first  # index of its first value in the job's values


cdef struct Job:
    Job *next
    long long job_id
    int stop
    int nsteps
    Step *steps
    Value *values
    int rc  # SQLITE_OK or the failing (extended) result code
    char errmsg[ERRMSG_SIZE]


class WriterError(Exception):
    """SQLite refused something: `code` is its primary result code (SQLITE_FULL = 13 means
    the disk or the size quota is full)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code

    @property
    def full(self) -> bool:
        return self.code == SQLITE_FULL


SQLITE_FULL_CODE = SQLITE_FULL


def sqlite_version() -> str:
    return sqlite3_libversion().decode()


cdef inline void _free_job(Job *job) noexcept nogil:
    free(job.steps)
    free(job.values)
    free(job)


cdef class Writer:
    """One SQLite connection, its prepared statements and the queue of transactions."""

    cdef sqlite3 *db
    cdef sqlite3_stmt **stmts
    cdef int *nparams
    cdef int nstmts
    cdef sqlite3_stmt *begin_stmt
    cdef sqlite3_stmt *commit_stmt
    cdef sqlite3_stmt *rollback_stmt
    cdef pthread_mutex_t mutex
    cdef pthread_cond_t cond
    cdef Job *queue_head
    cdef Job *queue_tail
    cdef Job *done_head
    cdef Job *done_tail
    cdef int efd
    cdef bint sync_primitives
    cdef readonly bint stopped
    cdef readonly str path

    def __cinit__(self):
        self.efd = -1

    def __init__(self, str path, list pragmas, list statements, int busy_timeout_ms=5000):
        """Open `path`, run `pragmas` (statements whose rows are ignored) and prepare
        `statements`, referred to by their index in `submit`."""
        cdef bytes bpath = path.encode()
        cdef int rc
        cdef bytes sql
        self.path = path
        rc = sqlite3_open_v2(bpath, &self.db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                             NULL)
        if rc != SQLITE_OK:
            self._raise(rc)
        sqlite3_extended_result_codes(self.db, 1)
        sqlite3_busy_timeout(self.db, busy_timeout_ms)
        for pragma in pragmas:
            sql = pragma.encode()
            rc = sqlite3_exec(self.db, sql, NULL, NULL, NULL)
            if rc != SQLITE_OK:
                self._raise(rc)
        self.nstmts = len(statements)
        self.stmts = <sqlite3_stmt **>calloc(max(1, self.nstmts), sizeof(sqlite3_stmt *))
        self.nparams = <int *>calloc(max(1, self.nstmts), sizeof(int))
        if self.stmts == NULL or self.nparams == NULL:
            raise MemoryError()
        for index, text in enumerate(statements):
            self.stmts[index] = self._prepare(text)
            self.nparams[index] = sqlite3_bind_parameter_count(self.stmts[index])
        self.begin_stmt = self._prepare("BEGIN")
        self.commit_stmt = self._prepare("COMMIT")
        self.rollback_stmt = self._prepare("ROLLBACK")
        self.efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
        if self.efd < 0:
            raise OSError("eventfd failed")
        pthread_mutex_init(&self.mutex, NULL)
        pthread_cond_init(&self.cond, NULL)
        self.sync_primitives = True

    cdef sqlite3_stmt *_prepare(self, str text) except NULL:
        cdef bytes sql = text.encode()
        cdef sqlite3_stmt *stmt = NULL
        cdef int rc = sqlite3_prepare_v3(self.db, sql, len(sql), SQLITE_PREPARE_PERSISTENT,
                                         &stmt, NULL)
        if rc != SQLITE_OK or stmt == NULL:
            self._raise(rc)
        return stmt

    cdef int _raise(self, int rc) except -1:
        message = (sqlite3_errmsg(self.db) if self.db != NULL else sqlite3_errstr(rc))
        raise WriterError(message.decode("utf-8", "replace"), rc & 0xff)

    def fileno(self) -> int:
        """The eventfd that becomes readable when transactions have finished."""
        return self.efd

    def submit(self, long long job_id, list steps) -> None:
        """Queue one transaction: `steps` is a list of (statement index, rows), applied in
        order, each row a tuple of None, int, float, str or bytes, one per parameter of the
        statement. The caller keeps `steps` alive until `collect` has returned this job: the
        writer reads the rows' memory."""
        cdef Py_ssize_t nrows = 0
        cdef Py_ssize_t nvalues = 0
        cdef Py_ssize_t size
        cdef int stmt, nparams, vi = 0, si = 0
        cdef Job *job
        cdef Value *v
        cdef tuple row
        if self.stopped:
            raise WriterError("storage is closed", 21)
        for stmt_index, rows in steps:
            stmt = stmt_index
            if stmt < 0 or stmt >= self.nstmts:
                raise IndexError(f"no statement {stmt}")
            nrows += len(rows)
            nvalues += len(rows) * self.nparams[stmt]
        job = <Job *>calloc(1, sizeof(Job))
        if job == NULL:
            raise MemoryError()
        job.job_id = job_id
        job.nsteps = nrows
        job.steps = <Step *>malloc(max(1, nrows) * sizeof(Step))
        job.values = <Value *>malloc(max(1, nvalues) * sizeof(Value))
        if job.steps == NULL or job.values == NULL:
            _free_job(job)
            raise MemoryError()
        try:
            for stmt_index, rows in steps:
                stmt = stmt_index
                nparams = self.nparams[stmt]
                for row in rows:
                    if len(row) != nparams:
                        raise ValueError(f"statement {stmt} takes {nparams} values, "
                                         f"got {len(row)}")
                    job.steps[si].stmt = stmt
                    job.steps[si].first = vi
                    si += 1
                    for value in row:
                        v = &job.values[vi]
                        vi += 1
                        if value is None:
                            v.kind = V_NULL
                        elif type(value) is bytes:
                            size = PyBytes_GET_SIZE(value)
                            if size > 0x7fffffff:
                                raise ValueError("value too large")
                            v.kind = V_BLOB
                            v.p = PyBytes_AS_STRING(value)
                            v.size = <int>size
                        elif type(value) is str:
                            v.kind = V_TEXT
                            v.p = PyUnicode_AsUTF8AndSize(value, &size)
                            if size > 0x7fffffff:
                                raise ValueError("value too large")
                            v.size = <int>size
                        elif type(value) is float:
                            v.kind = V_FLOAT
                            v.d = value
                        elif isinstance(value, int):
                            v.kind = V_INT
                            v.i = value
                        else:
                            raise TypeError(f"cannot store a {type(value).__name__}")
        except BaseException:
            _free_job(job)
            raise
        self._enqueue(job)

    def stop(self) -> None:
        """No more transactions: the thread finishes the queued ones, closes the connection
        and `run` returns."""
        cdef Job *job
        if self.stopped:
            return
        self.stopped = True
        job = <Job *>calloc(1, sizeof(Job))
        if job == NULL:
            raise MemoryError()
        job.stop = 1
        self._enqueue(job)

    cdef void _enqueue(self, Job *job) noexcept:
        with nogil:
            pthread_mutex_lock(&self.mutex)
            if self.queue_tail == NULL:
                self.queue_head = job
            else:
                self.queue_tail.next = job
            self.queue_tail = job
            pthread_cond_signal(&self.cond)
            pthread_mutex_unlock(&self.mutex)

    def run(self) -> None:
        """The writer thread's body: applies queued transactions until `stop`."""
        with nogil:
            self._run()

    cdef void _run(self) noexcept nogil:
        cdef Job *job
        cdef uint64_t one = 1
        cdef int stop
        while True:
            pthread_mutex_lock(&self.mutex)
            while self.queue_head == NULL:
                pthread_cond_wait(&self.cond, &self.mutex)
            job = self.queue_head
            self.queue_head = job.next
            if self.queue_head == NULL:
                self.queue_tail = NULL
            pthread_mutex_unlock(&self.mutex)
            job.next = NULL
            stop = job.stop
            if stop:
                self._close_db()
                _free_job(job)
            else:
                self._apply(job)
                pthread_mutex_lock(&self.mutex)
                if self.done_tail == NULL:
                    self.done_head = job
                else:
                    self.done_tail.next = job
                self.done_tail = job
                pthread_mutex_unlock(&self.mutex)
            write(self.efd, &one, sizeof(one))
            if stop:
                return

    cdef void _apply(self, Job *job) noexcept nogil:
        cdef int rc, i, n, k
        cdef sqlite3_stmt *stmt
        cdef Value *v
        rc = sqlite3_step(self.begin_stmt)
        sqlite3_reset(self.begin_stmt)
        if rc != SQLITE_DONE:
            self._fail(job, rc)
            return
        for i in range(job.nsteps):
            stmt = self.stmts[job.steps[i].stmt]
            n = self.nparams[job.steps[i].stmt]
            v = &job.values[job.steps[i].first]
            for k in range(n):
                if v[k].kind == V_NULL:
                    sqlite3_bind_null(stmt, k + 1)
                elif v[k].kind == V_INT:
                    sqlite3_bind_int64(stmt, k + 1, v[k].i)
                elif v[k].kind == V_FLOAT:
                    sqlite3_bind_double(stmt, k + 1, v[k].d)
                elif v[k].kind == V_TEXT:
                    sqlite3_bind_text(stmt, k + 1, v[k].p, v[k].size, SQLITE_STATIC)
                else:
                    sqlite3_bind_blob(stmt, k + 1, v[k].p, v[k].size, SQLITE_STATIC)
            rc = sqlite3_step(stmt)
            if rc != SQLITE_DONE and rc != SQLITE_ROW:
                self._fail(job, rc)
                sqlite3_reset(stmt)
                self._rollback()
                return
            sqlite3_reset(stmt)
        rc = sqlite3_step(self.commit_stmt)
        if rc != SQLITE_DONE:
            self._fail(job, rc)
            sqlite3_reset(self.commit_stmt)
            self._rollback()
            return
        sqlite3_reset(self.commit_stmt)
        job.rc = SQLITE_OK

    cdef void _fail(self, Job *job, int rc) noexcept nogil:
        job.rc = rc if rc != SQLITE_OK else 1
        strncpy(job.errmsg, sqlite3_errmsg(self.db), ERRMSG_SIZE - 1)
        job.errmsg[ERRMSG_SIZE - 1] = 0

    cdef void _rollback(self) noexcept nogil:
        # SQLITE_FULL and some I/O errors roll the transaction back by themselves.
        if not sqlite3_get_autocommit(self.db):
            sqlite3_step(self.rollback_stmt)
            sqlite3_reset(self.rollback_stmt)

    cdef void _close_db(self) noexcept nogil:
        cdef int i
        if self.db == NULL:
            return
        for i in range(self.nstmts):
            sqlite3_finalize(self.stmts[i])
            self.stmts[i] = NULL
        sqlite3_finalize(self.begin_stmt)
        sqlite3_finalize(self.commit_stmt)
        sqlite3_finalize(self.rollback_stmt)
        self.begin_stmt = self.commit_stmt = self.rollback_stmt = NULL
        sqlite3_close_v2(self.db)
        self.db = NULL

    def collect(self) -> list:
        """The transactions finished since the last call, in order: (job id, None) when
        committed, (job id, WriterError) when not (rolled back)."""
        cdef uint64_t count
        cdef Job *job
        cdef Job *next_job
        cdef list done = []
        read(self.efd, &count, sizeof(count))
        with nogil:
            pthread_mutex_lock(&self.mutex)
            job = self.done_head
            self.done_head = self.done_tail = NULL
            pthread_mutex_unlock(&self.mutex)
        while job != NULL:
            next_job = job.next
            if job.rc == SQLITE_OK:
                done.append((job.job_id, None))
            else:
                done.append((job.job_id, WriterError(
                    job.errmsg.decode("utf-8", "replace"), job.rc & 0xff)))
            _free_job(job)
            job = next_job
        return done

    def close(self) -> None:
        """Release what is left once the thread has returned from `run` (or never ran)."""
        cdef Job *job
        cdef Job *next_job
        self.stopped = True
        with nogil:
            self._close_db()
        for head in range(2):
            job = self.queue_head if head == 0 else self.done_head
            while job != NULL:
                next_job = job.next
                _free_job(job)
                job = next_job
        self.queue_head = self.queue_tail = self.done_head = self.done_tail = NULL
        if self.efd >= 0:
            close(self.efd)
            self.efd = -1

    def __dealloc__(self):
        if self.db != NULL:
            self._close_db()
        free(self.stmts)
        free(self.nparams)
        if self.efd >= 0:
            close(self.efd)
        if self.sync_primitives:
            pthread_mutex_destroy(&self.mutex)
            pthread_cond_destroy(&self.cond)
