/* har_mqtt.c - minimal MQTT 3.1.1 client (see har_transport.h). */
#include "har_transport.h"

#include <string.h>

/* ---- packet encoding ---- */

static size_t put_str(uint8_t *p, const char *s, size_t len)
{
    p[0] = (uint8_t)(len >> 8);
    p[1] = (uint8_t)len;
    memcpy(p + 2, s, len);
    return 2 + len;
}

/* Writes the fixed header for `remaining` bytes; returns its length, 0 if it cannot fit. */
static size_t fixed_header(uint8_t *buf, size_t cap, uint8_t first, size_t remaining)
{
    uint8_t v[4];
    size_t n;
    if (remaining >= (1u << 28))
        return 0;
    n = har_varint_encode((uint32_t)remaining, v);
    if (cap < 1 + n || cap - 1 - n < remaining)
        return 0;
    buf[0] = first;
    memcpy(buf + 1, v, n);
    return 1 + n;
}

size_t har_mqtt_encode_connect(uint8_t *buf, size_t cap, const char *client_id,
                               uint16_t keepalive_s, int clean_session, const char *username,
                               const char *password)
{
    size_t cid = strlen(client_id), ul = username ? strlen(username) : 0,
           pl = password ? strlen(password) : 0;
    size_t rem = 10 + 2 + cid + (username ? 2 + ul : 0) + (password ? 2 + pl : 0);
    size_t h, p;
    uint8_t flags = clean_session ? 0x02 : 0;
    if (cid > 0xffff || ul > 0xffff || pl > 0xffff || (password && !username))
        return 0;
    h = fixed_header(buf, cap, HAR_MQTT_CONNECT << 4, rem);
    if (!h)
        return 0;
    if (username)
        flags |= 0x80;
    if (password)
        flags |= 0x40;
    p = h + put_str(buf + h, "MQTT", 4);
    buf[p++] = 4; /* protocol level 3.1.1 */
    buf[p++] = flags;
    buf[p++] = (uint8_t)(keepalive_s >> 8);
    buf[p++] = (uint8_t)keepalive_s;
    p += put_str(buf + p, client_id, cid);
    if (username)
        p += put_str(buf + p, username, ul);
    if (password)
        p += put_str(buf + p, password, pl);
    return p;
}

size_t har_mqtt_encode_subscribe(uint8_t *buf, size_t cap, uint16_t packet_id,
                                 const char *topic, uint8_t qos)
{
    size_t tl = strlen(topic), h, p;
    if (tl > 0xffff || qos > 2)
        return 0;
    h = fixed_header(buf, cap, (HAR_MQTT_SUBSCRIBE << 4) | 0x02, 2 + 2 + tl + 1);
    if (!h)
        return 0;
    p = h;
    buf[p++] = (uint8_t)(packet_id >> 8);
    buf[p++] = (uint8_t)packet_id;
    p += put_str(buf + p, topic, tl);
    buf[p++] = qos;
    return p;
}

size_t har_mqtt_encode_publish(uint8_t *buf, size_t cap, const char *topic,
                               const uint8_t *payload, size_t len, uint8_t qos,
                               uint16_t packet_id, int dup)
{
    size_t tl = strlen(topic), h, p;
    uint8_t first = (uint8_t)((HAR_MQTT_PUBLISH << 4) | (qos << 1) | (dup ? 0x08 : 0));
    if (tl > 0xffff || qos > 1)
        return 0;
    h = fixed_header(buf, cap, first, 2 + tl + (qos ? 2 : 0) + len);
    if (!h)
        return 0;
    p = h + put_str(buf + h, topic, tl);
    if (qos) {
        buf[p++] = (uint8_t)(packet_id >> 8);
        buf[p++] = (uint8_t)packet_id;
    }
    if (len)
        memcpy(buf + p, payload, len);
    return p + len;
}

size_t har_mqtt_encode_simple(uint8_t *buf, size_t cap, uint8_t type, uint8_t flags,
                              const uint16_t *packet_id)
{
    size_t h = fixed_header(buf, cap, (uint8_t)((type << 4) | flags), packet_id ? 2 : 0);
    if (!h)
        return 0;
    if (packet_id) {
        buf[h] = (uint8_t)(*packet_id >> 8);
        buf[h + 1] = (uint8_t)*packet_id;
        return h + 2;
    }
    return h;
}

