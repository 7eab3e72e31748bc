/* har_agent.c - HARCP device agent over MQTT (see har_agent.h). */
#include "har_agent.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "har_keyfile.h"

#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
static void logf_(har_agent *a, har_log_level level, const char *fmt, ...)
{
    char msg[192];
    va_list ap;
    if (!a->cfg.log)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    a->cfg.log(a->cfg.log_ctx, level, msg);
}

static void on_message(void *ctx, const char *topic, size_t topic_len, const uint8_t *payload,
                       size_t len)
{
    (void)topic;
    (void)topic_len;
    har_agent_handle_frame((har_agent *)ctx, payload, len);
}

static void on_connect(void *ctx)
{
    har_agent *a = ctx;
    logf_(a, HAR_LOG_INFO, "connected to %s:%u, subscribed to %s (connection %lu)", a->cfg.host,
          (unsigned)a->cfg.port, a->topic_down, (unsigned long)a->mqtt.connections);
}

int har_agent_init(har_agent *a, const har_agent_config *cfg)
{
    size_t idlen;
    if (!cfg->device_id || !cfg->crypto || !cfg->socket || !cfg->monotonic_ms ||
        !cfg->realtime_ms || !cfg->host)
        return -1;
    idlen = strlen(cfg->device_id);
    if (idlen == 0 || idlen > HAR_MAX_DEVICE_ID || strpbrk(cfg->device_id, "/+#"))
        return -1;
    memset(a, 0, sizeof *a);
    a->cfg = *cfg;
    memcpy(a->device_id, cfg->device_id, idlen + 1);
    snprintf(a->topic_down, sizeof a->topic_down, "harcp/v1/%s/down", a->device_id);
    snprintf(a->topic_up, sizeof a->topic_up, "harcp/v1/%s/up", a->device_id);
    har_receiver_init(&a->receiver, cfg->crypto, a->device_id, HAR_DEVICE_TYPES);
    if (cfg->window_ms)
        a->receiver.window_ms = cfg->window_ms;
    a->receiver.allow_unsigned = cfg->allow_unsigned;
    a->receiver.persist = cfg->persist;
    a->receiver.persist_ctx = cfg->persist_ctx;
    har_mqtt_init(&a->mqtt, cfg->socket, cfg->monotonic_ms, cfg->host, cfg->port, a->device_id,
                  on_message, a);
    if (cfg->keepalive_s)
        a->mqtt.keepalive_s = cfg->keepalive_s;
    a->mqtt.username = cfg->mqtt_username;
    a->mqtt.password = cfg->mqtt_password;
    a->mqtt.on_connect = on_connect;
    a->mqtt.on_connect_ctx = a;
    return har_mqtt_subscribe(&a->mqtt, a->topic_down);
}

int har_agent_trust(har_agent *a, const uint8_t public_key[HAR_PUBLIC_KEY_LEN])
{
    return har_receiver_trust(&a->receiver, public_key);
}

int har_agent_restore_sequence(har_agent *a, const uint8_t key_id[HAR_KEY_ID_LEN],
                               uint32_t sequence)
{
    if (memcmp(key_id, a->cfg.device_key.key_id, HAR_KEY_ID_LEN) == 0) {
        a->sequence = sequence;
        return 0;
    }
    return har_receiver_set_sequence(&a->receiver, key_id, sequence);
}

int har_agent_register(har_agent *a, const char *op, har_op_handler fn, void *ctx)
{
    if (a->n_ops >= HAR_MAX_OPS || !op || !fn)
        return -1;
    a->ops[a->n_ops].op = op;
    a->ops[a->n_ops].fn = fn;
    a->ops[a->n_ops].ctx = ctx;
    a->n_ops++;
    return 0;
}

int har_agent_connect(har_agent *a)
{
    return har_mqtt_connect(&a->mqtt);
}

void har_agent_close(har_agent *a)
{
    har_mqtt_disconnect(&a->mqtt);
}

int har_agent_step(har_agent *a, uint32_t timeout_ms)
{
    return har_mqtt_step(&a->mqtt, timeout_ms);
}

