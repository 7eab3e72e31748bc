/*
 * loadgen: a load generator for MQTT 3.1.1 / 5.0 brokers (see README.md).
 *
 * One thread, one epoll loop, non-blocking sockets. Publishers send pre-encoded PUBLISH
 * templates (copied into a reusable output buffer, packet id / sequence / timestamp patched in
 * place), subscribers check every delivery against what was published, and a closed loop
 * (--window) keeps each publisher at most W messages ahead of its deliveries. Three modes:
 *
 *   load      (default)  --pubs N --subs M ...: throughput, checking and latency
 *   idle      --idle N: N connections held open with PINGREQ every --keepalive seconds
 *   retained  --retained N: N retained messages stored, then delivered to a new subscriber
 *
 * One JSON object is written to stdout at the end; progress and errors go to stderr.
 * Exit status: 0 success, 1 connection failure or protocol error, 2 usage error,
 * 3 checking failed (QoS >= 1 messages lost, QoS 2 duplicates, misrouted messages).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

typedef uint8_t u8;
typedef uint16_t u16;
typedef uint32_t u32;
typedef uint64_t u64;

#define NS 1000000000ull
#define HEADER_BYTES 16 /* payload header: u32 publisher, u32 sequence, u64 timestamp (ns) */
#define MAX_ERRORS_KEPT 8
#define FILTERS_PER_SUBSCRIBE 64

/* MQTT packet types (first byte, flags included where they are fixed) */
enum {
    CONNECT = 0x10, CONNACK = 0x20, PUBLISH = 0x30, PUBACK = 0x40, PUBREC = 0x50,
    PUBREL = 0x62, PUBCOMP = 0x70, SUBSCRIBE = 0x82, SUBACK = 0x90, PINGREQ = 0xC0,
    PINGRESP = 0xD0, DISCONNECT = 0xE0,
};

/* ------------------------------------------------------------------------------------------ */
/* options */

enum { MODE_LOAD, MODE_IDLE, MODE_RETAINED };
enum { SUB_EXACT, SUB_WILDCARD, SUB_ALL };
static const char *const SUB_MODE_NAMES[] = {"exact", "wildcard", "all"};

static struct {
    const char *host;
    const char *port;
    const char *sub_port;  /* --sub-port: where the subscribers connect (NULL: --port) */
    int mode;
    u32 pubs, subs, qos, payload, topics, window;
    int sub_mode;
    int write_single;
    int v5;
    double rate, duration, warmup, drain, stall_timeout, timeout;
    u32 tick_us;
    u32 idle, keepalive, connect_parallel;
    u32 retained;
    int retained_clear;
    char client_prefix[64];
    int topics_given;
    int persistent;        /* --session-expiry given: subscribers keep persistent sessions */
    u32 session_expiry;    /* their Session Expiry Interval (5.0), seconds */
    int keep_sessions;     /* --keep-sessions: do not end them after the run */
} o = {
    .host = "127.0.0.1", .port = "1883", .mode = MODE_LOAD, .pubs = 1, .subs = 1, .qos = 0,
    .payload = 64, .window = 20, .sub_mode = SUB_EXACT, .duration = 5, .warmup = 1,
    .drain = 5, .stall_timeout = 2, .timeout = 30, .tick_us = 1000, .keepalive = 60,
    .connect_parallel = 100,
};

/* ------------------------------------------------------------------------------------------ */
/* small helpers */

static inline u64 now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (u64)ts.tv_sec * NS + (u64)ts.tv_nsec;
}

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("loadgen: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

static void *xmalloc(size_t n)
{
    void *p = calloc(1, n ? n : 1);
    if (!p)
        die("out of memory (%zu bytes)", n);
    return p;
}

static inline u16 get16(const u8 *p) { return (u16)(p[0] << 8 | p[1]); }
static inline void put16(u8 *p, u32 v) { p[0] = (u8)(v >> 8); p[1] = (u8)v; }

/* MQTT Variable Byte Integer: returns bytes written */
static int put_varint(u8 *p, u32 v)
{
    int n = 0;
    do {
        u8 b = v & 0x7f;
        v >>= 7;
        p[n++] = v ? (u8)(b | 0x80) : b;
    } while (v);
    return n;
}

/* returns bytes consumed, 0 if incomplete, -1 if malformed */
static int get_varint(const u8 *p, size_t avail, u32 *v)
{
    u32 val = 0;
    for (int i = 0; i < 4; i++) {
        if ((size_t)i >= avail)
            return 0;
        val |= (u32)(p[i] & 0x7f) << (7 * i);
        if (!(p[i] & 0x80)) {
            *v = val;
            return i + 1;
        }
    }
    return -1;
}


static int put_str(u8 *p, const char *s, size_t n)
{
    put16(p, (u32)n);
    memcpy(p + 2, s, n);
    return (int)n + 2;
}

static int put_u32_dec(char *p, u32 v)
{
    char tmp[10];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (int i = 0; i < n; i++)
        p[i] = tmp[n - 1 - i];
    return n;
}

/* ------------------------------------------------------------------------------------------ */
/* byte buffers, reused for the whole run (they only grow) */

typedef struct {
    u8 *data;
    size_t start, end, cap;
} buf_t;

static u8 *buf_reserve(buf_t *b, size_t n)
{
    if (b->cap - b->end >= n)
        return b->data + b->end;
    if (b->start) {
        memmove(b->data, b->data + b->start, b->end - b->start);
        b->end -= b->start;
        b->start = 0;
        if (b->cap - b->end >= n)
            return b->data + b->end;
    }
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->end < n)
        cap *= 2;
    u8 *d = realloc(b->data, cap);
    if (!d)
        die("out of memory (buffer of %zu bytes)", cap);
    b->data = d;
    b->cap = cap;
    return b->data + b->end;
}

/* ------------------------------------------------------------------------------------------ */
/* latency histogram: log-linear, 1 us resolution below 256 us, then 128 sub-buckets per power
 * of two (< 0.8 % relative error), up to 2^40 us; fixed size (~43 KB) */

#define H_SUB 256
#define H_HALF 128
#define H_SHIFTS 40
#define H_BUCKETS (H_SUB + H_HALF * H_SHIFTS)

static struct {
    u64 count[H_BUCKETS];
    u64 n, max_us, sum_ns;
} hist;

static inline u32 h_index(u64 us)
{
    if (us < H_SUB)
        return (u32)us;
    int msb = 63 - __builtin_clzll(us);
    int shift = msb - 7;
    u32 idx = H_SUB + (u32)(shift - 1) * H_HALF + (u32)((us >> shift) - H_HALF);
    return idx < H_BUCKETS ? idx : H_BUCKETS - 1;
}

static u64 h_value(u32 idx) /* highest value that falls in the bucket */
{
    if (idx < H_SUB)
        return idx;
    u32 shift = (idx - H_SUB) / H_HALF + 1;
    u64 m = (idx - H_SUB) % H_HALF + H_HALF;
    return ((m + 1) << shift) - 1;
}

static inline void hist_record(u64 ns)
{
    u64 us = ns / 1000;
    hist.count[h_index(us)]++;
    hist.n++;
    hist.sum_ns += ns;
    if (us > hist.max_us)
        hist.max_us = us;
}

static u64 hist_percentile(double q)
{
    if (!hist.n)
        return 0;
    u64 rank = (u64)(q / 100.0 * (double)hist.n + 0.5);
    if (rank < 1)
        rank = 1;
    u64 seen = 0;
    for (u32 i = 0; i < H_BUCKETS; i++) {
        seen += hist.count[i];
        if (seen >= rank) {
            u64 v = h_value(i);
            return v < hist.max_us ? v : hist.max_us;
        }
    }
    return hist.max_us;
}

/* ------------------------------------------------------------------------------------------ */
/* connections, publishers, subscribers */

enum { K_PUB, K_SUB, K_IDLE, K_RPUB, K_RSUB };
enum { S_NEW, S_TCP, S_CONNACK, S_SUBACK, S_READY, S_CLOSED };

struct pub;
struct sub;

typedef struct conn {
    int fd;
    u8 kind, state, epout, pending, counted_connecting;
    u32 index;
    buf_t in, out;
    size_t wleft;          /* --write single: bytes left of the packet being written */
    u32 recv_max;          /* broker's Receive Maximum (CONNACK), 65535 when absent */
    u32 subacks_waiting;
    u64 started_ns, last_send_ns, next_ping_ns;
    u64 pings_sent, pings_answered;
    struct pub *pub;
    struct sub *sub;
} conn_t;

typedef struct {
    u32 seq;
    u8 busy, acked, rec;
    u32 remaining;         /* deliveries still expected */
    u64 sent_ns;
} slot_t;

typedef struct pub {
    conn_t *c;
    u32 idx, qos;
    int active, retained, clearing;
    u64 next_seq, base;    /* base: oldest message not complete */
    u64 limit;             /* retained mode: number of messages to send */
    slot_t *slots;         /* o.window slots, slot of seq = seq % window, packet id = slot + 1 */
    u32 ntopics, cursor;   /* the topics this publisher cycles through */
    u32 *topic_of;         /* [ntopics] topic number t */
    u32 *sub_of;           /* [ntopics] the subscriber of that topic (exact / wildcard) */
    u32 *rank_in_sub;      /* [ntopics] rank of this residue among those of its subscriber */
    u8 *tmpl;              /* pre-encoded PUBLISH packets, one per topic */
    u32 *tmpl_off, *tmpl_len, *pid_off, *hdr_off;
    u64 published, acked, rate_sent;
} pub_t;

typedef struct {
    u64 next;              /* next expected rank */
    u64 bitmap;            /* bit i: rank next-1-i received */
    u64 received, unique, dups, ooo, stale;
    u32 per_cycle;         /* messages of one cycle of the publisher's topics that reach us */
} pair_t;

typedef struct sub {
    conn_t *c;
    u32 idx;
    pair_t *pairs;         /* [pubs] */
} sub_t;

/* ------------------------------------------------------------------------------------------ */
/* global state */

enum { PH_SETUP, PH_RUN, PH_DRAIN, PH_DONE };

static struct {
    int ep, tfd;
    u64 now;
    int phase;
    struct addrinfo *addr;
    struct addrinfo *sub_addr; /* the subscribers' address: --sub-port, else addr */
    conn_t **conns;
    u32 nconns, next_connect, connecting, ready;
    conn_t **pending;
    u32 npending, cap_pending;
    pub_t *pubs;
    sub_t *subs;
    u32 fanout;
    u8 *filler;
    u32 nonce;

    u64 t_begin, t0, warm_end, meas_end, drain_deadline, setup_deadline;
    u64 meas_start, meas_stop;  /* actual instants; latency samples are taken from messages
                                   sent in [meas_start, meas_stop) */
    int measuring;
    struct rusage ru_begin, ru_meas_start, ru_meas_stop;
    double rate_per_pub_ns;
    u64 max_backlog;
    u64 next_housekeeping, next_ping_check;

    /* counters (whole run) */
    u64 published, acked, delivered, misrouted, foreign, expired;
    /* counters (measured interval) */
    u64 m_published, m_acked, m_delivered, m_writes, m_reads;
    u64 writes, reads;