int har_mqtt_parse_header(const uint8_t *buf, size_t len, uint8_t *type_flags,
                          uint32_t *remaining, size_t *header_len)
{
    uint32_t v = 0;
    size_t i;
    if (len < 2)
        return 0;
    for (i = 0; i < 4; i++) {
        uint8_t b;
        if (1 + i >= len)
            return 0;
        b = buf[1 + i];
        v |= (uint32_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *type_flags = buf[0];
            *remaining = v;
            *header_len = 2 + i;
            return 1;
        }
    }
    return -1;
}

/* ---- client ---- */

void har_mqtt_init(har_mqtt *m, const har_socket *sock, har_clock_fn clock_ms, const char *host,
                   uint16_t port, const char *client_id, har_mqtt_message_fn on_message,
                   void *ctx)
{
    memset(m, 0, sizeof *m);
    m->sock = *sock;
    m->clock_ms = clock_ms;
    m->host = host;
    m->port = port;
    m->client_id = client_id;
    m->on_message = on_message;
    m->on_message_ctx = ctx;
    m->keepalive_s = 30;
    m->connect_timeout_ms = 5000;
    m->backoff_min_ms = 500;
    m->backoff_max_ms = 30000;
    m->backoff_ms = m->backoff_min_ms;
    m->next_packet_id = 1;
}

int har_mqtt_subscribe(har_mqtt *m, const char *topic)
{
    if (m->n_subs >= HAR_MQTT_MAX_SUBS)
        return -1;
    m->subs[m->n_subs++] = topic;
    return 0;
}

size_t har_mqtt_inflight_count(const har_mqtt *m)
{
    size_t i, n = 0;
    for (i = 0; i < HAR_MQTT_INFLIGHT; i++)
        n += m->inflight[i].used;
    return n;
}

/* Closes the socket and schedules the next attempt after the current backoff. */
static void drop(har_mqtt *m)
{
    uint64_t now = m->clock_ms();
    if (m->connected || m->rx_len || m->discard)
        m->sock.close(m->sock.ctx);
    m->connected = 0;
    m->rx_len = 0;
    m->discard = 0;
    m->ping_sent = 0;
    m->next_attempt = now + m->backoff_ms;
    m->backoff_ms = m->backoff_ms * 2 > m->backoff_max_ms ? m->backoff_max_ms : m->backoff_ms * 2;
}

static int send_bytes(har_mqtt *m, const uint8_t *buf, size_t len)
{
    if (m->sock.send(m->sock.ctx, buf, len))
        return -1;
    m->last_tx = m->clock_ms();
    return 0;
}

static uint16_t new_packet_id(har_mqtt *m)
{
    for (;;) {
        uint16_t id = m->next_packet_id++;
        size_t i;
        int busy = 0;
        if (m->next_packet_id == 0)
            m->next_packet_id = 1;
        for (i = 0; i < HAR_MQTT_INFLIGHT; i++)
            if (m->inflight[i].used && m->inflight[i].packet_id == id)
                busy = 1;
        if (!busy)
            return id;
    }
}

/* What the handshake waits for: a packet type (and packet id for SUBACK). */
typedef struct {
    uint8_t type;
    uint16_t packet_id;
    int found;
    uint8_t code;
} awaited;

/* Handles one complete packet of `rem` bytes at body. */
static void handle_packet(har_mqtt *m, uint8_t tf, const uint8_t *body, uint32_t rem,
                          awaited *aw)
{
    uint8_t type = tf >> 4;
    uint16_t pid = rem >= 2 ? (uint16_t)((body[0] << 8) | body[1]) : 0;
    size_t i;

    if (aw && type == aw->type && (type != HAR_MQTT_SUBACK || pid == aw->packet_id)) {
        aw->found = 1;
        if (type == HAR_MQTT_CONNACK)
            aw->code = rem >= 2 ? body[1] : 0xff;
        else
            aw->code = rem >= 3 ? body[2] : 0x80;
        return;
    }
    switch (type) {
    case HAR_MQTT_PUBLISH: {
        uint8_t qos = (tf >> 1) & 3;
        size_t tl, off;
        if (rem < 2)
            return;
        tl = (size_t)((body[0] << 8) | body[1]);
        off = 2 + tl + (qos ? 2 : 0);
        if (off > rem || qos > 1)
            return; /* malformed, or QoS 2 which this client never subscribes to */
        if (m->on_message)
            m->on_message(m->on_message_ctx, (const char *)body + 2, tl, body + off, rem - off);
        if (qos == 1 && m->connected) {
            uint8_t ack[4];
            uint16_t id = (uint16_t)((body[2 + tl] << 8) | body[3 + tl]);
            size_t n = har_mqtt_encode_simple(ack, sizeof ack, HAR_MQTT_PUBACK, 0, &id);
            if (send_bytes(m, ack, n))
                drop(m);
        }
        return;
    }
    case HAR_MQTT_PUBACK:
        for (i = 0; i < HAR_MQTT_INFLIGHT; i++)
            if (m->inflight[i].used && m->inflight[i].packet_id == pid)
                m->inflight[i].used = 0;
        return;
    case HAR_MQTT_PINGRESP:
        m->ping_sent = 0;
        return;
    default:
        return;
    }
}