/* Signs a->payload[0..len) as a frame of `type` and publishes it on the up topic (QoS 1). */
static int send_frame(har_agent *a, har_type type, const uint8_t operation_id[16], size_t len)
{
    har_frame f;
    size_t out_len;
    int rc;
    if (a->sequence == UINT32_MAX) {
        logf_(a, HAR_LOG_ERROR, "out of sequence numbers");
        return -1;
    }
    a->sequence++;
    if (a->cfg.persist)
        a->cfg.persist(a->cfg.persist_ctx, a->cfg.device_key.key_id, a->sequence);
    har_frame_prepare(&f, type, operation_id, a->cfg.realtime_ms(), a->sequence,
                      &a->cfg.device_key, a->payload, len);
    rc = har_frame_encode(&f, a->cfg.crypto, &a->cfg.device_key, a->frame, sizeof a->frame,
                          &out_len);
    if (rc == HAR_OK)
        rc = har_mqtt_publish(&a->mqtt, a->topic_up, a->frame, out_len, 1);
    if (rc)
        logf_(a, HAR_LOG_ERROR, "cannot send %s (%d)", har_type_name(type), rc);
    return rc ? -1 : 0;
}

static int send_error(har_agent *a, const uint8_t operation_id[16], int code)
{
    har_mp_writer w;
    har_mp_writer_init(&w, a->payload, sizeof a->payload);
    har_mp_write_map(&w, 2);
    har_mp_write_cstr(&w, "code");
    har_mp_write_uint(&w, (uint64_t)code);
    har_mp_write_cstr(&w, "reason");
    har_mp_write_cstr(&w, har_error_name(code));
    if (w.err)
        return -1;
    return send_frame(a, HAR_ERROR, operation_id, w.pos);
}

static int send_ack(har_agent *a, const uint8_t operation_id[16], const char *status,
                    const uint8_t *result, size_t result_len, uint32_t error_code,
                    const char *error_message)
{
    har_mp_writer w;
    har_mp_writer_init(&w, a->payload, sizeof a->payload);
    har_mp_write_map(&w, 1 + (result_len > 0) + (error_message != NULL));
    har_mp_write_cstr(&w, "status");
    har_mp_write_cstr(&w, status);
    if (result_len) {
        har_mp_write_cstr(&w, "result");
        har_mp_write_raw(&w, result, result_len);
    }
    if (error_message) {
        har_mp_write_cstr(&w, "error");
        har_mp_write_map(&w, 2);
        har_mp_write_cstr(&w, "code");
        har_mp_write_uint(&w, error_code);
        har_mp_write_cstr(&w, "message");
        har_mp_write_cstr(&w, error_message);
    }
    if (w.err) /* a result too large for one frame */
        return send_ack(a, operation_id, "failed", NULL, 0, 0, "result too large");
    return send_frame(a, HAR_ACK, operation_id, w.pos);
}

static int send_capabilities(har_agent *a, const uint8_t operation_id[16])
{
    har_mp_writer w;
    size_t i;
    har_mp_writer_init(&w, a->payload, sizeof a->payload);
    har_mp_write_map(&w, 4);
    har_mp_write_cstr(&w, "agent");
    har_mp_write_cstr(&w, HAR_AGENT_NAME);
    har_mp_write_cstr(&w, "ops");
    har_mp_write_array(&w, (uint32_t)a->n_ops);
    for (i = 0; i < a->n_ops; i++)
        har_mp_write_cstr(&w, a->ops[i].op);
    har_mp_write_cstr(&w, "max_payload");
    har_mp_write_uint(&w, HAR_MAX_PAYLOAD);
    har_mp_write_cstr(&w, "tier");
    har_mp_write_cstr(&w, a->cfg.allow_unsigned ? "open" : "signed");
    if (w.err)
        return -1;
    return send_frame(a, HAR_CAPABILITY_RESPONSE, operation_id, w.pos);
}

