"""A throwaway PostgreSQL server for tests: `initdb` into a temporary directory, started on a free
port of 127.0.0.1 (and a Unix socket inside that directory), removed at the end.

    with PostgresServer() as server:
        dsn = server.create_database("t1")   # postgresql://hbroker:...@127.0.0.1:port/t1

PostgreSQL refuses to run as root; as root the server runs as the `postgres` system user (or
`nobody`, or a system user created for it) and its directory is given to that user.
`find_bindir()` looks for `initdb`/`pg_ctl` on PATH, then in /usr/lib/postgresql/*/bin.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

INSTALL_HINT = ("PostgreSQL is not installed (no initdb/pg_ctl on PATH or in "
                "/usr/lib/postgresql/*/bin): run tools/install-test-deps.sh, or "
                "`sudo apt-get install postgresql`")

USER = "hbroker"  # the database superuser the tests connect as
SYSTEM_USERS = ("postgres", "nobody")  # who runs the server when the tests run as root
CREATED_USER = "hbroker-pg"  # created when none of SYSTEM_USERS exists


def find_bindir() -> Path | None:
    """The directory holding `initdb`, `pg_ctl` and `psql`, or None if PostgreSQL is absent."""
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        bindir = Path(os.path.realpath(initdb)).parent
        if (bindir / "pg_ctl").exists():
            return bindir

    def version(path: str) -> tuple[int, ...]:
        name = Path(path).parent.name
        return tuple(int(p) for p in name.split(".") if p.isdigit())

    for bindir in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True):
        if os.path.exists(os.path.join(bindir, "initdb")) \
                and os.path.exists(os.path.join(bindir, "pg_ctl")):
            return Path(bindir)
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_user() -> str | None:
    """The system user to run the server as, or None to run it as ourselves (not root)."""
    if os.geteuid() != 0:
        return None
    for name in SYSTEM_USERS:
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    try:
        pwd.getpwnam(CREATED_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/bin/false",
                        CREATED_USER], check=True, capture_output=True)
    return CREATED_USER


def _temp_parent(user: str | None) -> str | None:
    """Where to make the temporary directory: the usual place, unless another user (the
    server's) could not get through its parents (then /tmp)."""
    if user is None:
        return None
    path = Path(tempfile.gettempdir()).resolve()
    if all(p.stat().st_mode & 0o001 for p in (path, *path.parents)):
        return str(path)
    return "/tmp"


class PostgresServer:
    """One PostgreSQL cluster in a temporary directory. `start()`, `stop()` and `start()` again
    keep the data and the port; `cleanup()` (or leaving the `with` block) removes everything."""

    def __init__(self, bindir: Path | None = None) -> None:
        found = bindir or find_bindir()
        if found is None:
            raise RuntimeError(INSTALL_HINT)
        self.bindir = found
        self.user = _server_user()
        self.password = secrets.token_hex(12)
        self.port = 0
        self.tmp = Path(tempfile.mkdtemp(prefix="hbroker-pg-", dir=_temp_parent(self.user)))
        self.data = self.tmp / "data"
        self.sockets = self.tmp / "sockets"
        self.logfile = self.tmp / "server.log"
        self.running = False
        try:
            self._initdb()
        except BaseException:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise

    # -- commands ----------------------------------------------------------------------------

    def _run(self, *args: str, as_server: bool = True, timeout: float = 60) -> str:
        """Run a PostgreSQL program of bindir, as the server's user if `as_server`."""
        command = [str(self.bindir / args[0]), *args[1:]]
        if as_server and self.user is not None:
            if shutil.which("runuser"):
                command = ["runuser", "-u", self.user, "--", *command]
            else:
                command = ["su", "-s", "/bin/sh", self.user, "-c", shlex.join(command)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                cwd=self.tmp, env={**os.environ, "LC_ALL": "C"})
        if result.returncode != 0:
            raise RuntimeError(f"{shlex.join(command)} failed ({result.returncode}):\n"
                               f"{result.stdout}{result.stderr}{self.log()}")
        return result.stdout

    def log(self) -> str:
        """The server log so far (for failure messages)."""
        try:
            return "\n--- server log ---\n" + self.logfile.read_text(errors="replace")
        except OSError:
            return ""

    def _initdb(self) -> None:
        self.sockets.mkdir()
        pwfile = self.tmp / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            for path in (self.tmp, self.sockets, pwfile):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", USER, f"--pwfile={pwfile}",
                  "--auth-local=trust", "--auth-host=scram-sha-256", "--encoding=UTF8",
                  "--locale=C", "--no-sync", "--no-instructions")
        pwfile.unlink()

    def start(self, attempts: int = 5) -> None:
        """Start the server (on a new free port the first time, on the same port after)."""
        if self.running:
            return
        for attempt in range(attempts):
            port = self.port or free_port()
            options = shlex.join([
                "-c", "listen_addresses=127.0.0.1", "-p", str(port),
                "-k", str(self.sockets), "-c", "fsync=off", "-c", "full_page_writes=off",
                "-c", "max_connections=30", "-c", "shared_buffers=16MB",
                "-c", "dynamic_shared_memory_type=mmap",
            ])
            try:
                self._run("pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-w",
                          "-t", "60", "-o", options, "start", timeout=90)
            except RuntimeError:
                if self.port or attempt == attempts - 1:
                    raise
                time.sleep(0.2)  # the free port was taken meanwhile: another one
                continue
            self.port = port
            self.running = True
            return

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: `fast` (clean shutdown) or `immediate` (like a crash)."""
        if not self.running:
            return
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop",
                  timeout=90)
        self.running = False

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run `sql` through the Unix socket as the superuser; its unaligned output."""
        return self._run("psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                         "-h", str(self.sockets), "-p", str(self.port), "-U", USER,
                         "-d", database, "-c", sql, as_server=False)

    def create_database(self, name: str) -> str:
        """Create database `name` (a plain identifier) and return its DSN."""
        self.psql(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def dsn(self, database: str = "postgres") -> str:
        """The TCP DSN of `database`, with the password (the server wants scram-sha-256)."""
        return f"postgresql://{USER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def cleanup(self) -> None:
        """Stop the server (quickly) and remove its directory."""
        try:
            if self.running:
                self.stop("immediate")
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # -- context manager ---------------------------------------------------------------------

    def __enter__(self) -> PostgresServer:
        try:
            self.start()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.cleanup()