/* Handles every complete packet in rx; keeps a partial one. -1 on a protocol error. */
static int process_rx(har_mqtt *m, awaited *aw)
{
    size_t pos = 0;
    while (pos < m->rx_len) {
        uint8_t tf;
        uint32_t rem;
        size_t hl, total;
        int rc = har_mqtt_parse_header(m->rx + pos, m->rx_len - pos, &tf, &rem, &hl);
        if (rc < 0)
            return -1;
        if (rc == 0)
            break;
        total = hl + rem;
        if (total > sizeof m->rx) {
            /* too large to hold: acknowledge a QoS 1 PUBLISH whose id we can read, drop it */
            const uint8_t *b = m->rx + pos + hl;
            size_t have = m->rx_len - pos - hl;
            if ((tf >> 4) == HAR_MQTT_PUBLISH && ((tf >> 1) & 3) == 1 && have >= 2) {
                size_t tl = (size_t)((b[0] << 8) | b[1]);
                if (have >= 4 + tl) {
                    uint8_t ack[4];
                    uint16_t id = (uint16_t)((b[2 + tl] << 8) | b[3 + tl]);
                    size_t n = har_mqtt_encode_simple(ack, sizeof ack, HAR_MQTT_PUBACK, 0, &id);
                    if (send_bytes(m, ack, n))
                        return -1;
                }
            }
            m->discard = total - (m->rx_len - pos);
            m->rx_len = pos;
            break;
        }
        if (m->rx_len - pos < total)
            break;
        handle_packet(m, tf, m->rx + pos + hl, rem, aw);
        pos += total;
        if (!m->connected)
            return -1; /* a reply failed and dropped the connection */
        if (aw && aw->found)
            break;
    }
    if (pos) {
        memmove(m->rx, m->rx + pos, m->rx_len - pos);
        m->rx_len -= pos;
    }
    return 0;
}

/* Reads once (up to timeout_ms) into rx. -1 when the peer closed or on error. */
static int read_some(har_mqtt *m, uint32_t timeout_ms)
{
    long n = m->sock.recv(m->sock.ctx, m->rx + m->rx_len, sizeof m->rx - m->rx_len, timeout_ms);
    if (n < 0)
        return -1;
    if (n == 0)
        return 0;
    m->last_rx = m->clock_ms();
    if (m->discard) {
        size_t d = (size_t)n < m->discard ? (size_t)n : m->discard;
        m->discard -= d;
        memmove(m->rx + m->rx_len, m->rx + m->rx_len + d, (size_t)n - d);
        n -= (long)d;
    }
    m->rx_len += (size_t)n;
    return 0;
}

/* Waits for the awaited packet, handling others meanwhile. 0 when found. */
static int await_packet(har_mqtt *m, awaited *aw)
{
    uint64_t deadline = m->clock_ms() + m->connect_timeout_ms;
    aw->found = 0;
    for (;;) {
        uint64_t now;
        if (process_rx(m, aw))
            return -1;
        if (aw->found)
            return 0;
        now = m->clock_ms();
        if (now >= deadline)
            return -1;
        if (read_some(m, (uint32_t)(deadline - now)))
            return -1;
    }
}

