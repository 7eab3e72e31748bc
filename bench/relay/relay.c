/*
 * relay: a minimal MQTT relay, the machine's ceiling for bench/loadgen.
 *
 *     relay [--host 127.0.0.1] [--port 1883]
 *
 * One thread, one epoll loop, non-blocking sockets. It reads the fixed header of each packet
 * and only what it must beyond that:
 *
 *   CONNECT     -> CONNACK (3.1.1 form, or 5.0 form without properties if the CONNECT said
 *                  protocol level 5)
 *   SUBSCRIBE   -> SUBACK granting the requested QoS of every filter; the connection becomes
 *                  a subscriber (of everything)
 *   UNSUBSCRIBE -> UNSUBACK; the connection stops being a subscriber
 *   PUBLISH     -> its bytes, unchanged, appended to the output of every subscriber except the
 *                  sender; QoS 1: PUBACK to the sender, QoS 2: PUBREC to the sender
 *   PUBREL      -> PUBCOMP (the publisher's QoS 2 flow)
 *   PUBREC      -> PUBREL (a subscriber's QoS 2 flow); PUBACK and PUBCOMP are consumed
 *   PINGREQ     -> PINGRESP;  DISCONNECT -> close
 *
 * Output is buffered per connection and written once per loop iteration (EPOLLOUT when the
 * socket is full).
 *
 * It is a ceiling, not a broker. It does not: match topics (every PUBLISH goes to every
 * subscriber), downgrade QoS to the granted one, assign or track packet ids (the publisher's
 * packet id goes out unchanged, so two publishers can use the same id towards one subscriber),
 * retransmit, keep sessions, store retained messages or wills, check client ids, credentials,
 * keep alive, UTF-8, packet sizes or flow-control windows (Receive Maximum), convert between
 * protocol versions (publishers and subscribers must speak the same one), or bound memory for
 * a slow subscriber beyond dropping it at 64 MB of pending output.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

typedef uint8_t u8;
typedef uint32_t u32;

#define READ_CHUNK 65536
#define MAX_PENDING_OUTPUT (64u << 20)

typedef struct {
    u8 *data;
    size_t start, end, cap;
} buf_t;

typedef struct conn {
    int fd;
    u8 v5, epout, pending, closed;
    int sub_index; /* position in subs[], -1 if not a subscriber */
    buf_t in, out;
    struct conn *next_closed;
} conn_t;

static int ep;
static conn_t **subs;
static size_t nsubs, cap_subs;
static conn_t **pending;
static size_t npending, cap_pending;
static conn_t *closed_list;
static volatile sig_atomic_t stopping;

static void die(const char *what)
{
    fprintf(stderr, "relay: %s: %s\n", what, strerror(errno));
    exit(1);
}

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
    size_t cap = b->cap ? b->cap : 4096;
    while (cap - b->end < n)
        cap *= 2;
    u8 *d = realloc(b->data, cap);
    if (!d) {
        errno = ENOMEM;
        die("realloc");
    }
    b->data = d;
    b->cap = cap;
    return b->data + b->end;
}

static void append(conn_t *c, const u8 *p, size_t n)
{
    memcpy(buf_reserve(&c->out, n), p, n);
    c->out.end += n;
}

static void mark_pending(conn_t *c)
{
    if (c->pending || c->closed)
        return;
    if (npending == cap_pending) {
        cap_pending = cap_pending ? cap_pending * 2 : 64;
        pending = realloc(pending, cap_pending * sizeof *pending);
        if (!pending)
            die("realloc");
    }
    c->pending = 1;
    pending[npending++] = c;
}

static void unsubscribe(conn_t *c)
{
    if (c->sub_index < 0)
        return;
    conn_t *last = subs[--nsubs];
    subs[c->sub_index] = last;
    last->sub_index = c->sub_index;
    c->sub_index = -1;
}

static void conn_close(conn_t *c)
{
    if (c->closed)
        return;
    unsubscribe(c);
    close(c->fd);
    c->closed = 1;
    c->next_closed = closed_list; /* freed at the end of the loop iteration */
    closed_list = c;
}

static void want_out(conn_t *c, int on)
{
    if (c->epout == on)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->epout = (u8)on;
}