    /* errors */
    u64 connect_failures, protocol_errors, connack_refused, connections_lost;
    u64 sessions_ended, sessions_not_ended; /* --session-expiry: ended after the run */
    char *errors[MAX_ERRORS_KEPT];
    u32 nerrors;
    int fatal;            /* stop the run */
    int config_error;     /* e.g. window above Receive Maximum */
    volatile sig_atomic_t interrupted;
    int timed_out;

    /* idle mode */
    u64 idle_connected, idle_dropped, idle_connect_ns, idle_hold_start, idle_hold_end;
    int idle_holding;

    /* retained mode */
    int rstage;
    conn_t *rsub_conn;
    pub_t *rpub;
    u8 *rseen;
    u64 r_unique, r_dups, r_stale, r_nonretained, r_fill_acked, r_progress;
    u64 r_fill_start, r_fill_end, r_sub_start, r_sub_end, r_clear_start, r_clear_end;
} g;

enum { R_FILL, R_CONNECT_SUB, R_DELIVER, R_CLEAR, R_DONE };

static void record_error(u64 *counter, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (counter)
        (*counter)++;
    fprintf(stderr, "loadgen: %s\n", msg);
    if (g.nerrors < MAX_ERRORS_KEPT)
        g.errors[g.nerrors++] = strdup(msg);
}

static const char *conn_name(const conn_t *c)
{
    static char name[32];
    static const char *const kinds[] = {"publisher", "subscriber", "idle", "retained-publisher",
                                        "retained-subscriber"};
    snprintf(name, sizeof name, "%s %u", kinds[c->kind], c->index);
    return name;
}

/* ------------------------------------------------------------------------------------------ */
/* output: appending packets, flushing, epoll interest */

static void conn_close(conn_t *c)
{
    if (c->fd >= 0) {
        close(c->fd); /* also removes it from the epoll set */
        c->fd = -1;
    }
    c->state = S_CLOSED;
}

static void conn_lost(conn_t *c, const char *why);

static void mark_pending(conn_t *c)
{
    if (c->pending || c->state == S_CLOSED)
        return;
    if (g.npending == g.cap_pending) {
        g.cap_pending = g.cap_pending ? g.cap_pending * 2 : 64;
        g.pending = realloc(g.pending, g.cap_pending * sizeof *g.pending);
        if (!g.pending)
            die("out of memory");
    }
    c->pending = 1;
    g.pending[g.npending++] = c;
}

static void want_out(conn_t *c, int on)
{
    if (c->epout == on || c->fd < 0)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.ptr = c};
    if (epoll_ctl(g.ep, EPOLL_CTL_MOD, c->fd, &ev) < 0)
        die("epoll_ctl: %s", strerror(errno));
    c->epout = (u8)on;
}

static size_t packet_len(const u8 *p)
{
    u32 rl = 0;
    int n = get_varint(p + 1, 4, &rl);
    return 1 + (size_t)n + rl;
}

/* Write what is buffered: everything in one write() (batch), or one write() per packet
 * (single). Returns -1 if the connection was lost. */
static int conn_flush(conn_t *c)
{
    buf_t *b = &c->out;
    while (b->start < b->end) {
        size_t len = b->end - b->start;
        if (o.write_single) {
            if (!c->wleft)
                c->wleft = packet_len(b->data + b->start);
            len = c->wleft;
        }
        ssize_t n = write(c->fd, b->data + b->start, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                want_out(c, 1);
                return 0;
            }
            conn_lost(c, strerror(errno));
            return -1;
        }
        g.writes++;
        if (g.measuring)
            g.m_writes++;
        b->start += (size_t)n;
        if (o.write_single)
            c->wleft -= (size_t)n;
        if ((size_t)n < len) {
            want_out(c, 1);
            return 0;
        }
    }
    b->start = b->end = 0;
    c->last_send_ns = g.now;
    want_out(c, 0);
    return 0;
}

/* A packet was appended: single mode writes it now (unless the socket is full, then EPOLLOUT
 * writes it), batch mode writes it with the rest at the end of this loop iteration. */
static void packet_added(conn_t *c)
{
    if (o.write_single) {
        if (!c->epout)
            conn_flush(c);
    } else {
        mark_pending(c);
    }
}

static void send_short(conn_t *c, u8 type, u32 pid) /* PUBACK PUBREC PUBREL PUBCOMP */
{
    u8 *d = buf_reserve(&c->out, 4);
    d[0] = type;
    d[1] = 2;
    put16(d + 2, pid);
    c->out.end += 4;
    packet_added(c);
}

static void send_ping(conn_t *c)
{
    u8 *d = buf_reserve(&c->out, 2);
    d[0] = PINGREQ;
    d[1] = 0;
    c->out.end += 2;
    c->pings_sent++;
    c->last_send_ns = g.now;
    packet_added(c);
}

/* ------------------------------------------------------------------------------------------ */
/* connecting */

static void client_id(const conn_t *c, char *out, size_t n)
{
    static const char kinds[] = {'p', 's', 'i', 'r', 'R'};
    snprintf(out, n, "%s-%c%u", o.client_prefix, kinds[c->kind], c->index);
}

/* a subscriber of the load mode with --session-expiry: persistent session */
static int is_persistent(const conn_t *c) { return o.persistent && c->kind == K_SUB; }

#define CONNECT_MAX (5 + 10 + 1 + 5 + 2 + 128)

/* CONNECT of connection c into d (CONNECT_MAX bytes). clean: Clean Start / clean session 1
 * and, in 5.0, no Session Expiry Interval (the session ends with the connection); otherwise
 * Clean Start 0 and, in 5.0, Session Expiry Interval --session-expiry. Returns its length. */
static size_t encode_connect(u8 *d, const conn_t *c, int clean)
{
    char id[128];
    client_id(c, id, sizeof id);
    size_t idlen = strlen(id);
    u32 props = o.v5 && !clean ? 5 : 0;
    u32 rl = 10 + (o.v5 ? 1 + props : 0) + 2 + (u32)idlen;
    u8 *p = d;
    *p++ = CONNECT;
    p += put_varint(p, rl);
    p += put_str(p, "MQTT", 4);
    *p++ = o.v5 ? 5 : 4;
    *p++ = clean ? 0x02 : 0x00; /* clean session (3.1.1) / clean start (5.0) */
    put16(p, o.keepalive);
    p += 2;
    if (o.v5) {
        *p++ = (u8)props;
        if (props) {
            *p++ = 0x11; /* Session Expiry Interval */
            put16(p, o.session_expiry >> 16);
            put16(p + 2, o.session_expiry & 0xffff);
            p += 4;
        }
    }
    p += put_str(p, id, idlen);
    return (size_t)(p - d);
}

static void send_connect(conn_t *c)
{
    u8 *d = buf_reserve(&c->out, CONNECT_MAX);
    c->out.end += encode_connect(d, c, !is_persistent(c));
    c->state = S_CONNACK;
    conn_flush(c); /* one packet: the same in both write styles */
}

/* Where connection c connects: the subscribers to --sub-port when it is given (publisher and
 * subscriber on two brokers of a cluster), everyone else to --port. */
static const struct addrinfo *conn_addr(const conn_t *c)
{
    return c->kind == K_SUB ? g.sub_addr : g.addr;
}

static void connect_failed(conn_t *c, const char *why)
{
    record_error(&g.connect_failures, "%s: connect to %s:%s failed: %s", conn_name(c), o.host,
                 c->kind == K_SUB && o.sub_port ? o.sub_port : o.port, why);
    conn_close(c);
    if (c->counted_connecting) {
        c->counted_connecting = 0;
        g.connecting--;
    }
    if (o.mode != MODE_IDLE)
        g.fatal = 1;
}