int har_mqtt_connect(har_mqtt *m)
{
    size_t n, i;
    awaited aw;

    if (m->connected)
        har_mqtt_disconnect(m);
    m->rx_len = 0;
    m->discard = 0;
    if (m->sock.connect(m->sock.ctx, m->host, m->port, m->connect_timeout_ms)) {
        m->connected = 0;
        m->next_attempt = m->clock_ms() + m->backoff_ms;
        m->backoff_ms =
            m->backoff_ms * 2 > m->backoff_max_ms ? m->backoff_max_ms : m->backoff_ms * 2;
        return -1;
    }
    m->connected = 1; /* socket open: drop() closes it */
    n = har_mqtt_encode_connect(m->tx, sizeof m->tx, m->client_id, m->keepalive_s, 1,
                                m->username, m->password);
    if (!n || send_bytes(m, m->tx, n))
        goto fail;
    memset(&aw, 0, sizeof aw);
    aw.type = HAR_MQTT_CONNACK;
    if (await_packet(m, &aw) || aw.code != 0)
        goto fail;
    for (i = 0; i < m->n_subs; i++) {
        aw.type = HAR_MQTT_SUBACK;
        aw.packet_id = new_packet_id(m);
        n = har_mqtt_encode_subscribe(m->tx, sizeof m->tx, aw.packet_id, m->subs[i], 1);
        if (!n || send_bytes(m, m->tx, n) || await_packet(m, &aw) || aw.code == 0x80)
            goto fail;
    }
    for (i = 0; i < HAR_MQTT_INFLIGHT; i++) {
        har_mqtt_inflight *f = &m->inflight[i];
        if (!f->used)
            continue;
        f->packet[0] |= 0x08; /* DUP */
        if (send_bytes(m, f->packet, f->len))
            goto fail;
    }
    m->last_rx = m->clock_ms();
    m->ping_sent = 0;
    m->backoff_ms = m->backoff_min_ms;
    m->connections++;
    if (m->on_connect)
        m->on_connect(m->on_connect_ctx);
    return m->connected ? 0 : -1;
fail:
    drop(m);
    return -1;
}

int har_mqtt_publish(har_mqtt *m, const char *topic, const uint8_t *payload, size_t len, int qos)
{
    size_t n, i;
    if (qos == 0) {
        if (!m->connected)
            return -1;
        n = har_mqtt_encode_publish(m->tx, sizeof m->tx, topic, payload, len, 0, 0, 0);
        if (!n)
            return -1;
        if (send_bytes(m, m->tx, n)) {
            drop(m);
            return -1;
        }
        return 0;
    }
    if (qos != 1)
        return -1;
    for (i = 0; i < HAR_MQTT_INFLIGHT; i++) {
        har_mqtt_inflight *f = &m->inflight[i];
        if (f->used)
            continue;
        f->packet_id = new_packet_id(m);
        n = har_mqtt_encode_publish(f->packet, sizeof f->packet, topic, payload, len, 1,
                                    f->packet_id, 0);
        if (!n)
            return -1;
        f->len = n;
        f->used = 1;
        /* sent now if connected, otherwise on the next connection */
        if (m->connected && send_bytes(m, f->packet, n))
            drop(m);
        return 0;
    }
    return -1;
}

int har_mqtt_step(har_mqtt *m, uint32_t timeout_ms)
{
    uint64_t now = m->clock_ms(), ka = (uint64_t)m->keepalive_s * 1000u;

    if (!m->connected) {
        if (now < m->next_attempt) {
            /* nothing to do until the next attempt: spend the step waiting for it */
            uint64_t wait = m->next_attempt - now;
            if (wait > timeout_ms)
                wait = timeout_ms;
            m->sock.sleep_ms(m->sock.ctx, (uint32_t)wait);
            return 0;
        }
        (void)har_mqtt_connect(m); /* on failure the backoff has advanced */
        return 0;
    }
    if (ka) {
        if (m->ping_sent && now - m->ping_sent >= ka) {
            drop(m); /* no PINGRESP within a keepalive period */
            return -1;
        }
        if (!m->ping_sent && now - m->last_tx >= ka * 3 / 4) {
            uint8_t ping[2];
            size_t n = har_mqtt_encode_simple(ping, sizeof ping, HAR_MQTT_PINGREQ, 0, NULL);
            if (send_bytes(m, ping, n)) {
                drop(m);
                return -1;
            }
            m->ping_sent = now;
        }
        {
            uint64_t next_ping = m->last_tx + ka * 3 / 4;
            if (!m->ping_sent && next_ping > now && next_ping - now < timeout_ms)
                timeout_ms = (uint32_t)(next_ping - now);
        }
    }
    if (read_some(m, timeout_ms) || process_rx(m, NULL)) {
        drop(m);
        return -1;
    }
    return m->connected ? 0 : -1;
}

void har_mqtt_disconnect(har_mqtt *m)
{
    if (m->connected) {
        uint8_t d[2];
        size_t n = har_mqtt_encode_simple(d, sizeof d, HAR_MQTT_DISCONNECT, 0, NULL);
        (void)send_bytes(m, d, n);
        m->sock.close(m->sock.ctx);
    }
    m->connected = 0;
    m->rx_len = 0;
    m->discard = 0;
}