static void flush(conn_t *c)
{
    buf_t *b = &c->out;
    while (b->start < b->end) {
        ssize_t n = write(c->fd, b->data + b->start, b->end - b->start);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                want_out(c, 1);
                return;
            }
            conn_close(c);
            return;
        }
        b->start += (size_t)n;
    }
    b->start = b->end = 0;
    want_out(c, 0);
}

static void send_short(conn_t *c, u8 type, const u8 *pid) /* PUBACK PUBREC PUBREL PUBCOMP */
{
    u8 p[4] = {type, 2, pid[0], pid[1]};
    append(c, p, 4);
    mark_pending(c);
}

/* returns bytes of the Variable Byte Integer, 0 if incomplete, -1 if malformed */
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

static void on_publish(conn_t *c, const u8 *pkt, size_t len, const u8 *body, u32 rl)
{
    u32 qos = (pkt[0] >> 1) & 3;
    if (qos == 3 || rl < 2 || (qos && (u32)(2 + (body[0] << 8 | body[1]) + 2) > rl)) {
        conn_close(c);
        return;
    }
    for (size_t i = 0; i < nsubs; i++) {
        conn_t *s = subs[i];
        if (s == c)
            continue;
        if (s->out.end - s->out.start > MAX_PENDING_OUTPUT) {
            fprintf(stderr, "relay: dropping a subscriber with %u MB of pending output\n",
                    MAX_PENDING_OUTPUT >> 20);
            conn_close(s);
            i--; /* conn_close moved the last subscriber here */
            continue;
        }
        append(s, pkt, len);
        mark_pending(s);
    }
    if (qos) {
        const u8 *pid = body + 2 + (body[0] << 8 | body[1]);
        send_short(c, qos == 1 ? 0x40 : 0x50, pid);
    }
}

static void on_subscribe(conn_t *c, const u8 *body, u32 rl, int unsubscribe_)
{
    u32 pos = 2;
    if (rl < 2) {
        conn_close(c);
        return;
    }
    if (c->v5) {
        u32 plen;
        int n = get_varint(body + 2, rl - 2, &plen);
        if (n <= 0) {
            conn_close(c);
            return;
        }
        pos += (u32)n + plen;
    }
    u8 codes[1024];
    u32 ncodes = 0;
    while (pos + 2 <= rl && ncodes < sizeof codes) {
        pos += 2u + (u32)(body[pos] << 8 | body[pos + 1]);
        if (!unsubscribe_) {
            if (pos >= rl)
                break;
            codes[ncodes++] = body[pos++] & 3; /* grant what was asked */
        } else {
            codes[ncodes++] = 0;
        }
    }
    u8 hdr[6];
    u32 n = 0, body_len = 2 + (c->v5 ? 1 : 0) + (unsubscribe_ && !c->v5 ? 0 : ncodes);
    hdr[n++] = unsubscribe_ ? 0xB0 : 0x90;
    do {
        u8 b = body_len & 0x7f;
        body_len >>= 7;
        hdr[n++] = body_len ? (u8)(b | 0x80) : b;
    } while (body_len);
    hdr[n++] = body[0];
    hdr[n++] = body[1];
    if (c->v5)
        hdr[n++] = 0; /* no properties */
    append(c, hdr, n);
    if (!unsubscribe_ || c->v5)
        append(c, codes, ncodes);
    mark_pending(c);
    if (unsubscribe_) {
        unsubscribe(c);
    } else if (c->sub_index < 0) {
        if (nsubs == cap_subs) {
            cap_subs = cap_subs ? cap_subs * 2 : 16;
            subs = realloc(subs, cap_subs * sizeof *subs);
            if (!subs)
                die("realloc");
        }
        c->sub_index = (int)nsubs;
        subs[nsubs++] = c;
    }
}

