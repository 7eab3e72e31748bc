/* har_transport.h - a minimal MQTT 3.1.1 client over a socket interface.
 *
 * CONNECT with keepalive, SUBSCRIBE QoS 1 (re-sent on every reconnect), PUBLISH QoS 0/1 with
 * PUBACK handling (unacknowledged QoS 1 messages are re-sent with DUP after a reconnect),
 * PINGREQ, reconnection with exponential backoff. Fixed-size state, no heap. The socket and
 * the clock are interfaces; har_socket_posix_init() provides the POSIX implementation. */
#ifndef HAR_TRANSPORT_H
#define HAR_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

#include "har_protocol.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Largest MQTT packet handled: a HARCP frame plus topic and headers. */
#ifndef HAR_MQTT_BUF
#define HAR_MQTT_BUF (HAR_MAX_FRAME + 256)
#endif
#ifndef HAR_MQTT_MAX_SUBS
#define HAR_MQTT_MAX_SUBS 2
#endif
/* Unacknowledged QoS 1 publications kept for retransmission. */
#ifndef HAR_MQTT_INFLIGHT
#define HAR_MQTT_INFLIGHT 4
#endif

/* A byte stream. Functions return -1 on error or when the peer closed. */
typedef struct har_socket {
    void *ctx;
    int (*connect)(void *ctx, const char *host, uint16_t port, uint32_t timeout_ms);
    /* writes all of buf, returns 0 */
    int (*send)(void *ctx, const uint8_t *buf, size_t len);
    /* waits up to timeout_ms, returns the number of bytes read (> 0), 0 on timeout */
    long (*recv)(void *ctx, uint8_t *buf, size_t cap, uint32_t timeout_ms);
    void (*close)(void *ctx);
    /* sleeps ms milliseconds (used between reconnection attempts) */
    void (*sleep_ms)(void *ctx, uint32_t ms);
} har_socket;

/* Milliseconds from a monotonic clock. */
typedef uint64_t (*har_clock_fn)(void);

typedef void (*har_mqtt_message_fn)(void *ctx, const char *topic, size_t topic_len,
                                    const uint8_t *payload, size_t len);

/* MQTT control packet types */
enum {
    HAR_MQTT_CONNECT = 1,
    HAR_MQTT_CONNACK = 2,
    HAR_MQTT_PUBLISH = 3,
    HAR_MQTT_PUBACK = 4,
    HAR_MQTT_SUBSCRIBE = 8,
    HAR_MQTT_SUBACK = 9,
    HAR_MQTT_PINGREQ = 12,
    HAR_MQTT_PINGRESP = 13,
    HAR_MQTT_DISCONNECT = 14
};

typedef struct {
    uint16_t packet_id;
    uint8_t used;
    size_t len;
    uint8_t packet[HAR_MQTT_BUF];
} har_mqtt_inflight;

typedef struct {
    har_socket sock;
    har_clock_fn clock_ms;
    const char *host;
    uint16_t port;
    const char *client_id;
    const char *username; /* optional */
    const char *password; /* optional */
    uint16_t keepalive_s;
    uint32_t connect_timeout_ms;
    uint32_t backoff_min_ms, backoff_max_ms;
    har_mqtt_message_fn on_message;
    void *on_message_ctx;
    /* called after each successful (re)connection and subscription */
    void (*on_connect)(void *ctx);
    void *on_connect_ctx;

    const char *subs[HAR_MQTT_MAX_SUBS];
    size_t n_subs;

    int connected;
    uint64_t last_tx, last_rx, ping_sent, next_attempt;
    uint32_t backoff_ms;
    uint16_t next_packet_id;
    uint32_t connections; /* successful connections so far */
    size_t discard;       /* bytes of an oversize packet still to drop */
    har_mqtt_inflight inflight[HAR_MQTT_INFLIGHT];
    uint8_t rx[HAR_MQTT_BUF];
    size_t rx_len;
    uint8_t tx[HAR_MQTT_BUF];
} har_mqtt;

/* Sets up a client (not connected). Keepalive 30 s, backoff 500 ms .. 30 s by default. */
void har_mqtt_init(har_mqtt *m, const har_socket *sock, har_clock_fn clock_ms, const char *host,
                   uint16_t port, const char *client_id, har_mqtt_message_fn on_message,
                   void *ctx);
/* A topic filter subscribed with QoS 1 on every connection (the string must outlive m). */
int har_mqtt_subscribe(har_mqtt *m, const char *topic);
/* Connects now: CONNECT/CONNACK, SUBSCRIBE/SUBACK, re-sends unacknowledged QoS 1 messages.
 * 0 on success; on failure the socket is closed and the backoff advanced. */
int har_mqtt_connect(har_mqtt *m);
/* Publishes with QoS 0 or 1. A QoS 1 message is kept until its PUBACK (and re-sent after a
 * reconnect); -1 when all inflight slots are taken, or for QoS 0 while disconnected. */
int har_mqtt_publish(har_mqtt *m, const char *topic, const uint8_t *payload, size_t len, int qos);
/* One step: reconnects when due, otherwise reads for up to timeout_ms, dispatches messages,
 * answers QoS 1 with PUBACK, keeps the connection alive. Returns 0, or -1 if the connection
 * was lost in this step. */
int har_mqtt_step(har_mqtt *m, uint32_t timeout_ms);
/* Sends DISCONNECT and closes the socket. */
void har_mqtt_disconnect(har_mqtt *m);
/* Number of unacknowledged QoS 1 messages. */
size_t har_mqtt_inflight_count(const har_mqtt *m);

/* Packet encoders (exposed for tests): return the packet length, 0 if cap is too small. */
size_t har_mqtt_encode_connect(uint8_t *buf, size_t cap, const char *client_id,
                               uint16_t keepalive_s, int clean_session, const char *username,
                               const char *password);
size_t har_mqtt_encode_subscribe(uint8_t *buf, size_t cap, uint16_t packet_id,
                                 const char *topic, uint8_t qos);
size_t har_mqtt_encode_publish(uint8_t *buf, size_t cap, const char *topic,
                               const uint8_t *payload, size_t len, uint8_t qos,
                               uint16_t packet_id, int dup);
size_t har_mqtt_encode_simple(uint8_t *buf, size_t cap, uint8_t type, uint8_t flags,
                              const uint16_t *packet_id);
/* Parses a fixed header: 1 with *type_flags, *remaining and *header_len set when complete,
 * 0 when more bytes are needed, -1 when malformed (remaining length over 4 bytes). */
int har_mqtt_parse_header(const uint8_t *buf, size_t len, uint8_t *type_flags,
                          uint32_t *remaining, size_t *header_len);

/* ---- POSIX implementation ---- */

typedef struct {
    int fd;
} har_posix_socket;

/* Fills `sock` with the POSIX TCP implementation over `ctx`. */
void har_socket_posix_init(har_socket *sock, har_posix_socket *ctx);
/* CLOCK_MONOTONIC and CLOCK_REALTIME in milliseconds. */
uint64_t har_posix_monotonic_ms(void);
uint64_t har_posix_realtime_ms(void);

#ifdef __cplusplus
}
#endif
#endif
