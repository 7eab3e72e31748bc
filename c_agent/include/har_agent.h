/* har_agent.h - the API a device application calls to speak HARCP over MQTT.
 *
 *   har_agent_init(&agent, &config);          device id, broker, keys, platform functions
 *   har_agent_trust(&agent, controller_pub);  one or two controller keys (rotation)
 *   har_agent_register(&agent, "led.set", handler, ctx);
 *   har_agent_connect(&agent);                first connection (later ones are automatic)
 *   har_agent_report_status(&agent, "ok", uptime_s, NULL, 0);
 *   for (;;) har_agent_step(&agent, 1000);    one loop step: I/O, keepalive, reconnection
 *
 * The agent subscribes to harcp/v1/<device id>/down and publishes to harcp/v1/<device id>/up
 * (QoS 1). Every frame it receives goes through the receiver checks of docs/harcp.md §5;
 * a refused execute/capability_query is answered with a signed `error` frame, an execute
 * with an `ack` (done/failed, or rejected for an unknown op), a capability_query with a
 * `capability_response`. All state is inside struct har_agent (no heap). */
#ifndef HAR_AGENT_H
#define HAR_AGENT_H

#include <stddef.h>
#include <stdint.h>

#include "har_crypto.h"
#include "har_msgpack.h"
#include "har_protocol.h"
#include "har_transport.h"

#ifdef __cplusplus
extern "C" {
#endif

#ifndef HAR_MAX_OPS
#define HAR_MAX_OPS 8
#endif
#define HAR_MAX_DEVICE_ID 64
#define HAR_AGENT_NAME "hbroker-c-agent/0.1"

/* One execute, as a handler sees it. */
typedef struct {
    const char *op;             /* NUL-terminated */
    const uint8_t *operation_id; /* 16 bytes */
    har_mp_reader args;         /* positioned on the `args` map */
    /* the handler writes one msgpack value (the ack's `result`) here, or nothing */
    har_mp_writer *result;
    /* on failure: an application error code and message for the ack's `error` */
    uint32_t error_code;
    char error_message[96];
} har_request;

/* Returns 0 when the operation is done, nonzero when it failed (ack `failed`). */
typedef int (*har_op_handler)(void *ctx, har_request *req);

typedef enum { HAR_LOG_ERROR = 0, HAR_LOG_INFO = 1, HAR_LOG_DEBUG = 2 } har_log_level;

typedef struct {
    const char *device_id;
    const char *host;
    uint16_t port;
    uint16_t keepalive_s;           /* 0: 30 s */
    const char *mqtt_username;      /* optional */
    const char *mqtt_password;      /* optional */
    const har_crypto *crypto;
    har_signing_key device_key;
    const har_socket *socket;
    har_clock_fn monotonic_ms;
    har_clock_fn realtime_ms;       /* ms since the Unix epoch (timestamps, the window) */
    uint64_t window_ms;             /* 0: 300 000 */
    int allow_unsigned;             /* security tier "open"; default "signed" */
    /* Called with (key id, sequence) whenever a sequence moves: the device's own outgoing
     * counter (its key id) and the last accepted sequence of each controller key. Store
     * them and give them back with har_agent_restore_sequence() after a reboot. */
    har_sequence_persist_fn persist;
    void *persist_ctx;
    void (*log)(void *ctx, har_log_level level, const char *message);
    void *log_ctx;
} har_agent_config;

typedef struct {
    const char *op;
    har_op_handler fn;
    void *ctx;
} har_op_entry;

typedef struct har_agent {
    har_agent_config cfg;
    char device_id[HAR_MAX_DEVICE_ID + 1];
    char topic_down[HAR_MAX_DEVICE_ID + 16];
    char topic_up[HAR_MAX_DEVICE_ID + 16];
    har_receiver receiver;
    har_mqtt mqtt;
    har_op_entry ops[HAR_MAX_OPS];
    size_t n_ops;
    uint32_t sequence;      /* last sequence sent */
    uint32_t accepted;      /* frames accepted */
    uint32_t refused;       /* frames refused */
    int last_error;         /* code of the last refusal */
    uint8_t payload[HAR_MAX_PAYLOAD];
    uint8_t result[HAR_MAX_PAYLOAD];
    uint8_t frame[HAR_MAX_FRAME];
} har_agent;

/* 0 on success; -1 for a bad configuration (device id too long, no crypto/socket/clock). */
int har_agent_init(har_agent *a, const har_agent_config *cfg);
/* Trusts a controller public key (up to HAR_MAX_TRUSTED_KEYS). */
int har_agent_trust(har_agent *a, const uint8_t public_key[HAR_PUBLIC_KEY_LEN]);
/* Restores a persisted sequence: the device's own key id sets the outgoing counter, any
 * other the last accepted sequence of that key. */
int har_agent_restore_sequence(har_agent *a, const uint8_t key_id[HAR_KEY_ID_LEN],
                               uint32_t sequence);
/* Registers a handler for an op name (the string must outlive the agent). */
int har_agent_register(har_agent *a, const char *op, har_op_handler fn, void *ctx);
/* Connects to the broker now; 0 on success. On failure har_agent_step() retries with backoff. */
int har_agent_connect(har_agent *a);
/* Sends a `status` frame: health "ok"/"degraded"/"failed", uptime, and optionally an
 * already encoded msgpack map as `inventory`. Queued (QoS 1) if not connected. */
int har_agent_report_status(har_agent *a, const char *health, uint64_t uptime_s,
                            const uint8_t *inventory, size_t inventory_len);
/* One loop step: waits up to timeout_ms for traffic, handles it, keeps the connection. */
int har_agent_step(har_agent *a, uint32_t timeout_ms);
/* Handles one received frame (what a message on the down topic triggers; public for other
 * transports and tests). Returns HAR_OK or the refusal's error code. */
int har_agent_handle_frame(har_agent *a, const uint8_t *frame, size_t len);
/* Disconnects from the broker. */
void har_agent_close(har_agent *a);

#ifdef __cplusplus
}
#endif
#endif