static void on_packet(conn_t *c, const u8 *pkt, size_t len, const u8 *body, u32 rl)
{
    static const u8 connack3[] = {0x20, 2, 0, 0}, connack5[] = {0x20, 3, 0, 0, 0};
    static const u8 pingresp[] = {0xD0, 0};
    switch (pkt[0] & 0xf0) {
    case 0x30:
        on_publish(c, pkt, len, body, rl);
        break;
    case 0x10: /* CONNECT: protocol name (2 + 4 bytes "MQTT"), then the level */
        if (rl < 7) {
            conn_close(c);
            return;
        }
        c->v5 = body[2 + (body[0] << 8 | body[1])] == 5;
        if (c->v5)
            append(c, connack5, sizeof connack5);
        else
            append(c, connack3, sizeof connack3);
        mark_pending(c);
        break;
    case 0x80:
        on_subscribe(c, body, rl, 0);
        break;
    case 0xA0:
        on_subscribe(c, body, rl, 1);
        break;
    case 0x60: /* PUBREL from a publisher */
        if (rl >= 2)
            send_short(c, 0x70, body);
        break;
    case 0x50: /* PUBREC from a subscriber */
        if (rl >= 2)
            send_short(c, 0x62, body);
        break;
    case 0x40: /* PUBACK, PUBCOMP from subscribers: consumed */
    case 0x70:
        break;
    case 0xC0:
        append(c, pingresp, sizeof pingresp);
        mark_pending(c);
        break;
    default: /* DISCONNECT, or anything a relay does not know */
        conn_close(c);
    }
}

static void on_readable(conn_t *c)
{
    buf_t *b = &c->in;
    buf_reserve(b, READ_CHUNK);
    ssize_t n = read(c->fd, b->data + b->end, b->cap - b->end);
    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        conn_close(c);
        return;
    }
    b->end += (size_t)n;
    while (!c->closed) {
        size_t avail = b->end - b->start;
        if (avail < 2)
            break;
        const u8 *p = b->data + b->start;
        u32 rl;
        int vl = get_varint(p + 1, avail - 1, &rl);
        if (vl < 0) {
            conn_close(c);
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
        on_packet(c, p, total, p + 1 + vl, rl);
    }
    if (b->start == b->end)
        b->start = b->end = 0;
}

static void on_accept(int lfd)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                fprintf(stderr, "relay: accept: %s\n", strerror(errno));
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        conn_t *c = calloc(1, sizeof *c);
        if (!c)
            die("calloc");
        c->fd = fd;
        c->sub_index = -1;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
            die("epoll_ctl");
    }
}

static void on_signal(int sig)
{
    (void)sig;
    stopping = 1;
}

static void usage(FILE *f)
{
    fputs("usage: relay [--host H] [--port P]\n"
          "A minimal MQTT relay (no topic matching: every PUBLISH goes to every subscriber),\n"
          "the ceiling for bench/loadgen. Defaults: --host 127.0.0.1 --port 1883.\n", f);
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1", *port = "1883";
    static const struct option longopts[] = {
        {"host", required_argument, 0, 'h'},
        {"port", required_argument, 0, 'p'},
        {"help", no_argument, 0, 'H'},
        {0, 0, 0, 0},
    };
    int opt;
    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (opt) {
        case 'h': host = optarg; break;
        case 'p': port = optarg; break;
        case 'H': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE}, *ai;
    int rc = getaddrinfo(host, port, &hints, &ai);
    if (rc) {
        fprintf(stderr, "relay: %s:%s: %s\n", host, port, gai_strerror(rc));
        return 2;
    }
    int lfd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (lfd < 0 || bind(lfd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(lfd, 4096) < 0)
        die("listen");
    freeaddrinfo(ai);
    ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev) < 0)
        die("epoll");
    fprintf(stderr, "relay: listening on %s:%s\n", host, port);

    struct epoll_event evs[1024];
    while (!stopping) {
        int n = epoll_wait(ep, evs, 1024, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            if (!c) {
                on_accept(lfd);
                continue;
            }
            if (c->closed)
                continue;
            if (evs[i].events & EPOLLOUT)
                mark_pending(c);
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
                on_readable(c);
        }
        for (size_t i = 0; i < npending; i++) { /* one write per connection per wakeup */
            conn_t *c = pending[i];
            c->pending = 0;
            if (!c->closed)
                flush(c);
        }
        npending = 0;
        while (closed_list) {
            conn_t *c = closed_list;
            closed_list = c->next_closed;
            free(c->in.data);
            free(c->out.data);
            free(c);
        }
    }
    return 0;
}