static void conn_start(conn_t *c)
{
    c->started_ns = g.now;
    c->counted_connecting = 1;
    g.connecting++;
    const struct addrinfo *addr = conn_addr(c);
    int fd = socket(addr->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        connect_failed(c, strerror(errno));
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    c->state = S_TCP;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    if (epoll_ctl(g.ep, EPOLL_CTL_ADD, fd, &ev) < 0)
        die("epoll_ctl: %s", strerror(errno));
    c->epout = 1;
    if (connect(fd, addr->ai_addr, addr->ai_addrlen) < 0 && errno != EINPROGRESS) {
        connect_failed(c, strerror(errno));
        return;
    }
}

/* start connections in the queue while fewer than --connect-parallel are in progress */
static void start_connects(void)
{
    while (g.next_connect < g.nconns && g.connecting < o.connect_parallel) {
        conn_t *c = g.conns[g.next_connect++];
        if (c->kind == K_RSUB)
            continue; /* started by the retained scenario when its turn comes */
        conn_start(c);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* publishing */

static void pub_advance(pub_t *p)
{
    while (p->base < p->next_seq && !p->slots[p->base % o.window].busy)
        p->base++;
}

static void complete(pub_t *p, slot_t *s)
{
    s->busy = 0;
    pub_advance(p);
    mark_pending(p->c);
}

/* one retained PUBLISH (QoS 1, RETAIN) of message i, encoded in place */
static void encode_retained(pub_t *p, u32 i, u32 slot, u64 ts)
{
    char topic[48];
    int tl = 0;
    memcpy(topic, "retained/", 9);
    tl = 9;
    tl += put_u32_dec(topic + tl, i / 1000);
    topic[tl++] = '/';
    tl += put_u32_dec(topic + tl, i);
    u32 plen = p->clearing ? 0 : o.payload;
    u32 rl = 2 + (u32)tl + 2 + (o.v5 ? 1 : 0) + plen;
    conn_t *c = p->c;
    u8 *d = buf_reserve(&c->out, 5 + rl), *q = d;
    *q++ = PUBLISH | 0x02 | 0x01;
    q += put_varint(q, rl);
    q += put_str(q, topic, (size_t)tl);
    put16(q, slot + 1);
    q += 2;
    if (o.v5)
        *q++ = 0;
    if (plen) {
        memcpy(q, g.filler, plen);
        memcpy(q, &g.nonce, 4);
        memcpy(q + 4, &i, 4);
        memcpy(q + 8, &ts, 8);
        q += plen;
    }
    c->out.end += (size_t)(q - d);
}

static void pub_fill(pub_t *p)
{
    conn_t *c = p->c;
    if (!p->active || c->state != S_READY || c->epout)
        return;
    u64 room = p->base + o.window - p->next_seq;
    if (p->retained && p->limit - p->next_seq < room)
        room = p->limit - p->next_seq;
    if (!room)
        return;
    u64 n = room;
    if (o.rate > 0 && !p->retained) {
        u64 due = (u64)((double)(g.now - g.t0) * g.rate_per_pub_ns);
        if (due <= p->rate_sent)
            return;
        u64 want = due - p->rate_sent;
        if (want > room) {
            if (want - room > g.max_backlog)
                g.max_backlog = want - room;
        } else {
            n = want;
        }
    }
    u64 ts = now_ns();
    for (u64 i = 0; i < n; i++) {
        if (o.write_single && i)
            ts = now_ns();
        u64 seq = p->next_seq++;
        u32 slot_i = (u32)(seq % o.window);
        slot_t *s = &p->slots[slot_i];
        if (p->retained) {
            encode_retained(p, (u32)seq, slot_i, ts);
            s->remaining = 0;
        } else {
            u32 r = p->cursor;
            if (++p->cursor == p->ntopics)
                p->cursor = 0;
            u32 len = p->tmpl_len[r];
            u8 *d = buf_reserve(&c->out, len);
            memcpy(d, p->tmpl + p->tmpl_off[r], len);
            if (p->qos)
                put16(d + p->pid_off[r], slot_i + 1);
            u32 seq32 = (u32)seq;
            u8 *h = d + p->hdr_off[r];
            memcpy(h, &p->idx, 4);
            memcpy(h + 4, &seq32, 4);
            memcpy(h + 8, &ts, 8);
            c->out.end += len;
            s->remaining = g.fanout;
        }
        s->seq = (u32)seq;
        s->sent_ns = ts;
        s->acked = p->qos == 0;
        s->rec = 0;
        s->busy = !(s->acked && s->remaining == 0);
        p->published++;
        if (!p->retained) {
            g.published++;
            if (g.measuring)
                g.m_published++;
        }
        if (o.write_single) {
            if (!c->epout && conn_flush(c) < 0)
                return;
        }
    }
    if (!p->retained)
        p->rate_sent += n;
    pub_advance(p);
    /* The caller (run_pending) flushes. If the whole window was used and is free again
     * (QoS 0 messages with no subscriber to wait for), come back next iteration. */
    if (o.rate <= 0 && n == room && p->base + o.window > p->next_seq && !c->epout)
        mark_pending(c);
}

/* ------------------------------------------------------------------------------------------ */
/* receiving */

static void protocol_error(conn_t *c, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    record_error(&g.protocol_errors, "%s: protocol error: %s", conn_name(c), msg);
    g.fatal = 1;
    conn_close(c);
}

/* skip MQTT 5.0 properties, picking out those of the CONNACK we honour */
static int parse_props(conn_t *c, const u8 *p, u32 len)
{
    u32 i = 0;
    while (i < len) {
        u8 id = p[i++];
        u32 left = len - i;
        switch (id) {
        case 0x01: case 0x17: case 0x19: case 0x24: case 0x25: case 0x28: case 0x29: case 0x2A:
            if (left < 1)
                return -1;
            if (id == 0x24 && p[i] < o.qos) {
                record_error(&g.protocol_errors, "%s: the broker's Maximum QoS is %u, below "
                             "--qos %u", conn_name(c), p[i], o.qos);
                g.config_error = 1;
            }
            i += 1;
            break;
        case 0x13: case 0x21: case 0x22: case 0x23:
            if (left < 2)
                return -1;
            if (id == 0x21)
                c->recv_max = get16(p + i);
            else if (id == 0x13 && get16(p + i) && get16(p + i) < o.keepalive)
                fprintf(stderr, "loadgen: %s: Server Keep Alive %u s (asked %u)\n",
                        conn_name(c), get16(p + i), o.keepalive);
            i += 2;
            break;
        case 0x02: case 0x11: case 0x18: case 0x27:
            if (left < 4)
                return -1;
            if (id == 0x11 && is_persistent(c)) {
                u32 v = (u32)p[i] << 24 | (u32)p[i + 1] << 16 | (u32)p[i + 2] << 8 | p[i + 3];
                fprintf(stderr, "loadgen: %s: the broker grants a Session Expiry Interval of "
                        "%u s (asked %u)\n", conn_name(c), v, o.session_expiry);
                if (!v) {
                    record_error(&g.protocol_errors, "%s: the broker grants no persistent "
                                 "session (Session Expiry Interval 0)", conn_name(c));
                    g.config_error = 1;
                }
            }
            if (id == 0x27) {
                u32 max = (u32)p[i] << 24 | (u32)p[i + 1] << 16 | (u32)p[i + 2] << 8 | p[i + 3];
                if (max < o.payload + 64u + 16u) {
                    record_error(&g.protocol_errors, "%s: the broker's Maximum Packet Size %u "
                                 "is too small for --payload %u", conn_name(c), max, o.payload);
                    g.config_error = 1;
                }
            }
            i += 4;
            break;
        case 0x0B: {
            u32 v;
            int n = get_varint(p + i, left, &v);
            if (n <= 0)
                return -1;
            i += (u32)n;
            break;
        }
        case 0x03: case 0x08: case 0x09: case 0x12: case 0x15: case 0x16: case 0x1A: case 0x1C:
        case 0x1F:
            if (left < 2 || left - 2 < get16(p + i))
                return -1;
            i += 2u + get16(p + i);
            break;
        case 0x26:
            for (int k = 0; k < 2; k++) {
                left = len - i;
                if (left < 2 || left - 2 < get16(p + i))
                    return -1;
                i += 2u + get16(p + i);
            }
            break;
        default:
            return -1;
        }
    }
    return 0;
}

static void send_subscribe(conn_t *c);
static void retained_stage(void);

static void on_connack(conn_t *c, const u8 *b, u32 rl)
{
    if (c->state != S_CONNACK || rl < 2) {
        protocol_error(c, "unexpected CONNACK");
        return;
    }
    u8 code = b[1];
    if (code) {
        record_error(&g.connack_refused, "%s: CONNACK refused the connection: %s 0x%02x",
                     conn_name(c), o.v5 ? "reason code" : "return code", code);
        if (o.mode != MODE_IDLE)
            g.fatal = 1;
        conn_close(c);
        if (c->counted_connecting) {
            c->counted_connecting = 0;
            g.connecting--;
        }
        return;
    }
    if (is_persistent(c) && (b[0] & 1)) {
        char id[128];
        client_id(c, id, sizeof id);
        record_error(&g.protocol_errors, "%s: the broker already has a session for client id "
                     "'%s' (Session Present): use a --client-prefix not used before",
                     conn_name(c), id);
        g.config_error = 1;
        g.fatal = 1;
        return;
    }
    c->recv_max = 65535;
    if (o.v5) {
        u32 plen = 0;
        int n = rl > 2 ? get_varint(b + 2, rl - 2, &plen) : 0;
        if (n <= 0 || 2 + (u32)n + plen > rl || parse_props(c, b + 2 + n, plen) < 0) {
            protocol_error(c, "malformed CONNACK properties");
            return;
        }
        if (g.config_error) {
            g.fatal = 1;
            return;
        }
    }
    if ((c->kind == K_PUB && o.qos > 0) || c->kind == K_RPUB) {
        if (o.window > c->recv_max) {
            record_error(&g.protocol_errors, "--window %u is larger than the broker's Receive "
                         "Maximum %u (CONNACK): use --window <= %u or raise the broker's limit",
                         o.window, c->recv_max, c->recv_max);
            g.config_error = 1;
            g.fatal = 1;
            return;
        }
    }
    if (c->counted_connecting) {
        c->counted_connecting = 0;
        g.connecting--;
    }
    c->last_send_ns = g.now;
    switch (c->kind) {
    case K_SUB:
    case K_RSUB:
        send_subscribe(c);
        break;
    case K_PUB:
        c->state = S_READY;
        g.ready++;
        break;
    case K_IDLE:
        c->state = S_READY;
        g.idle_connected++;
        c->next_ping_ns = g.now + (u64)o.keepalive * NS;
        break;
    case K_RPUB:
        c->state = S_READY;
        retained_stage();
        break;
    }
}

static void send_subscribe(conn_t *c)
{
    /* the filters of this subscriber, in packets of FILTERS_PER_SUBSCRIBE */
    u32 j = c->index, pid = 0;
    char f[64];
    if (c->kind == K_RSUB || o.sub_mode != SUB_EXACT) {
        int fl;
        if (c->kind == K_RSUB)
            fl = snprintf(f, sizeof f, "retained/#");
        else if (o.sub_mode == SUB_WILDCARD)
            fl = snprintf(f, sizeof f, "bench/%u/+", j);
        else
            fl = snprintf(f, sizeof f, "bench/#");
        u32 rl = 2 + (o.v5 ? 1 : 0) + 2 + (u32)fl + 1;
        u8 *d = buf_reserve(&c->out, 5 + rl), *p = d;
        *p++ = SUBSCRIBE;
        p += put_varint(p, rl);
        put16(p, ++pid);
        p += 2;
        if (o.v5)
            *p++ = 0;
        p += put_str(p, f, (size_t)fl);
        *p++ = (u8)o.qos;
        c->out.end += (size_t)(p - d);
        c->subacks_waiting = 1;
    } else {
        u32 t = j, count = 0;
        while (t < o.topics) {
            u8 *d = buf_reserve(&c->out, 5 + 3 + FILTERS_PER_SUBSCRIBE * (2 + 64 + 1));
            u8 *p = d + 5; /* header written once the length is known */
            put16(p, ++pid);
            p += 2;
            if (o.v5)
                *p++ = 0;
            for (u32 k = 0; k < FILTERS_PER_SUBSCRIBE && t < o.topics; k++, t += o.subs) {
                int fl = snprintf(f, sizeof f, "bench/%u/%u", j, t);
                p += put_str(p, f, (size_t)fl);
                *p++ = (u8)o.qos;
                count++;
            }
            u32 rl = (u32)(p - (d + 5));
            u8 hdr[5];
            int hl = 1 + put_varint(hdr + 1, rl);
            hdr[0] = SUBSCRIBE;
            memmove(d + hl, d + 5, rl);
            memcpy(d, hdr, (size_t)hl);
            c->out.end += (size_t)hl + rl;
            c->subacks_waiting++;
        }
        if (!count) { /* more subscribers than topics: this one gets nothing */
            c->state = S_READY;
            g.ready++;
            return;
        }
    }
    c->state = S_SUBACK;
    if (c->kind == K_RSUB)
        g.r_sub_start = now_ns();
    conn_flush(c);
}

static void on_suback(conn_t *c, const u8 *b, u32 rl)
{
    if (c->state != S_SUBACK || rl < 3) {
        protocol_error(c, "unexpected SUBACK");
        return;
    }
    u32 i = 2;
    if (o.v5) {
        u32 plen;
        int n = get_varint(b + 2, rl - 2, &plen);
        if (n <= 0 || 2 + n + plen > rl) {
            protocol_error(c, "malformed SUBACK");
            return;
        }
        i += (u32)n + plen;
    }
    for (; i < rl; i++) {
        if (b[i] >= 0x80) {
            record_error(&g.protocol_errors, "%s: SUBACK refused a subscription (0x%02x)",
                         conn_name(c), b[i]);
            g.fatal = 1;
        } else if (b[i] < o.qos) {
            fprintf(stderr, "loadgen: %s: subscription granted QoS %u (asked %u)\n",
                    conn_name(c), b[i], o.qos);
        }
    }
    if (--c->subacks_waiting == 0) {
        c->state = S_READY;
        if (c->kind == K_SUB)
            g.ready++;
    }
}

static void on_pub_ack(conn_t *c, u8 type, const u8 *b, u32 rl)
{
    pub_t *p = c->pub;
    if (!p || rl < 2) {
        protocol_error(c, "unexpected acknowledgement 0x%02x", type);
        return;
    }
    u32 pid = get16(b);
    u8 reason = (o.v5 && rl >= 3) ? b[2] : 0;
    if (pid == 0 || pid > o.window) {
        protocol_error(c, "acknowledgement 0x%02x for packet id %u, never used", type, pid);
        return;
    }
    slot_t *s = &p->slots[pid - 1];
    switch (type) {
    case PUBACK:
        if (p->qos != 1 || !s->busy || s->acked) {
            protocol_error(c, "unexpected PUBACK for packet id %u", pid);
            return;
        }
        break;
    case PUBREC:
        if (p->qos != 2 || !s->busy || s->rec || s->acked) {
            protocol_error(c, "unexpected PUBREC for packet id %u", pid);
            return;
        }
        break;
    default: /* PUBCOMP */
        if (p->qos != 2 || !s->busy || !s->rec || s->acked) {
            protocol_error(c, "unexpected PUBCOMP for packet id %u", pid);
            return;
        }
    }
    if (reason >= 0x80) {
        protocol_error(c, "%s for packet id %u with reason code 0x%02x",
                       type == PUBACK ? "PUBACK" : type == PUBREC ? "PUBREC" : "PUBCOMP", pid,
                       reason);
        return;
    }
    if (type == PUBREC) {
        s->rec = 1;
        send_short(c, PUBREL, pid);
        return;
    }
    s->acked = 1;
    p->acked++;
    if (!p->retained) {
        g.acked++;
        if (g.measuring)
            g.m_acked++;
    }
    if (s->remaining == 0)
        complete(p, s);
    if (p->retained && p->base == p->limit)
        retained_stage();
}

static void track(pair_t *pr, u64 rank)
{
    pr->received++;
    if (rank >= pr->next) {
        u64 gap = rank - pr->next;
        pr->bitmap = gap + 1 >= 64 ? 1 : (pr->bitmap << (gap + 1)) | 1;
        pr->next = rank + 1;
        pr->unique++;
        return;
    }
    u64 d = pr->next - 1 - rank;
    if (d >= 64) {
        pr->stale++;
    } else if (pr->bitmap >> d & 1) {
        pr->dups++;
    } else {
        pr->bitmap |= 1ull << d;
        pr->ooo++;
        pr->unique++;
    }
}

static void load_delivery(conn_t *c, const u8 *pl, u32 plen, u64 rnow)
{
    sub_t *sb = c->sub;
    if (plen < HEADER_BYTES) {
        protocol_error(c, "PUBLISH with a %u-byte payload (not from loadgen)", plen);
        return;
    }
    u32 pidx, seq;
    u64 ts;
    memcpy(&pidx, pl, 4);
    memcpy(&seq, pl + 4, 4);
    memcpy(&ts, pl + 8, 8);
    if (pidx >= o.pubs) {
        g.foreign++;
        return;
    }
    pub_t *p = &g.pubs[pidx];
    pair_t *pr = &sb->pairs[pidx];
    u64 rank;
    if (o.sub_mode == SUB_ALL) {
        rank = seq;
    } else {
        u32 r = seq % p->ntopics;
        if (p->sub_of[r] != sb->idx) {
            g.misrouted++;
            return;
        }
        rank = (u64)(seq / p->ntopics) * pr->per_cycle + p->rank_in_sub[r];
    }
    track(pr, rank);
    g.delivered++;
    if (g.measuring)
        g.m_delivered++;
    if (g.meas_start && ts >= g.meas_start && ts < g.meas_stop && rnow >= ts)
        hist_record(rnow - ts);
    slot_t *s = &p->slots[seq % o.window];
    if (s->busy && s->seq == seq && s->remaining) {
        if (--s->remaining == 0 && s->acked)
            complete(p, s);
    }
}

static void retained_delivery(const u8 *pl, u32 plen, int retain)
{
    u32 nonce, i;
    if (g.rstage > R_DELIVER)
        return; /* the clearing PUBLISHes, forwarded live to our subscription */
    if (!retain) {
        g.r_nonretained++;
        return;
    }
    if (plen < HEADER_BYTES) {
        g.r_stale++;
        return;
    }
    memcpy(&nonce, pl, 4);
    memcpy(&i, pl + 4, 4);
    if (nonce != g.nonce || i >= o.retained) {
        g.r_stale++;
        return;
    }
    if (g.rseen[i >> 3] & (1u << (i & 7))) {
        g.r_dups++;
        return;
    }
    g.rseen[i >> 3] |= (u8)(1u << (i & 7));
    g.r_progress = g.now;
    if (++g.r_unique == o.retained) {
        g.r_sub_end = now_ns();
        retained_stage();
    }
}

static void on_publish(conn_t *c, u8 h, const u8 *b, u32 rl, u64 rnow)
{
    u32 qos = (h >> 1) & 3;
    if ((c->kind != K_SUB && c->kind != K_RSUB) || qos == 3 || rl < 2) {
        protocol_error(c, "unexpected PUBLISH");
        return;
    }
    u32 pos = 2 + get16(b), pid = 0;
    if (qos) {
        if (pos + 2 > rl) {
            protocol_error(c, "malformed PUBLISH");
            return;
        }
        pid = get16(b + pos);
        pos += 2;
    }
    if (o.v5) {
        u32 plen;
        int n = pos < rl ? get_varint(b + pos, rl - pos, &plen) : 0;
        if (n <= 0) {
            protocol_error(c, "malformed PUBLISH properties");
            return;
        }
        pos += (u32)n + plen;
    }
    if (pos > rl) {
        protocol_error(c, "malformed PUBLISH");
        return;
    }
    if (qos == 1)
        send_short(c, PUBACK, pid);
    else if (qos == 2)
        send_short(c, PUBREC, pid);
    if (c->kind == K_SUB)
        load_delivery(c, b + pos, rl - pos, rnow);
    else
        retained_delivery(b + pos, rl - pos, h & 1);
}

static void handle_packet(conn_t *c, u8 h, const u8 *b, u32 rl, u64 rnow)
{
    switch (h & 0xf0) {
    case PUBLISH:
        on_publish(c, h, b, rl, rnow);
        break;
    case PUBACK:
    case PUBREC:
    case PUBCOMP:
        on_pub_ack(c, h & 0xf0, b, rl);
        break;
    case PUBREL & 0xf0:
        if (rl < 2 || (c->kind != K_SUB && c->kind != K_RSUB)) {
            protocol_error(c, "unexpected PUBREL");
            return;
        }
        send_short(c, PUBCOMP, get16(b));
        break;
    case CONNACK:
        on_connack(c, b, rl);
        break;
    case SUBACK:
        on_suback(c, b, rl);
        break;
    case PINGRESP:
        c->pings_answered++;
        break;
    case DISCONNECT:
        if (o.v5 && rl >= 1)
            protocol_error(c, "broker sent DISCONNECT, reason code 0x%02x", b[0]);
        else
            protocol_error(c, "broker sent DISCONNECT");
        break;
    default:
        protocol_error(c, "unexpected packet type 0x%02x", h);
    }
}

static void conn_lost(conn_t *c, const char *why)
{
    int was = c->state;
    conn_close(c);
    if (was == S_TCP || was == S_CONNACK) {
        c->state = was;
        connect_failed(c, why);
        return;
    }
    if (o.mode == MODE_IDLE) {
        g.idle_dropped++;
        record_error(&g.connections_lost, "%s: connection lost: %s", conn_name(c), why);
        return;
    }
    record_error(&g.connections_lost, "%s: connection lost: %s", conn_name(c), why);
    g.fatal = 1;
}

static void conn_readable(conn_t *c)
{
    buf_t *b = &c->in;
    buf_reserve(b, c->kind == K_IDLE ? 256 : 65536);
    ssize_t n = read(c->fd, b->data + b->end, b->cap - b->end);
    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        conn_lost(c, n == 0 ? "closed by the broker" : strerror(errno));
        return;
    }
    g.reads++;
    if (g.measuring)
        g.m_reads++;
    b->end += (size_t)n;
    u64 rnow = now_ns();
    while (c->state != S_CLOSED) {
        size_t avail = b->end - b->start;
        if (avail < 2)
            break;
        const u8 *p = b->data + b->start;
        u32 rl;
        int vl = get_varint(p + 1, avail - 1, &rl);
        if (vl < 0) {
            protocol_error(c, "malformed remaining length");
            return;
        }
        if (vl == 0)
            break;
        size_t total = 1 + (size_t)vl + rl;
        if (avail < total) {
            buf_reserve(b, total - avail);
            break;
        }
        b->start += total;
        handle_packet(c, p[0], p + 1 + vl, rl, rnow);
    }
    if (b->start == b->end)
        b->start = b->end = 0;
}

static void conn_writable(conn_t *c)
{
    if (c->state == S_TCP) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            connect_failed(c, strerror(err));
            return;
        }
        want_out(c, 0);
        send_connect(c);
        return;
    }
    if (conn_flush(c) < 0)
        return;
    if (!c->epout && c->pub)
        mark_pending(c); /* the socket drained: the publisher may continue */
}

