/* test_agent.c - the agent end to end over the in-memory socket: signed commands in through
 * MQTT, signed answers out, checked by a controller-role receiver; refusals answered with
 * `error` frames carrying the right codes; sequence persistence. */
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "fake_socket.h"
#include "har_agent.h"

static const har_crypto *c;
static har_signing_key controller, device, stranger;
static har_agent agent;
static har_receiver controller_rx;
static size_t out_pos;
static uint32_t controller_seq;
static uint64_t wall_ms = 1764000000000ull;

static uint64_t wall_clock(void)
{
    return wall_ms;
}

static int persisted;
static uint8_t persisted_ids[4][8];
static uint32_t persisted_seqs[4];

static void persist(void *ctx, const uint8_t key_id[8], uint32_t seq)
{
    int i;
    (void)ctx;
    for (i = 0; i < persisted; i++)
        if (memcmp(persisted_ids[i], key_id, 8) == 0)
            break;
    if (i == persisted) {
        if (persisted == 4)
            return;
        memcpy(persisted_ids[persisted++], key_id, 8);
    }
    persisted_seqs[i] = seq;
}

static int led_state;

static int led_set(void *ctx, har_request *req)
{
    har_mp_reader v = req->args;
    uint32_t n;
    const char *k;
    uint32_t kl;
    int on;
    CHECK(ctx == &led_state);
    if (har_mp_read_map(&v, &n) || n != 1 || har_mp_read_str(&v, &k, &kl) ||
        !har_mp_str_eq(k, kl, "on") || har_mp_read_bool(&v, &on)) {
        req->error_code = 1;
        strcpy(req->error_message, "args.on must be a bool");
        return -1;
    }
    led_state = on;
    har_mp_write_map(req->result, 1);
    har_mp_write_cstr(req->result, "on");
    har_mp_write_bool(req->result, on);
    return 0;
}

static int big_result(void *ctx, har_request *req)
{
    static const char filler[2000] = {0};
    (void)ctx;
    return har_mp_write_str(req->result, filler, sizeof filler) ? 0 : 0;
}

/* Builds a frame from the controller (or another key) as msgpack payload bytes. */
static size_t build(uint8_t *out, har_type type, const har_signing_key *key, unsigned id,
                    uint64_t ts, const uint8_t *payload, size_t len)
{
    har_frame f;
    uint8_t op[16];
    size_t n = 0;
    memset(op, 0xab, sizeof op);
    op[15] = (uint8_t)id;
    har_frame_prepare(&f, type, op, ts, ++controller_seq, key, payload, len);
    CHECK_EQ_INT(har_frame_encode(&f, c, key, out, HAR_MAX_FRAME, &n), HAR_OK);
    return n;
}

static size_t execute_payload(uint8_t *buf, const char *device_id, const char *op, int on)
{
    har_mp_writer w;
    har_mp_writer_init(&w, buf, 256);
    har_mp_write_map(&w, 3);
    har_mp_write_cstr(&w, "device");
    har_mp_write_cstr(&w, device_id);
    har_mp_write_cstr(&w, "op");
    har_mp_write_cstr(&w, op);
    har_mp_write_cstr(&w, "args");
    if (on < 0) {
        har_mp_write_map(&w, 0);
    } else {
        har_mp_write_map(&w, 1);
        har_mp_write_cstr(&w, "on");
        har_mp_write_bool(&w, on);
    }
    return w.pos;
}

/* Publishes a frame to the agent's down topic through the fake broker and runs a step. */
static void deliver(const uint8_t *frame, size_t len)
{
    static uint8_t pkt[HAR_MQTT_BUF];
    static uint16_t pid = 100;
    size_t n = har_mqtt_encode_publish(pkt, sizeof pkt, "harcp/v1/dev-1/down", frame, len, 1,
                                       pid++, 0);
    CHECK(n > 0);
    fake_feed(pkt, n);
    har_agent_step(&agent, 10);
}

/* The next frame the agent published on its up topic, checked by the controller receiver;
 * returns its type, or 0 if none. The payload is left in *payload. */
