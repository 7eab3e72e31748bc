/* har_socket_posix.c - the har_socket interface over POSIX TCP sockets, and POSIX clocks. */
#define _POSIX_C_SOURCE 200809L
#include "har_transport.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0
#endif

static int connect_one(const struct addrinfo *ai, uint32_t timeout_ms)
{
    int fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
    int flags, one = 1, err = 0;
    socklen_t elen = sizeof err;
    struct pollfd p;
    if (fd < 0)
        return -1;
    flags = fcntl(fd, F_GETFL, 0);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
        goto fail;
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
        if (errno != EINPROGRESS)
            goto fail;
        p.fd = fd;
        p.events = POLLOUT;
        p.revents = 0;
        if (poll(&p, 1, (int)timeout_ms) != 1)
            goto fail;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0 || err)
            goto fail;
    }
    if (fcntl(fd, F_SETFL, flags) < 0) /* blocking again: recv waits in poll */
        goto fail;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
fail:
    close(fd);
    return -1;
}

static int p_connect(void *ctx, const char *host, uint16_t port, uint32_t timeout_ms)
{
    har_posix_socket *s = ctx;
    struct addrinfo hints, *res = NULL, *ai;
    char service[8];
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    snprintf(service, sizeof service, "%u", (unsigned)port);
    if (s->fd >= 0) {
        close(s->fd);
        s->fd = -1;
    }
    if (getaddrinfo(host, service, &hints, &res) != 0)
        return -1;
    for (ai = res; ai && s->fd < 0; ai = ai->ai_next)
        s->fd = connect_one(ai, timeout_ms);
    freeaddrinfo(res);
    return s->fd >= 0 ? 0 : -1;
}

static int p_send(void *ctx, const uint8_t *buf, size_t len)
{
    har_posix_socket *s = ctx;
    while (len) {
        ssize_t n;
        if (s->fd < 0)
            return -1;
        n = send(s->fd, buf, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

static long p_recv(void *ctx, uint8_t *buf, size_t cap, uint32_t timeout_ms)
{
    har_posix_socket *s = ctx;
    struct pollfd p;
    ssize_t n;
    int rc;
    if (s->fd < 0)
        return -1;
    if (cap == 0)
        return -1; /* the caller's buffer is full: a protocol error */
    p.fd = s->fd;
    p.events = POLLIN;
    p.revents = 0;
    rc = poll(&p, 1, (int)timeout_ms);
    if (rc < 0)
        return errno == EINTR ? 0 : -1;
    if (rc == 0)
        return 0;
    n = recv(s->fd, buf, cap, 0);
    if (n < 0)
        return (errno == EINTR || errno == EAGAIN) ? 0 : -1;
    if (n == 0)
        return -1; /* closed by the peer */
    return (long)n;
}

static void p_close(void *ctx)
{
    har_posix_socket *s = ctx;
    if (s->fd >= 0) {
        close(s->fd);
        s->fd = -1;
    }
}

static void p_sleep(void *ctx, uint32_t ms)
{
    struct timespec ts;
    (void)ctx;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

void har_socket_posix_init(har_socket *sock, har_posix_socket *ctx)
{
    ctx->fd = -1;
    sock->ctx = ctx;
    sock->connect = p_connect;
    sock->send = p_send;
    sock->recv = p_recv;
    sock->close = p_close;
    sock->sleep_ms = p_sleep;
}

static uint64_t clock_ms(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t har_posix_monotonic_ms(void)
{
    return clock_ms(CLOCK_MONOTONIC);
}

uint64_t har_posix_realtime_ms(void)
{
    return clock_ms(CLOCK_REALTIME);
}