static int execute(har_agent *a, const har_frame *f)
{
    har_mp_reader v;
    const char *op;
    uint32_t op_len;
    char name[64];
    size_t i;
    har_request req;
    har_mp_writer result;
    int rc;

    /* the payload passed har_payload_validate: op is a str, args a map */
    if (har_payload_find(f->payload, f->payload_len, "op", &v) || har_mp_read_str(&v, &op, &op_len))
        return -1;
    if (op_len >= sizeof name || memchr(op, 0, op_len))
        op_len = 0; /* no registered op can match */
    memcpy(name, op, op_len);
    name[op_len] = '\0';
    for (i = 0; i < a->n_ops; i++)
        if (op_len && strcmp(a->ops[i].op, name) == 0)
            break;
    if (i == a->n_ops) {
        logf_(a, HAR_LOG_INFO, "execute %s: unknown op, rejected", name);
        return send_ack(a, f->operation_id, "rejected", NULL, 0, HAR_E_UNKNOWN_OP,
                        har_error_name(HAR_E_UNKNOWN_OP));
    }
    memset(&req, 0, sizeof req);
    req.op = name;
    req.operation_id = f->operation_id;
    if (har_payload_find(f->payload, f->payload_len, "args", &req.args))
        return -1;
    /* room for the ack around the result: status, error and the map header */
    har_mp_writer_init(&result, a->result, sizeof a->result - 48);
    req.result = &result;
    rc = a->ops[i].fn(a->ops[i].ctx, &req);
    if (rc == 0 && result.err) {
        rc = -1;
        snprintf(req.error_message, sizeof req.error_message, "result too large");
    }
    logf_(a, HAR_LOG_INFO, "execute %s: %s", name, rc ? "failed" : "done");
    if (rc)
        return send_ack(a, f->operation_id, "failed", NULL, 0, req.error_code,
                        req.error_message[0] ? req.error_message : "failed");
    return send_ack(a, f->operation_id, "done", a->result, result.pos, 0, NULL);
}

int har_agent_handle_frame(har_agent *a, const uint8_t *buf, size_t len)
{
    har_frame f;
    char id[2 * HAR_OPERATION_ID_LEN + 1];
    int rc = har_receiver_check(&a->receiver, buf, len, a->cfg.realtime_ms(), &f);
    har_hex_encode(f.operation_id, HAR_OPERATION_ID_LEN, id);
    if (rc != HAR_OK) {
        a->refused++;
        a->last_error = rc;
        logf_(a, HAR_LOG_INFO, "refused frame %s: %s (%d)", id, har_error_name(rc), rc);
        if (har_error_answerable(rc, f.type))
            send_error(a, f.operation_id, rc);
        return rc;
    }
    a->accepted++;
    logf_(a, HAR_LOG_INFO, "accepted %s %s (sequence %lu)", har_type_name(f.type), id,
          (unsigned long)f.sequence);
    if (f.type == HAR_EXECUTE)
        execute(a, &f);
    else if (f.type == HAR_CAPABILITY_QUERY)
        send_capabilities(a, f.operation_id);
    return HAR_OK;
}

int har_agent_report_status(har_agent *a, const char *health, uint64_t uptime_s,
                            const uint8_t *inventory, size_t inventory_len)
{
    har_mp_writer w;
    uint8_t operation_id[HAR_OPERATION_ID_LEN];
    if (a->cfg.crypto->random(operation_id, sizeof operation_id))
        return -1;
    operation_id[6] = (uint8_t)((operation_id[6] & 0x0f) | 0x40); /* UUID v4 */
    operation_id[8] = (uint8_t)((operation_id[8] & 0x3f) | 0x80);
    har_mp_writer_init(&w, a->payload, sizeof a->payload);
    har_mp_write_map(&w, 2 + (inventory_len > 0));
    har_mp_write_cstr(&w, "health");
    har_mp_write_cstr(&w, health);
    har_mp_write_cstr(&w, "uptime_s");
    har_mp_write_uint(&w, uptime_s);
    if (inventory_len) {
        har_mp_write_cstr(&w, "inventory");
        har_mp_write_raw(&w, inventory, inventory_len);
    }
    /* also checks that `inventory` is one map with string keys */
    if (w.err || har_payload_validate(HAR_STATUS, a->payload, w.pos) != HAR_OK)
        return -1;
    return send_frame(a, HAR_STATUS, operation_id, w.pos);
}