static int next_answer(har_frame *f, int *rc)
{
    uint8_t tf;
    const uint8_t *body;
    uint32_t rem;
    while (fake_next_packet(&out_pos, &tf, &body, &rem)) {
        size_t tl;
        if ((tf >> 4) != HAR_MQTT_PUBLISH)
            continue;
        tl = (size_t)(body[0] << 8 | body[1]);
        CHECK(tl == strlen("harcp/v1/dev-1/up") && memcmp(body + 2, "harcp/v1/dev-1/up", tl) == 0);
        CHECK(((tf >> 1) & 3) == 1); /* QoS 1 */
        /* acknowledge it as the broker would */
        {
            uint8_t ack[4] = {0x40, 0x02, body[2 + tl], body[3 + tl]};
            fake_feed(ack, 4);
        }
        *rc = har_receiver_check(&controller_rx, body + 2 + tl + 2, rem - 2 - tl - 2, wall_ms,
                                 f);
        return f->type;
    }
    return 0;
}

static int payload_str(const har_frame *f, const char *key, const char *want)
{
    har_mp_reader v;
    const char *s;
    uint32_t l;
    return har_payload_find(f->payload, f->payload_len, key, &v) == 0 &&
           har_mp_read_str(&v, &s, &l) == 0 && har_mp_str_eq(s, l, want);
}

static uint64_t payload_uint(const har_frame *f, const char *key)
{
    har_mp_reader v;
    uint64_t u = 0;
    if (har_payload_find(f->payload, f->payload_len, key, &v) || har_mp_read_uint(&v, &u))
        return 0xdeadbeef;
    return u;
}

static void expect_error(int code, unsigned id)
{
    har_frame f;
    int rc = -1;
    CHECK_EQ_INT(next_answer(&f, &rc), HAR_ERROR);
    CHECK_EQ_INT(rc, HAR_OK);
    CHECK_EQ_INT(payload_uint(&f, "code"), code);
    CHECK(payload_str(&f, "reason", har_error_name(code)));
    CHECK(f.operation_id[15] == id && f.operation_id[0] == 0xab);
}

