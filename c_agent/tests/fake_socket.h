/* fake_socket.h - an in-memory har_socket and clock for the transport and agent tests: what
 * the client sends accumulates in `out`, what it receives is queued in `in`; time advances
 * only when the client waits (recv on an empty queue, sleep). */
#ifndef HAR_TEST_FAKE_SOCKET_H
#define HAR_TEST_FAKE_SOCKET_H

#include <stdint.h>
#include <string.h>

#include "har_transport.h"

typedef struct {
    int open;
    int refuse_connect;  /* connect fails while set */
    int connects;        /* connect attempts */
    size_t chunk;        /* if set, recv returns at most this many bytes */
    uint8_t out[16384];
    size_t out_len;
    uint8_t in[16384];
    size_t in_len, in_pos;
    int fail_send;
} fake_socket;

static fake_socket fake;
static uint64_t fake_now = 1000;

static uint64_t fake_clock(void)
{
    return fake_now;
}

static int f_connect(void *ctx, const char *host, uint16_t port, uint32_t timeout_ms)
{
    fake_socket *s = ctx;
    (void)host;
    (void)port;
    (void)timeout_ms;
    s->connects++;
    if (s->refuse_connect)
        return -1;
    s->open = 1;
    return 0;
}

static int f_send(void *ctx, const uint8_t *buf, size_t len)
{
    fake_socket *s = ctx;
    if (!s->open || s->fail_send || s->out_len + len > sizeof s->out)
        return -1;
    memcpy(s->out + s->out_len, buf, len);
    s->out_len += len;
    return 0;
}

static long f_recv(void *ctx, uint8_t *buf, size_t cap, uint32_t timeout_ms)
{
    fake_socket *s = ctx;
    size_t n;
    if (!s->open)
        return -1;
    if (s->in_pos == s->in_len) {
        fake_now += timeout_ms ? timeout_ms : 1;
        return 0;
    }
    n = s->in_len - s->in_pos;
    if (n > cap)
        n = cap;
    if (s->chunk && n > s->chunk)
        n = s->chunk;
    memcpy(buf, s->in + s->in_pos, n);
    s->in_pos += n;
    return (long)n;
}

static void f_close(void *ctx)
{
    fake_socket *s = ctx;
    s->open = 0;
    s->in_len = s->in_pos = 0;
}

static void f_sleep(void *ctx, uint32_t ms)
{
    (void)ctx;
    fake_now += ms;
}

static void fake_init(har_socket *sock)
{
    memset(&fake, 0, sizeof fake);
    sock->ctx = &fake;
    sock->connect = f_connect;
    sock->send = f_send;
    sock->recv = f_recv;
    sock->close = f_close;
    sock->sleep_ms = f_sleep;
}

/* Queues bytes for the client to receive. */
static void fake_feed(const uint8_t *b, size_t n)
{
    if (fake.in_pos == fake.in_len)
        fake.in_pos = fake.in_len = 0;
    memcpy(fake.in + fake.in_len, b, n);
    fake.in_len += n;
}

static void fake_feed_connack(void)
{
    static const uint8_t connack[] = {0x20, 0x02, 0x00, 0x00};
    fake_feed(connack, sizeof connack);
}

static void fake_feed_suback(uint16_t id)
{
    uint8_t suback[] = {0x90, 0x03, (uint8_t)(id >> 8), (uint8_t)id, 0x01};
    fake_feed(suback, sizeof suback);
}

/* Iterates over the MQTT packets the client sent: returns 1 and the packet at *pos. */
static int fake_next_packet(size_t *pos, uint8_t *type_flags, const uint8_t **body,
                            uint32_t *rem)
{
    size_t hl;
    if (*pos >= fake.out_len)
        return 0;
    if (har_mqtt_parse_header(fake.out + *pos, fake.out_len - *pos, type_flags, rem, &hl) != 1)
        return 0;
    *body = fake.out + *pos + hl;
    *pos += hl + *rem;
    return 1;
}

#endif