/* ------------------------------------------------------------------------------------------ */
/* setting up the scenario */

static conn_t *new_conn(u8 kind, u32 index)
{
    conn_t *c = xmalloc(sizeof *c);
    c->fd = -1;
    c->kind = kind;
    c->index = index;
    g.conns[g.nconns++] = c;
    return c;
}

static void setup_load(void)
{
    u32 P = o.pubs, M = o.subs, T = o.topics;
    u32 G = P < T ? P : T;
    g.fanout = o.sub_mode == SUB_ALL ? M : (M ? 1 : 0);
    g.conns = xmalloc((P + M) * sizeof *g.conns);
    g.pubs = xmalloc(P * sizeof *g.pubs);
    g.subs = xmalloc((M ? M : 1) * sizeof *g.subs);
    u32 Mdiv = M ? M : 1;
    for (u32 j = 0; j < M; j++) { /* subscribers first: they must be subscribed before the
                                     publishers start */
        sub_t *s = &g.subs[j];
        s->idx = j;
        s->pairs = xmalloc(P * sizeof *s->pairs);
        s->c = new_conn(K_SUB, j);
        s->c->sub = s;
    }
    for (u32 i = 0; i < P; i++) {
        pub_t *p = &g.pubs[i];
        p->idx = i;
        p->qos = o.qos;
        p->slots = xmalloc(o.window * sizeof *p->slots);
        /* publisher i cycles through the topics t with t % G == i % G */
        for (u32 t = i % G; t < T; t += G)
            p->ntopics++;
        p->topic_of = xmalloc(p->ntopics * sizeof(u32));
        p->sub_of = xmalloc(p->ntopics * sizeof(u32));
        p->rank_in_sub = xmalloc(p->ntopics * sizeof(u32));
        p->tmpl_off = xmalloc(p->ntopics * sizeof(u32));
        p->tmpl_len = xmalloc(p->ntopics * sizeof(u32));
        p->pid_off = xmalloc(p->ntopics * sizeof(u32));
        p->hdr_off = xmalloc(p->ntopics * sizeof(u32));
        size_t total = 0;
        u32 r = 0;
        for (u32 t = i % G; t < T; t += G, r++) {
            p->topic_of[r] = t;
            p->sub_of[r] = t % Mdiv;
            if (M && o.sub_mode != SUB_ALL) {
                pair_t *pr = &g.subs[t % M].pairs[i];
                p->rank_in_sub[r] = pr->per_cycle++;
            }
            total += 5 + 2 + 32 + 2 + 1 + o.payload;
        }
        if (o.sub_mode == SUB_ALL)
            for (u32 j = 0; j < M; j++)
                g.subs[j].pairs[i].per_cycle = p->ntopics;
        p->tmpl = xmalloc(total);
        size_t off = 0;
        for (r = 0; r < p->ntopics; r++) {
            char topic[40];
            int tl = snprintf(topic, sizeof topic, "bench/%u/%u", p->topic_of[r] % Mdiv,
                              p->topic_of[r]);
            u32 rl = 2 + (u32)tl + (o.qos ? 2 : 0) + (o.v5 ? 1 : 0) + o.payload;
            u8 *d = p->tmpl + off, *q = d;
            *q++ = (u8)(PUBLISH | o.qos << 1);
            q += put_varint(q, rl);
            q += put_str(q, topic, (size_t)tl);
            if (o.qos) {
                p->pid_off[r] = (u32)(q - d);
                q += 2;
            }
            if (o.v5)
                *q++ = 0;
            p->hdr_off[r] = (u32)(q - d);
            memcpy(q, g.filler, o.payload);
            memcpy(q, &p->idx, 4);
            q += o.payload;
            p->tmpl_off[r] = (u32)off;
            p->tmpl_len[r] = (u32)(q - d);
            off += p->tmpl_len[r];
        }
        p->c = new_conn(K_PUB, i);
        p->c->pub = p;
    }
    if (o.rate > 0)
        g.rate_per_pub_ns = o.rate / P / 1e9;
}