int main(void)
{
    har_agent_config cfg;
    har_socket sock;
    uint8_t seed[32], payload[256], frame[HAR_MAX_FRAME];
    size_t plen, flen;
    har_frame f;
    int rc = -1;

    c = har_crypto_sodium();
    if (!c)
        return 1;
    memset(seed, 1, 32);
    har_signing_key_from_seed(c, seed, &controller);
    memset(seed, 2, 32);
    har_signing_key_from_seed(c, seed, &device);
    memset(seed, 3, 32);
    har_signing_key_from_seed(c, seed, &stranger);

    fake_init(&sock);
    memset(&cfg, 0, sizeof cfg);
    cfg.device_id = "dev-1";
    cfg.host = "broker";
    cfg.port = 1883;
    cfg.crypto = c;
    cfg.device_key = device;
    cfg.socket = &sock;
    cfg.monotonic_ms = fake_clock;
    cfg.realtime_ms = wall_clock;
    cfg.persist = persist;
    CHECK(har_agent_init(&agent, &cfg) == 0);
    {
        har_agent bad;
        cfg.device_id = "dev/1";
        CHECK(har_agent_init(&bad, &cfg) == -1);
        cfg.device_id = "dev-1";
    }
    CHECK(har_agent_trust(&agent, controller.public_key) == 0);
    CHECK(har_agent_register(&agent, "led.set", led_set, &led_state) == 0);
    CHECK(har_agent_register(&agent, "big", big_result, NULL) == 0);
    har_receiver_init(&controller_rx, c, "dev-1", HAR_CONTROLLER_TYPES);
    har_receiver_trust(&controller_rx, device.public_key);

    /* the status queued before the connection goes out once connected */
    CHECK(har_agent_report_status(&agent, "ok", 42, NULL, 0) == 0);
    CHECK(har_agent_report_status(&agent, "weird", 42, NULL, 0) == -1);
    fake_feed_connack();
    fake_feed_suback(agent.mqtt.next_packet_id); /* the status took packet id 1 */
    CHECK(har_agent_connect(&agent) == 0);
    CHECK_EQ_INT(next_answer(&f, &rc), HAR_STATUS);
    CHECK_EQ_INT(rc, HAR_OK);
    CHECK(payload_str(&f, "health", "ok") && payload_uint(&f, "uptime_s") == 42);

    /* execute led.set → ack done {on: true}, signed by the device */
    plen = execute_payload(payload, "dev-1", "led.set", 1);
    flen = build(frame, HAR_EXECUTE, &controller, 1, wall_ms, payload, plen);
    deliver(frame, flen);
    CHECK_EQ_INT(next_answer(&f, &rc), HAR_ACK);
    CHECK_EQ_INT(rc, HAR_OK);
    CHECK(payload_str(&f, "status", "done") && f.operation_id[15] == 1);
    CHECK(led_state == 1);
    {
        har_mp_reader v;
        uint32_t n;
        const char *k;
        uint32_t kl;
        int on = 0;
        CHECK(har_payload_find(f.payload, f.payload_len, "result", &v) == 0);
        CHECK(har_mp_read_map(&v, &n) == 0 && n == 1 && har_mp_read_str(&v, &k, &kl) == 0 &&
              har_mp_read_bool(&v, &on) == 0 && on == 1);
    }
    /* bad args → ack failed with the handler's error */
    plen = execute_payload(payload, "dev-1", "led.set", -1);
    flen = build(frame, HAR_EXECUTE, &controller, 2, wall_ms, payload, plen);
    deliver(frame, flen);
    CHECK_EQ_INT(next_answer(&f, &rc), HAR_ACK);
    CHECK(rc == HAR_OK && payload_str(&f, "status", "failed"));
    {
        har_mp_reader v;
        CHECK(har_payload_find(f.payload, f.payload_len, "error", &v) == 0);
    }
    /* unknown op → ack rejected, error code unknown_op */
    plen = execute_payload(payload, "dev-1", "fw.flash", -1);
    flen = build(frame, HAR_EXECUTE, &controller, 3, wall_ms, payload, plen);
    deliver(frame, flen);
    CHECK_EQ_INT(next_answer(&f, &rc), HAR_ACK);
    CHECK(rc == HAR_OK && payload_str(&f, "status", "rejected"));
    {
        har_mp_reader v;
        uint64_t code = 0;
        CHECK(har_payload_find(f.payload, f.payload_len, "error", &v) == 0);
        CHECK(har_payload_find(v.buf + v.pos, v.len - v.pos, "code", &v) == 0 &&
              har_mp_read_uint(&v, &code) == 0 && code == HAR_E_UNKNOWN_OP);
    }
    /* a result too large for a frame → failed, not a broken frame */
    plen = execute_payload(payload, "dev-1", "big", -1);
    flen = build(frame, HAR_EXECUTE, &controller, 4, wall_ms, payload, plen);
    deliver(frame, flen);
    CHECK_EQ_INT(next_answer(&f, &rc), HAR_ACK);
    CHECK(rc == HAR_OK && payload_str(&f, "status", "failed"));

    /* capability_query → capability_response with the ops */
    {
        har_mp_writer w;
        har_mp_reader v;
        uint32_t n;
        const char *s;
        uint32_t l;
        har_mp_writer_init(&w, payload, sizeof payload);
        har_mp_write_map(&w, 1);
        har_mp_write_cstr(&w, "device");
        har_mp_write_cstr(&w, "dev-1");
        flen = build(frame, HAR_CAPABILITY_QUERY, &controller, 5, wall_ms, payload, w.pos);
        deliver(frame, flen);
        CHECK_EQ_INT(next_answer(&f, &rc), HAR_CAPABILITY_RESPONSE);
        CHECK(rc == HAR_OK && payload_str(&f, "tier", "signed") && f.operation_id[15] == 5);
        CHECK(payload_uint(&f, "max_payload") == HAR_MAX_PAYLOAD);
        CHECK(har_payload_find(f.payload, f.payload_len, "ops", &v) == 0 &&
              har_mp_read_array(&v, &n) == 0 && n == 2 && har_mp_read_str(&v, &s, &l) == 0 &&
              har_mp_str_eq(s, l, "led.set"));
    }

    /* refusals, answered with error frames carrying the operation id and the code */
    plen = execute_payload(payload, "dev-1", "led.set", 0);
    flen = build(frame, HAR_EXECUTE, &stranger, 10, wall_ms, payload, plen);
    deliver(frame, flen);
    expect_error(HAR_E_UNKNOWN_KEY, 10);
    CHECK(led_state == 1);
    flen = build(frame, HAR_EXECUTE, &controller, 11, wall_ms, payload, plen);
    frame[flen - 1] ^= 1; /* forged: signature damaged */
    deliver(frame, flen);
    expect_error(HAR_E_BAD_SIGNATURE, 11);
    flen = build(frame, HAR_EXECUTE, &controller, 12, wall_ms - 301000, payload, plen);
    deliver(frame, flen);
    expect_error(HAR_E_STALE, 12);
    flen = build(frame, HAR_EXECUTE, &controller, 13, wall_ms, payload, plen);
    deliver(frame, flen);
    CHECK_EQ_INT(next_answer(&f, &rc), HAR_ACK);
    CHECK(led_state == 0);
    deliver(frame, flen); /* the same bytes again */
    expect_error(HAR_E_REPLAYED, 13);
    plen = execute_payload(payload, "dev-2", "led.set", 1);
    flen = build(frame, HAR_EXECUTE, &controller, 14, wall_ms, payload, plen);
    deliver(frame, flen);
    expect_error(HAR_E_WRONG_TARGET, 14);
    CHECK(led_state == 0);
    /* an unreadable frame gets no answer; an ack at a device gets none either */
    {
        uint8_t junk[10] = {1, 1, 1};
        size_t before = fake.out_len;
        deliver(junk, sizeof junk);
        payload[0] = 0x81;
        memcpy(payload + 1, "\xa6status\xa4" "done", 12);
        flen = build(frame, HAR_ACK, &controller, 15, wall_ms, payload, 13);
        deliver(frame, flen);
        /* only PUBACKs for the two deliveries went out */
        {
            size_t p = before;
            uint8_t tf;
            const uint8_t *body;
            uint32_t rem;
            int publishes = 0;
            while (fake_next_packet(&p, &tf, &body, &rem))
                publishes += (tf >> 4) == HAR_MQTT_PUBLISH;
            CHECK_EQ_INT(publishes, 0);
        }
        CHECK_EQ_INT(agent.last_error, HAR_E_UNEXPECTED_TYPE);
        out_pos = fake.out_len;
    }

    /* persistence: the device's own counter and the controller's last accepted sequence */
    {
        int i, own = -1, ctl = -1;
        for (i = 0; i < persisted; i++) {
            if (memcmp(persisted_ids[i], device.key_id, 8) == 0)
                own = i;
            if (memcmp(persisted_ids[i], controller.key_id, 8) == 0)
                ctl = i;
        }
        CHECK(own >= 0 && ctl >= 0);
        CHECK(own >= 0 && persisted_seqs[own] == agent.sequence);
        CHECK(ctl >= 0 && persisted_seqs[ctl] == controller_seq - 2); /* last accepted: 13 */
        /* a restarted agent restored from it continues the counter and refuses old frames */
        {
            static har_agent again;
            uint32_t own_seq = own >= 0 ? persisted_seqs[own] : 0;
            fake_init(&sock);
            CHECK(har_agent_init(&again, &cfg) == 0);
            har_agent_trust(&again, controller.public_key);
            CHECK(har_agent_restore_sequence(&again, device.key_id, own_seq) == 0);
            CHECK(har_agent_restore_sequence(&again, controller.key_id,
                                             ctl >= 0 ? persisted_seqs[ctl] : 0) == 0);
            CHECK_EQ_INT(again.sequence, own_seq);
            plen = execute_payload(payload, "dev-1", "led.set", 1);
            controller_seq = 5; /* an old sequence, fresh operation id */
            flen = build(frame, HAR_EXECUTE, &controller, 40, wall_ms, payload, plen);
            CHECK_EQ_INT(har_agent_handle_frame(&again, frame, flen), HAR_E_SEQUENCE);
        }
    }
    return check_report("agent");
}