static void setup_idle(void)
{
    g.conns = xmalloc(o.idle * sizeof *g.conns);
    for (u32 i = 0; i < o.idle; i++)
        new_conn(K_IDLE, i);
}

static void setup_retained(void)
{
    g.conns = xmalloc(2 * sizeof *g.conns);
    g.rpub = xmalloc(sizeof *g.rpub);
    g.rpub->qos = 1;
    g.rpub->retained = 1;
    g.rpub->limit = o.retained;
    g.rpub->slots = xmalloc(o.window * sizeof(slot_t));
    g.rpub->c = new_conn(K_RPUB, 0);
    g.rpub->c->pub = g.rpub;
    g.rsub_conn = new_conn(K_RSUB, 0);
    g.rseen = xmalloc(o.retained / 8 + 1);
}

static void retained_stage(void)
{
    pub_t *p = g.rpub;
    switch (g.rstage) {
    case R_FILL:
        if (!p->active) { /* publisher connected: start filling */
            fprintf(stderr, "loadgen: publishing %u retained messages\n", o.retained);
            g.setup_deadline = g.now + (u64)(o.timeout * 1e9);
            g.r_fill_start = g.now;
            p->active = 1;
            mark_pending(p->c);
            if (o.retained)
                return;
        }
        if (p->base < p->limit)
            return;
        g.r_fill_end = now_ns();
        g.r_fill_acked = p->acked;
        p->active = 0;
        g.rstage = R_CONNECT_SUB;
        g.setup_deadline = g.now + (u64)(o.timeout * 1e9);
        fprintf(stderr, "loadgen: subscribing to retained/#\n");
        conn_start(g.rsub_conn);
        return;
    case R_CONNECT_SUB:
        return;
    case R_DELIVER:
        if (g.r_unique < o.retained)
            return;
        if (o.retained_clear) {
            fprintf(stderr, "loadgen: clearing the retained messages\n");
            g.rstage = R_CLEAR;
            g.setup_deadline = g.now + (u64)(o.timeout * 1e9);
            g.r_clear_start = now_ns();
            p->clearing = 1;
            p->next_seq = p->base = 0;
            p->active = 1;
            mark_pending(p->c);
            if (o.retained)
                return;
        } else {
            g.rstage = R_DONE;
            return;
        }
        /* fall through */
    case R_CLEAR:
        if (p->base < p->limit)
            return;
        g.r_clear_end = now_ns();
        p->active = 0;
        g.rstage = R_DONE;
        return;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* phases and housekeeping */

static void take_rusage(struct rusage *ru) { getrusage(RUSAGE_SELF, ru); }

static int load_all_complete(void)
{
    for (u32 i = 0; i < o.pubs; i++)
        if (g.pubs[i].base < g.pubs[i].next_seq)
            return 0;
    return 1;
}

static void stop_measuring(void)
{
    if (!g.measuring)
        return;
    g.measuring = 0;
    g.meas_stop = now_ns();
    take_rusage(&g.ru_meas_stop);
}

static void housekeeping_load(void)
{
    if (g.phase == PH_SETUP) {
        if (g.ready == o.pubs + o.subs) {
            g.t0 = g.now;
            g.warm_end = g.t0 + (u64)(o.warmup * 1e9);
            g.meas_end = g.warm_end + (u64)(o.duration * 1e9);
            g.phase = PH_RUN;
            fprintf(stderr, "loadgen: %u publishers, %u subscribers connected; running\n",
                    o.pubs, o.subs);
            for (u32 i = 0; i < o.pubs; i++) {
                g.pubs[i].active = 1;
                mark_pending(g.pubs[i].c);
            }
            if (o.rate > 0) {
                struct itimerspec its = {
                    .it_interval = {o.tick_us / 1000000, (long)(o.tick_us % 1000000) * 1000},
                    .it_value = {o.tick_us / 1000000, (long)(o.tick_us % 1000000) * 1000}};
                timerfd_settime(g.tfd, 0, &its, NULL);
            }
        } else if (g.now > g.setup_deadline || g.interrupted) {
            record_error(&g.connect_failures, "setup did not finish within %.0f s "
                         "(%u of %u clients ready)", o.timeout, g.ready, o.pubs + o.subs);
            g.fatal = 1;
        }
        return;
    }
    if (g.phase == PH_RUN) {
        if (!g.measuring && !g.meas_start && g.now >= g.warm_end) {
            g.measuring = 1;
            g.meas_start = now_ns();
            g.meas_stop = UINT64_MAX;
            take_rusage(&g.ru_meas_start);
        }
        if (g.now >= g.meas_end || g.interrupted) {
            if (!g.meas_start) { /* interrupted during the warm-up */
                g.meas_start = g.meas_stop = now_ns();
                take_rusage(&g.ru_meas_start);
                g.ru_meas_stop = g.ru_meas_start;
            }
            stop_measuring();
            for (u32 i = 0; i < o.pubs; i++)
                g.pubs[i].active = 0;
            g.phase = PH_DRAIN;
            g.drain_deadline = g.now + (u64)(o.drain * 1e9);
            fprintf(stderr, "loadgen: measured %.3f s; draining\n",
                    (double)(g.meas_stop - g.meas_start) / 1e9);
        }
    }
    if (g.phase == PH_RUN || g.phase == PH_DRAIN) {
        /* QoS 0 messages (and acknowledged ones) whose deliveries never came free their
         * window slot after --stall-timeout: counted as expired */
        u64 stall = (u64)(o.stall_timeout * 1e9);
        for (u32 i = 0; i < o.pubs; i++) {
            pub_t *p = &g.pubs[i];
            int freed = 0;
            for (u64 s = p->base; s < p->next_seq; s++) {
                slot_t *sl = &p->slots[s % o.window];
                if (!sl->busy)
                    continue;
                if (sl->sent_ns + stall > g.now) /* sent_ns may be later than g.now */
                    break;
                if (sl->acked) {
                    sl->busy = 0;
                    g.expired++;
                    freed = 1;
                }
            }
            if (freed) {
                pub_advance(p);
                mark_pending(p->c);
            }
        }
        if (g.phase == PH_DRAIN && (load_all_complete() || g.now >= g.drain_deadline))
            g.phase = PH_DONE;
    }
}

static void housekeeping_idle(void)
{
    if (g.phase == PH_SETUP) {
        if (g.next_connect == g.nconns && g.connecting == 0) {
            g.idle_connect_ns = g.now - g.t_begin;
            fprintf(stderr, "loadgen: %lu of %u connected in %.3f s; holding for %.1f s\n",
                    (unsigned long)g.idle_connected, o.idle, (double)g.idle_connect_ns / 1e9,
                    o.duration);
            g.phase = PH_RUN;
            g.idle_hold_start = g.now;
            g.meas_start = g.now;
            take_rusage(&g.ru_meas_start);
            g.meas_end = g.now + (u64)(o.duration * 1e9);
        } else if (g.now > g.setup_deadline + (u64)(o.idle / 100) * NS || g.interrupted) {
            record_error(&g.connect_failures, "connecting did not finish in time");
            g.fatal = 1;
        }
        return;
    }
    if (g.phase == PH_RUN) {
        if (o.keepalive) {
            for (u32 i = 0; i < g.nconns; i++) {
                conn_t *c = g.conns[i];
                if (c->state == S_READY && g.now >= c->next_ping_ns) {
                    send_ping(c);
                    c->next_ping_ns += (u64)o.keepalive * NS;
                }
            }
        }
        if (g.now >= g.meas_end || g.interrupted) {
            g.meas_stop = g.now;
            g.idle_hold_end = g.now;
            take_rusage(&g.ru_meas_stop);
            g.phase = PH_DRAIN;
            g.drain_deadline = g.now + 2 * NS;
        }
        return;
    }
    if (g.phase == PH_DRAIN) { /* wait for the last PINGRESPs */
        int waiting = 0;
        for (u32 i = 0; i < g.nconns && !waiting; i++)
            if (g.conns[i]->state == S_READY &&
                g.conns[i]->pings_answered < g.conns[i]->pings_sent)
                waiting = 1;
        if (!waiting || g.now >= g.drain_deadline)
            g.phase = PH_DONE;
    }
}

static void housekeeping_retained(void)
{
    if (g.phase == PH_SETUP) {
        g.phase = PH_RUN;
        g.meas_start = g.now;
        take_rusage(&g.ru_meas_start);
    }
    if (g.rsub_conn->state == S_READY && g.rstage == R_CONNECT_SUB) {
        /* subscribed (SUBACK may come before or after the retained messages) */
        g.rstage = R_DELIVER;
        retained_stage();
    }
    if (g.rstage == R_DELIVER && g.rsub_conn->state == S_READY) {
        /* deliveries stopped short: a broker delivers at most its window plus its queue
         * limit of retained messages at QoS 1/2 and drops the rest */
        u64 since = g.r_progress > g.r_sub_start ? g.r_progress : g.r_sub_start;
        if (g.now > since + (u64)(o.stall_timeout * 1e9)) {
            record_error(NULL, "retained delivery stalled at %lu of %u for %.1f s (at "
                         "subscription QoS 1/2 a broker sends at most its inflight window plus "
                         "its queue limit, e.g. max_queued_messages: use --qos 0 or raise them)",
                         (unsigned long)g.r_unique, o.retained, o.stall_timeout);
            g.timed_out = 1;
            g.meas_stop = g.now;
            take_rusage(&g.ru_meas_stop);
            g.phase = PH_DONE;
            return;
        }
    }
    if (g.rstage == R_DONE) {
        g.meas_stop = g.now;
        take_rusage(&g.ru_meas_stop);
        g.phase = PH_DONE;
        return;
    }
    if (g.now > g.setup_deadline || g.interrupted) {
        record_error(NULL, "retained scenario did not finish within %.0f s (stage %d, "
                     "%lu of %u delivered)", o.timeout, g.rstage, (unsigned long)g.r_unique,
                     o.retained);
        g.timed_out = 1;
        g.meas_stop = g.now;
        take_rusage(&g.ru_meas_stop);
        g.phase = PH_DONE;
    }
}

static void housekeeping(void)
{
    if (o.mode == MODE_LOAD)
        housekeeping_load();
    else if (o.mode == MODE_IDLE)
        housekeeping_idle();
    else
        housekeeping_retained();
    /* keep the data connections alive on long runs (idle mode pings on its own) */
    if (o.mode != MODE_IDLE && o.keepalive && g.phase != PH_SETUP &&
        g.now >= g.next_ping_check) {
        g.next_ping_check = g.now + NS / 10;
        u64 half = (u64)o.keepalive * NS / 2;
        for (u32 i = 0; i < g.nconns; i++) {
            conn_t *c = g.conns[i];
            if (c->state == S_READY && g.now - c->last_send_ns >= half)
                send_ping(c);
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* the loop */

static void run_pending(void)
{
    u32 n = g.npending;
    for (u32 i = 0; i < n; i++) {
        conn_t *c = g.pending[i];
        c->pending = 0;
        if (c->state == S_CLOSED)
            continue;
        if (c->pub)
            pub_fill(c->pub);
        if (c->state != S_CLOSED && !c->epout && c->out.end > c->out.start)
            conn_flush(c);
    }
    if (g.npending > n) /* added while processing: next iteration */
        memmove(g.pending, g.pending + n, (g.npending - n) * sizeof *g.pending);
    g.npending -= n;
}

static void on_signal(int sig)
{
    (void)sig;
    g.interrupted = 1;
}

static void loop(void)
{
    struct epoll_event evs[1024];
    while (g.phase != PH_DONE && !g.fatal) {
        int timeout = g.npending ? 0 : 2;
        int n = epoll_wait(g.ep, evs, 1024, timeout);
        if (n < 0) {
            if (errno != EINTR)
                die("epoll_wait: %s", strerror(errno));
            n = 0;
        }
        g.now = now_ns();
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            if (!c) { /* --rate tick */
                u64 ticks;
                if (read(g.tfd, &ticks, sizeof ticks) > 0)
                    for (u32 k = 0; k < o.pubs; k++)
                        mark_pending(g.pubs[k].c);
                continue;
            }
            if (c->state == S_CLOSED)
                continue;
            u32 e = evs[i].events;
            if (e & EPOLLOUT)
                conn_writable(c);
            if (c->state != S_CLOSED && (e & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
                if (c->state == S_TCP) {
                    conn_writable(c); /* a failed connect reports here */
                } else {
                    conn_readable(c);
                }
            }
        }
        if (g.connecting < o.connect_parallel && g.next_connect < g.nconns)
            start_connects();
        run_pending();
        if (g.now >= g.next_housekeeping || g.interrupted) {
            housekeeping();
            /* every millisecond; idle mode looks at every connection, so less often */
            g.next_housekeeping = g.now + (o.mode == MODE_IDLE ? 20000000 : 1000000);
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* the end of the run: disconnecting, ending persistent sessions */

#define END_TIMEOUT_S 2 /* per blocking step of ending a session */

static void set_blocking(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    struct timeval tv = {.tv_sec = END_TIMEOUT_S};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

static int write_all(int fd, const u8 *d, size_t n)
{
    while (n) {
        ssize_t w = write(fd, d, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        d += w;
        n -= (size_t)w;
    }
    return 0;
}

/* after our DISCONNECT: discard what still comes until the broker closes the connection */
static int wait_closed(int fd)
{
    static u8 junk[65536];
    for (;;) {
        ssize_t n = read(fd, junk, sizeof junk);
        if (n == 0)
            return 0;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno == ECONNRESET ? 0 : -1;
        }
    }
}

/* a whole CONNACK on a blocking socket: 0 if it accepted the connection */
static int read_connack(int fd)
{
    u8 b[512];
    size_t have = 0;
    for (;;) {
        ssize_t n = read(fd, b + have, sizeof b - have);
        if (n <= 0) {
            if (n < 0 && errno == EINTR)
                continue;
            return -1;
        }
        have += (size_t)n;
        u32 rl;
        int vl = have > 1 ? get_varint(b + 1, have - 1, &rl) : 0;
        if (vl < 0)
            return -1;
        if (vl > 0 && have >= 1 + (size_t)vl + rl)
            return b[0] == CONNACK && rl >= 2 && b[1 + vl + 1] == 0 ? 0 : -1;
        if (have == sizeof b)
            return -1;
    }
}

/* End the session of subscriber c on a new connection: CONNECT with Clean Start / clean
 * session 1 (which discards the stored session; in 5.0 without a Session Expiry Interval, so
 * the new session ends with the connection), then DISCONNECT. */
static int end_session_by_reconnect(const conn_t *c)
{
    const struct addrinfo *addr = conn_addr(c);
    int fd = socket(addr->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    set_blocking(fd);
    u8 d[CONNECT_MAX];
    size_t n = encode_connect(d, c, 1);
    static const u8 disconnect[] = {DISCONNECT, 0};
    int ok = connect(fd, addr->ai_addr, addr->ai_addrlen) == 0 &&
             write_all(fd, d, n) == 0 && read_connack(fd) == 0 &&
             write_all(fd, disconnect, sizeof disconnect) == 0 && wait_closed(fd) == 0;
    close(fd);
    return ok ? 0 : -1;
}

/* A subscriber with a persistent session: write what it has buffered (acknowledgements), then
 * DISCONNECT, in 5.0 with Session Expiry Interval 0 (ending the session) unless
 * --keep-sessions, and wait until the broker closes the connection. 1 if the session ended. */
static int disconnect_persistent(conn_t *c)
{
    set_blocking(c->fd);
    int end = o.v5 && !o.keep_sessions;
    /* 5.0: reason code 0, properties: Session Expiry Interval 0 */
    static const u8 disconnect_end[] = {DISCONNECT, 7, 0x00, 5, 0x11, 0, 0, 0, 0};
    static const u8 disconnect[] = {DISCONNECT, 0};
    int ok = write_all(c->fd, c->out.data + c->out.start, c->out.end - c->out.start) == 0 &&
             (end ? write_all(c->fd, disconnect_end, sizeof disconnect_end)
                  : write_all(c->fd, disconnect, sizeof disconnect)) == 0 &&
             wait_closed(c->fd) == 0;
    c->out.start = c->out.end = 0;
    return end && ok;
}

static void finish_connections(void)
{
    /* DISCONNECT everything still open (normal disconnection), then close. With
     * --session-expiry the subscribers end their sessions, unless --keep-sessions: 5.0 by
     * their DISCONNECT, 3.1.1 (or a connection that was lost) by connecting again with a
     * clean session. */
    for (u32 i = 0; i < g.nconns; i++) {
        conn_t *c = g.conns[i];
        int ended = 0;
        if (c->fd >= 0 && is_persistent(c) && (c->state == S_READY || c->state == S_SUBACK)) {
            ended = disconnect_persistent(c);
        } else if (c->fd >= 0 && (c->state == S_READY || c->state == S_SUBACK)) {
            c->out.start = c->out.end = 0;
            c->wleft = 0;
            u8 *d = buf_reserve(&c->out, 2);
            d[0] = DISCONNECT;
            d[1] = 0;
            c->out.end += 2;
            (void)!write(c->fd, c->out.data, 2);
        }
        if (c->fd >= 0)
            close(c->fd);
        c->fd = -1;
        if (!is_persistent(c) || o.keep_sessions || c->state == S_NEW)
            continue;
        if (!ended)
            ended = end_session_by_reconnect(c) == 0;
        if (ended) {
            g.sessions_ended++;
        } else {
            g.sessions_not_ended++;
            record_error(NULL, "%s: could not end its session (it stays on the broker until "
                         "it expires)", conn_name(c));
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* the report */

static double tv_s(struct timeval tv) { return (double)tv.tv_sec + (double)tv.tv_usec / 1e6; }

static void json_str(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            printf("\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            printf("\\u%04x", *s);
        else
            putchar(*s);
    }
    putchar('"');
}

static void report_params(void)
{
    static const char *const modes[] = {"load", "idle", "retained"};
    printf("{\"mode\": \"%s\", \"params\": {\"host\": ", modes[o.mode]);
    json_str(o.host);
    printf(", \"port\": %u, \"protocol\": \"%s\", \"pubs\": %u, \"subs\": %u, \"qos\": %u, "
           "\"payload\": %u, \"topics\": %u, \"sub_mode\": \"%s\", \"window\": %u, "
           "\"write\": \"%s\", \"rate\": %.0f, \"tick_us\": %u, \"duration\": %g, "
           "\"warmup\": %g, \"drain\": %g, \"stall_timeout\": %g, \"keepalive\": %u, "
           "\"idle\": %u, \"connect_parallel\": %u, \"retained\": %u, \"retained_clear\": %s, ",
           (unsigned)strtoul(o.port, NULL, 10), o.v5 ? "5.0" : "3.1.1", o.pubs, o.subs, o.qos, o.payload, o.topics,
           SUB_MODE_NAMES[o.sub_mode], o.window, o.write_single ? "single" : "batch", o.rate,
           o.tick_us, o.duration, o.warmup, o.drain, o.stall_timeout, o.keepalive, o.idle,
           o.connect_parallel, o.retained, o.retained_clear ? "true" : "false");
    printf("\"sub_port\": %u, ",
           (unsigned)strtoul(o.sub_port ? o.sub_port : o.port, NULL, 10));
    if (o.persistent)
        printf("\"session_expiry\": %u, ", o.session_expiry);
    else
        printf("\"session_expiry\": null, ");
    printf("\"keep_sessions\": %s, \"client_prefix\": ", o.keep_sessions ? "true" : "false");
    json_str(o.client_prefix);
    printf("}");
}

static void report_cpu(double measured_s)
{
    struct rusage end;
    take_rusage(&end);
    double mu = tv_s(g.ru_meas_stop.ru_utime) - tv_s(g.ru_meas_start.ru_utime);
    double ms = tv_s(g.ru_meas_stop.ru_stime) - tv_s(g.ru_meas_start.ru_stime);
    printf(", \"cpu\": {\"user_s\": %.3f, \"sys_s\": %.3f, \"percent\": %.1f, "
           "\"total_user_s\": %.3f, \"total_sys_s\": %.3f}",
           mu, ms, measured_s > 0 ? 100.0 * (mu + ms) / measured_s : 0.0,
           tv_s(end.ru_utime) - tv_s(g.ru_begin.ru_utime),
           tv_s(end.ru_stime) - tv_s(g.ru_begin.ru_stime));
}

static int report_errors(int check_failed)
{
    int ok = !g.connect_failures && !g.protocol_errors && !g.connack_refused &&
             !g.connections_lost && !g.timed_out && !g.fatal;
    printf(", \"errors\": {\"connect_failures\": %lu, \"connack_refused\": %lu, "
           "\"protocol_errors\": %lu, \"connections_lost\": %lu, \"timed_out\": %s, "
           "\"messages\": [",
           (unsigned long)g.connect_failures, (unsigned long)g.connack_refused,
           (unsigned long)g.protocol_errors, (unsigned long)g.connections_lost,
           g.timed_out ? "true" : "false");
    for (u32 i = 0; i < g.nerrors; i++) {
        if (i)
            printf(", ");
        json_str(g.errors[i]);
    }
    printf("]}, \"checks_passed\": %s, \"ok\": %s}\n", check_failed ? "false" : "true",
           ok && !check_failed ? "true" : "false");
    return ok ? (check_failed ? 3 : 0) : 1;
}

static u64 expected_for(const pub_t *p, u32 j, u64 sent)
{
    if (o.sub_mode == SUB_ALL)
        return sent;
    const pair_t *pr = &g.subs[j].pairs[p->idx];
    u64 n = sent / p->ntopics * pr->per_cycle;
    u32 rest = (u32)(sent % p->ntopics);
    for (u32 r = 0; r < rest; r++)
        if (p->sub_of[r] == j)
            n++;
    return n;
}

static int report_load(void)
{
    double ms = (double)(g.meas_stop - g.meas_start) / 1e9;
    u64 expected = 0, unique = 0, lost = 0, extra = 0, dups = 0, ooo = 0, stale = 0;
    u64 unacked = 0, outstanding = 0;
    for (u32 i = 0; i < o.pubs; i++) {
        pub_t *p = &g.pubs[i];
        for (u64 s = p->base; s < p->next_seq; s++) {
            slot_t *sl = &p->slots[s % o.window];
            if (sl->busy) {
                outstanding++;
                if (!sl->acked)
                    unacked++;
            }
        }
        for (u32 j = 0; j < o.subs; j++) {
            pair_t *pr = &g.subs[j].pairs[i];
            u64 e = expected_for(p, j, p->next_seq);
            expected += e;
            unique += pr->unique;
            if (e > pr->unique)
                lost += e - pr->unique;
            else
                extra += pr->unique - e;
            dups += pr->dups;
            ooo += pr->ooo;
            stale += pr->stale;
        }
    }
    report_params();
    printf(", \"deliveries_per_message\": %u, \"measured_s\": %.6f, \"published\": %lu, "
           "\"delivered\": %lu, \"acked\": %lu, \"published_per_s\": %.1f, "
           "\"delivered_per_s\": %.1f",
           g.fanout, ms, (unsigned long)g.m_published, (unsigned long)g.m_delivered,
           (unsigned long)g.m_acked, ms > 0 ? (double)g.m_published / ms : 0.0,
           ms > 0 ? (double)g.m_delivered / ms : 0.0);
    if (o.persistent)
        printf(", \"sessions\": {\"persistent\": %u, \"ended\": %lu, \"not_ended\": %lu}",
               o.subs, (unsigned long)g.sessions_ended, (unsigned long)g.sessions_not_ended);
    printf(", \"totals\": {\"published\": %lu, \"acked\": %lu, \"delivered\": %lu, "
           "\"expected_deliveries\": %lu, \"unique\": %lu, \"lost\": %lu, \"duplicates\": %lu, "
           "\"out_of_order\": %lu, \"stale\": %lu, \"unexpected\": %lu, \"misrouted\": %lu, "
           "\"foreign\": %lu, \"outstanding\": %lu, \"unacked\": %lu, \"window_expired\": %lu}",
           (unsigned long)g.published, (unsigned long)g.acked, (unsigned long)g.delivered,
           (unsigned long)expected, (unsigned long)unique, (unsigned long)lost,
           (unsigned long)dups, (unsigned long)ooo, (unsigned long)stale, (unsigned long)extra,
           (unsigned long)g.misrouted, (unsigned long)g.foreign, (unsigned long)outstanding,
           (unsigned long)unacked, (unsigned long)g.expired);
    printf(", \"latency_us\": {\"samples\": %lu, \"mean\": %.1f, \"p50\": %lu, \"p90\": %lu, "
           "\"p99\": %lu, \"p99_9\": %lu, \"max\": %lu}",
           (unsigned long)hist.n, hist.n ? (double)hist.sum_ns / (double)hist.n / 1000.0 : 0.0,
           (unsigned long)hist_percentile(50), (unsigned long)hist_percentile(90),
           (unsigned long)hist_percentile(99), (unsigned long)hist_percentile(99.9),
           (unsigned long)hist.max_us);
    if (o.rate > 0) {
        double achieved = ms > 0 ? (double)g.m_published / ms : 0.0;
        if (achieved < 0.99 * o.rate)
            fprintf(stderr, "loadgen: the rate of %.0f msg/s was not held: %.0f msg/s achieved, "
                    "up to %lu messages behind (window full)\n", o.rate, achieved,
                    (unsigned long)g.max_backlog);
        printf(", \"rate\": {\"target_per_s\": %.1f, \"achieved_per_s\": %.1f, \"held\": %s, "
               "\"max_backlog\": %lu}",
               o.rate, achieved, achieved >= 0.99 * o.rate ? "true" : "false",
               (unsigned long)g.max_backlog);
    }
    printf(", \"syscalls\": {\"writes\": %lu, \"reads\": %lu}", (unsigned long)g.m_writes,
           (unsigned long)g.m_reads);
    report_cpu(ms);
    int check_failed = g.misrouted > 0 || g.foreign > 0 ||
                       (o.qos >= 1 && (lost > 0 || unacked > 0)) || (o.qos == 2 && dups > 0);
    return report_errors(check_failed);
}

static int report_idle(void)
{
    u64 sent = 0, answered = 0;
    for (u32 i = 0; i < g.nconns; i++) {
        sent += g.conns[i]->pings_sent;
        answered += g.conns[i]->pings_answered;
    }
    double ms = g.meas_stop > g.meas_start ? (double)(g.meas_stop - g.meas_start) / 1e9 : 0;
    report_params();
    printf(", \"idle\": {\"requested\": %u, \"connected\": %lu, \"failed\": %lu, "
           "\"dropped\": %lu, \"connect_s\": %.3f, \"connects_per_s\": %.1f, \"held_s\": %.3f, "
           "\"pings_sent\": %lu, \"pings_answered\": %lu}",
           o.idle, (unsigned long)g.idle_connected,
           (unsigned long)(g.connect_failures + g.connack_refused),
           (unsigned long)g.idle_dropped, (double)g.idle_connect_ns / 1e9,
           g.idle_connect_ns ? (double)g.idle_connected / ((double)g.idle_connect_ns / 1e9) : 0,
           ms, (unsigned long)sent, (unsigned long)answered);
    report_cpu(ms);
    return report_errors(0);
}

static int report_retained(void)
{
    double fill = g.r_fill_end > g.r_fill_start ? (double)(g.r_fill_end - g.r_fill_start) / 1e9
                                                 : 0;
    double deliver = g.r_sub_end > g.r_sub_start ? (double)(g.r_sub_end - g.r_sub_start) / 1e9
                                                  : 0;
    double clear = g.r_clear_end > g.r_clear_start
                       ? (double)(g.r_clear_end - g.r_clear_start) / 1e9 : 0;
    double ms = g.meas_stop > g.meas_start ? (double)(g.meas_stop - g.meas_start) / 1e9 : 0;
    report_params();
    printf(", \"retained\": {\"messages\": %u, \"acked\": %lu, \"fill_s\": %.6f, "
           "\"fill_per_s\": %.1f, \"delivered\": %lu, \"delivery_s\": %.6f, "
           "\"delivered_per_s\": %.1f, \"duplicates\": %lu, \"stale\": %lu, "
           "\"not_retained\": %lu, \"cleared\": %s, \"clear_s\": %.6f}",
           o.retained, (unsigned long)g.r_fill_acked, fill,
           fill > 0 ? o.retained / fill : 0.0, (unsigned long)g.r_unique, deliver,
           deliver > 0 ? (double)g.r_unique / deliver : 0.0, (unsigned long)g.r_dups,
           (unsigned long)g.r_stale, (unsigned long)g.r_nonretained,
           g.r_clear_end ? "true" : "false", clear);
    report_cpu(ms);
    int check_failed = g.r_unique < o.retained;
    return report_errors(check_failed);
}

/* ------------------------------------------------------------------------------------------ */
/* command line */

static void usage(FILE *f)
{
    fputs(
"usage: loadgen [options]\n"
"\n"
"MQTT load generator: publishers and subscribers in one epoll loop, a closed loop per\n"
"publisher, per (publisher, subscriber) sequence checking and latency percentiles.\n"
"One JSON object on stdout at the end; progress and errors on stderr.\n"
"\n"
"connection:\n"
"  --host H               broker address (127.0.0.1)\n"
"  --port P               broker port (1883)\n"
"  --sub-port P           the subscribers connect to port P instead (publisher and\n"
"                         subscribers on two brokers of a cluster; load mode)\n"
"  --v5                   speak MQTT 5.0 (default 3.1.1); the window must not exceed the\n"
"                         CONNACK's Receive Maximum at QoS 1/2\n"
"  --keepalive K          keep alive in seconds (60); idle mode pings every K seconds\n"
"  --client-prefix S      client ids are S-p<i>, S-s<j>, ... (default lg-<pid>-<random>,\n"
"                         new for every run)\n"
"\n"
"load (default mode):\n"
"  --pubs N               publishers (1)\n"
"  --subs M               subscribers (1)\n"
"  --qos 0|1|2            QoS of the PUBLISHes and of the subscriptions (0)\n"
"  --payload BYTES        payload size, >= 16: publisher index, sequence number and a\n"
"                         CLOCK_MONOTONIC timestamp, then filler (64)\n"
"  --topics T             distinct topics bench/<t %% M>/<t>, t < T (default max(N, M));\n"
"                         publisher p cycles through the topics t with t %% G == p %% G,\n"
"                         G = min(N, T)\n"
"  --sub-mode MODE        exact: subscriber j subscribes every bench/j/<t> (t %% M == j);\n"
"                         wildcard: subscriber j subscribes bench/j/+; (each message reaches\n"
"                         one subscriber) all: every subscriber subscribes bench/#, each\n"
"                         message reaches all M (fan-out) (exact)\n"
"  --window W             closed loop: at most W messages per publisher outstanding, i.e.\n"
"                         not yet received by all their subscribers (and, at QoS 1/2, not\n"
"                         yet acknowledged by the broker) (20)\n"
"  --write batch|single   batch: one write() per connection per loop iteration with all\n"
"                         that is ready; single: one write() per MQTT packet (batch)\n"
"  --rate R               open loop: R messages/s in total, spread over the publishers and\n"
"                         sent at every tick (the window still bounds them) (0: closed loop)\n"
"  --tick-us U            pacing tick of --rate in microseconds (1000)\n"
"  --duration S           measured seconds (5); in idle mode: seconds to hold\n"
"  --warmup S             seconds before measuring (1)\n"
"  --drain S              after the run, seconds to wait for outstanding messages (5)\n"
"  --stall-timeout S      a message (QoS 0, or acknowledged) whose deliveries have not all\n"
"                         arrived after S seconds leaves the window, counted as expired (2)\n"
"  --timeout S            limit for connecting / each retained phase (30)\n"
"  --session-expiry N     subscribers get persistent sessions, so the broker must keep their\n"
"                         messages: 5.0 Clean Start 0 with Session Expiry Interval N seconds\n"
"                         (>= 1), 3.1.1 clean session 0 (N is not sent). A session the broker\n"
"                         already had (Session Present) is an error: the client ids must be\n"
"                         new. After the run the sessions are ended: 5.0 DISCONNECT with\n"
"                         Session Expiry Interval 0, 3.1.1 a new clean-session connection.\n"
"                         Publishers stay clean (off: every session is clean)\n"
"  --keep-sessions        with --session-expiry: leave the sessions on the broker after the\n"
"                         run (plain DISCONNECT)\n"
"\n"
"idle mode:\n"
"  --idle N               open N connections, hold them for --duration seconds with a\n"
"                         PINGREQ every --keepalive seconds\n"
"  --connect-parallel K   connections being set up at once (100; also in the other modes)\n"
"\n"
"retained mode:\n"
"  --retained N           publish N retained messages (QoS 1, --window) to retained/<i/1000>/<i>,\n"
"                         then subscribe retained/# (--qos) and time their delivery\n"
"  --retained-clear       afterwards clear them (empty retained payloads)\n"
"\n"
"  --help                 this text\n"
"\n"
"exit status: 0 ok; 1 connection failure or protocol error; 2 usage; 3 checks failed\n"
"(QoS 1/2 messages lost or unacknowledged, QoS 2 duplicates, misrouted messages)\n",
        f);
}

static double parse_double(const char *name, const char *v, double min)
{
    char *end;
    double d = strtod(v, &end);
    if (*v == '\0' || *end || d < min)
        die("--%s: expected a number >= %g, got '%s'", name, min, v);
    return d;
}

static u32 parse_u32(const char *name, const char *v, u32 min, u32 max)
{
    char *end;
    unsigned long n = strtoul(v, &end, 10);
    if (*v == '\0' || *end || n < min || n > max)
        die("--%s: expected an integer in %u..%u, got '%s'", name, min, max, v);
    return (u32)n;
}

static void parse_args(int argc, char **argv)
{
    enum {
        O_HOST = 1, O_PORT, O_PUBS, O_SUBS, O_QOS, O_PAYLOAD, O_TOPICS, O_SUB_MODE, O_WINDOW,
        O_WRITE, O_RATE, O_TICK, O_DURATION, O_WARMUP, O_DRAIN, O_STALL, O_TIMEOUT, O_IDLE,
        O_KEEPALIVE, O_PARALLEL, O_RETAINED, O_RCLEAR, O_PREFIX, O_V5, O_EXPIRY, O_KEEP,
        O_SUB_PORT, O_HELP,
    };
    static const struct option longopts[] = {
        {"host", required_argument, 0, O_HOST},
        {"port", required_argument, 0, O_PORT},
        {"sub-port", required_argument, 0, O_SUB_PORT},
        {"pubs", required_argument, 0, O_PUBS},
        {"subs", required_argument, 0, O_SUBS},
        {"qos", required_argument, 0, O_QOS},
        {"payload", required_argument, 0, O_PAYLOAD},
        {"topics", required_argument, 0, O_TOPICS},
        {"sub-mode", required_argument, 0, O_SUB_MODE},
        {"window", required_argument, 0, O_WINDOW},
        {"write", required_argument, 0, O_WRITE},
        {"rate", required_argument, 0, O_RATE},
        {"tick-us", required_argument, 0, O_TICK},
        {"duration", required_argument, 0, O_DURATION},
        {"warmup", required_argument, 0, O_WARMUP},
        {"drain", required_argument, 0, O_DRAIN},
        {"stall-timeout", required_argument, 0, O_STALL},
        {"timeout", required_argument, 0, O_TIMEOUT},
        {"idle", required_argument, 0, O_IDLE},
        {"keepalive", required_argument, 0, O_KEEPALIVE},
        {"connect-parallel", required_argument, 0, O_PARALLEL},
        {"retained", required_argument, 0, O_RETAINED},
        {"retained-clear", no_argument, 0, O_RCLEAR},
        {"client-prefix", required_argument, 0, O_PREFIX},
        {"v5", no_argument, 0, O_V5},
        {"session-expiry", required_argument, 0, O_EXPIRY},
        {"keep-sessions", no_argument, 0, O_KEEP},
        {"help", no_argument, 0, O_HELP},
        {0, 0, 0, 0},
    };
    int opt;
    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (opt) {
        case O_HOST: o.host = optarg; break;
        case O_PORT: parse_u32("port", optarg, 1, 65535); o.port = optarg; break;
        case O_SUB_PORT: parse_u32("sub-port", optarg, 1, 65535); o.sub_port = optarg; break;
        case O_PUBS: o.pubs = parse_u32("pubs", optarg, 0, 100000); break;
        case O_SUBS: o.subs = parse_u32("subs", optarg, 0, 100000); break;
        case O_QOS: o.qos = parse_u32("qos", optarg, 0, 2); break;
        case O_PAYLOAD: o.payload = parse_u32("payload", optarg, HEADER_BYTES, 256u << 20);
            break;
        case O_TOPICS: o.topics = parse_u32("topics", optarg, 1, 10000000); o.topics_given = 1;
            break;
        case O_SUB_MODE:
            if (!strcmp(optarg, "exact")) o.sub_mode = SUB_EXACT;
            else if (!strcmp(optarg, "wildcard")) o.sub_mode = SUB_WILDCARD;
            else if (!strcmp(optarg, "all")) o.sub_mode = SUB_ALL;
            else die("--sub-mode: expected exact, wildcard or all, got '%s'", optarg);
            break;
        case O_WINDOW: o.window = parse_u32("window", optarg, 1, 65535); break;
        case O_WRITE:
            if (!strcmp(optarg, "batch")) o.write_single = 0;
            else if (!strcmp(optarg, "single")) o.write_single = 1;
            else die("--write: expected batch or single, got '%s'", optarg);
            break;
        case O_RATE: o.rate = parse_double("rate", optarg, 0); break;
        case O_TICK: o.tick_us = parse_u32("tick-us", optarg, 10, 1000000); break;
        case O_DURATION: o.duration = parse_double("duration", optarg, 0); break;
        case O_WARMUP: o.warmup = parse_double("warmup", optarg, 0); break;
        case O_DRAIN: o.drain = parse_double("drain", optarg, 0); break;
        case O_STALL: o.stall_timeout = parse_double("stall-timeout", optarg, 0.001); break;
        case O_TIMEOUT: o.timeout = parse_double("timeout", optarg, 0.1); break;
        case O_IDLE: o.idle = parse_u32("idle", optarg, 1, 10000000); o.mode = MODE_IDLE; break;
        case O_KEEPALIVE: o.keepalive = parse_u32("keepalive", optarg, 0, 65535); break;
        case O_PARALLEL: o.connect_parallel = parse_u32("connect-parallel", optarg, 1, 100000);
            break;
        case O_RETAINED: o.retained = parse_u32("retained", optarg, 1, 100000000);
            o.mode = MODE_RETAINED; break;
        case O_RCLEAR: o.retained_clear = 1; break;
        case O_PREFIX:
            if (strlen(optarg) >= sizeof o.client_prefix)
                die("--client-prefix: at most %zu characters", sizeof o.client_prefix - 1);
            strcpy(o.client_prefix, optarg);
            break;
        case O_V5: o.v5 = 1; break;
        case O_EXPIRY:
            o.session_expiry = parse_u32("session-expiry", optarg, 1, 4294967295u);
            o.persistent = 1;
            break;
        case O_KEEP: o.keep_sessions = 1; break;
        case O_HELP: usage(stdout); exit(0);
        default: usage(stderr); exit(2);
        }
    }
    if (optind < argc)
        die("unexpected argument '%s' (see --help)", argv[optind]);
    if (o.idle && o.retained)
        die("--idle and --retained are separate modes");
    if (o.mode == MODE_LOAD && o.pubs == 0)
        die("--pubs must be at least 1");
    if (!o.topics_given)
        o.topics = o.pubs > o.subs ? o.pubs : o.subs;
    if (!o.topics)
        o.topics = 1;
    if (o.retained_clear && o.mode != MODE_RETAINED)
        die("--retained-clear goes with --retained N");
    if (o.persistent && o.mode != MODE_LOAD)
        die("--session-expiry is for the subscribers of the load mode");
    if (o.keep_sessions && !o.persistent)
        die("--keep-sessions goes with --session-expiry N");
    if (!o.client_prefix[0])
        snprintf(o.client_prefix, sizeof o.client_prefix, "lg-%d-%04x", (int)getpid(),
                 (unsigned)(now_ns() / 1000 & 0xffff));
}

static void raise_nofile(u32 need)
{
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur >= need)
        return;
    if (rl.rlim_max < need) {
        struct rlimit want = {need, need};
        if (setrlimit(RLIMIT_NOFILE, &want) == 0)
            return;
        die("%u connections need %u file descriptors; RLIMIT_NOFILE hard limit is %lu "
            "(raise it, e.g. ulimit -Hn, or run as root)", need - 64, need,
            (unsigned long)rl.rlim_max);
    }
    rl.rlim_cur = need;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
        die("setrlimit(RLIMIT_NOFILE, %u): %s", need, strerror(errno));
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    int rc = getaddrinfo(o.host, o.port, &hints, &g.addr);
    if (rc)
        die("cannot resolve %s:%s: %s", o.host, o.port, gai_strerror(rc));
    g.sub_addr = g.addr;
    if (o.sub_port) {
        rc = getaddrinfo(o.host, o.sub_port, &hints, &g.sub_addr);
        if (rc)
            die("cannot resolve %s:%s: %s", o.host, o.sub_port, gai_strerror(rc));
    }

    g.nonce = (u32)(now_ns() ^ ((u64)getpid() << 16));
    g.filler = xmalloc(o.payload);
    memset(g.filler, 'x', o.payload);
    g.ep = epoll_create1(EPOLL_CLOEXEC);
    if (g.ep < 0)
        die("epoll_create1: %s", strerror(errno));
    g.tfd = -1;
    if (o.mode == MODE_LOAD && o.rate > 0) {
        g.tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
        if (g.tfd < 0 || epoll_ctl(g.ep, EPOLL_CTL_ADD, g.tfd, &ev) < 0)
            die("timerfd: %s", strerror(errno));
    }

    if (o.mode == MODE_LOAD)
        setup_load();
    else if (o.mode == MODE_IDLE)
        setup_idle();
    else
        setup_retained();
    raise_nofile(g.nconns + 64);

    take_rusage(&g.ru_begin);
    g.now = g.t_begin = now_ns();
    g.setup_deadline = g.now + (u64)(o.timeout * 1e9);
    start_connects();
    loop();
    if (g.phase != PH_DONE && g.measuring)
        stop_measuring();
    if (!g.meas_stop) {
        g.meas_stop = g.meas_start = now_ns();
        take_rusage(&g.ru_meas_start);
        g.ru_meas_stop = g.ru_meas_start;
    }
    finish_connections();
    int status;
    if (o.mode == MODE_LOAD)
        status = report_load();
    else if (o.mode == MODE_IDLE)
        status = report_idle();
    else
        status = report_retained();
    fflush(stdout);
    return status;
}
