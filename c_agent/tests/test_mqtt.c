/* test_mqtt.c - MQTT 3.1.1 packet encoding and the client's behaviour against a scripted
 * in-memory broker: handshake, subscription, QoS 1 both ways, keepalive, reconnection with
 * backoff and resubscription, retransmission, partial reads, oversize packets. */
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "fake_socket.h"
#include "har_transport.h"

static int messages;
static char last_topic[64];
static uint8_t last_payload[64];
static size_t last_len;

static void on_message(void *ctx, const char *topic, size_t tl, const uint8_t *p, size_t n)
{
    (void)ctx;
    messages++;
    if (tl < sizeof last_topic) {
        memcpy(last_topic, topic, tl);
        last_topic[tl] = '\0';
    }
    last_len = n;
    if (n <= sizeof last_payload)
        memcpy(last_payload, p, n);
}

static void test_encoding(void)
{
    uint8_t b[128];
    uint8_t tf;
    uint32_t rem;
    size_t hl, n;
    static const uint8_t connect[] = {0x10, 0x11, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x02,
                                      0x00, 0x3c, 0x00, 0x05, 'd', 'e', 'v', '-', '1'};
    static const uint8_t connect_auth[] = {0x10, 0x15, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04,
                                           0xc2, 0x00, 0x0a, 0x00, 0x01, 'c', 0x00, 0x02, 'u',
                                           's', 0x00, 0x02, 'p', 'w'};
    static const uint8_t subscribe[] = {0x82, 0x0a, 0x00, 0x01, 0x00, 0x05, 'a', '/', 'b',
                                        '/', 'c', 0x01};
    static const uint8_t publish1[] = {0x32, 0x08, 0x00, 0x01, 't', 0x12, 0x34, 'x', 'y', 'z'};
    static const uint8_t publish0[] = {0x30, 0x04, 0x00, 0x01, 't', 'x'};
    static const uint8_t puback[] = {0x40, 0x02, 0x12, 0x34};

    CHECK_EQ_INT(har_mqtt_encode_connect(b, sizeof b, "dev-1", 60, 1, NULL, NULL),
                 sizeof connect);
    CHECK_MEM(b, connect, sizeof connect);
    CHECK_EQ_INT(har_mqtt_encode_connect(b, sizeof b, "c", 10, 1, "us", "pw"),
                 sizeof connect_auth);
    CHECK_MEM(b, connect_auth, sizeof connect_auth);
    CHECK_EQ_INT(har_mqtt_encode_connect(b, 10, "dev-1", 60, 1, NULL, NULL), 0);
    CHECK_EQ_INT(har_mqtt_encode_subscribe(b, sizeof b, 1, "a/b/c", 1), sizeof subscribe);
    CHECK_MEM(b, subscribe, sizeof subscribe);
    CHECK_EQ_INT(har_mqtt_encode_publish(b, sizeof b, "t", (const uint8_t *)"xyz", 3, 1,
                                         0x1234, 0),
                 sizeof publish1);
    CHECK_MEM(b, publish1, sizeof publish1);
    n = har_mqtt_encode_publish(b, sizeof b, "t", (const uint8_t *)"xyz", 3, 1, 0x1234, 1);
    CHECK(n == sizeof publish1 && b[0] == 0x3a); /* DUP */
    CHECK_EQ_INT(har_mqtt_encode_publish(b, sizeof b, "t", (const uint8_t *)"x", 1, 0, 0, 0),
                 sizeof publish0);
    CHECK_MEM(b, publish0, sizeof publish0);
    {
        uint16_t id = 0x1234;
        CHECK_EQ_INT(har_mqtt_encode_simple(b, sizeof b, HAR_MQTT_PUBACK, 0, &id), 4);
        CHECK_MEM(b, puback, 4);
        CHECK_EQ_INT(har_mqtt_encode_simple(b, sizeof b, HAR_MQTT_PINGREQ, 0, NULL), 2);
        CHECK(b[0] == 0xc0 && b[1] == 0x00);
        CHECK_EQ_INT(har_mqtt_encode_simple(b, sizeof b, HAR_MQTT_DISCONNECT, 0, NULL), 2);
        CHECK(b[0] == 0xe0);
    }
    /* a 200-byte payload needs a 2-byte remaining length */
    {
        uint8_t big[300], payload[200];
        memset(payload, 'p', sizeof payload);
        n = har_mqtt_encode_publish(big, sizeof big, "t", payload, sizeof payload, 0, 0, 0);
        CHECK(n == 3 + 3 + 200 && big[1] == 0x80 + (203 & 0x7f) && big[2] == 1);
        CHECK_EQ_INT(har_mqtt_parse_header(big, n, &tf, &rem, &hl), 1);
        CHECK(tf == 0x30 && rem == 203 && hl == 3);
        CHECK_EQ_INT(har_mqtt_parse_header(big, 2, &tf, &rem, &hl), 0); /* incomplete */
    }
    {
        static const uint8_t bad[] = {0x30, 0xff, 0xff, 0xff, 0xff, 0x01};
        CHECK_EQ_INT(har_mqtt_parse_header(bad, sizeof bad, &tf, &rem, &hl), -1);
    }
}

/* Counts sent packets of a type since *pos; remembers the last one's body. */
static int count_sent(size_t *pos, uint8_t type, const uint8_t **last_body, uint32_t *last_rem,
                      uint8_t *last_flags)
{
    uint8_t tf;
    const uint8_t *body;
    uint32_t rem;
    int n = 0;
    while (fake_next_packet(pos, &tf, &body, &rem)) {
        if ((tf >> 4) == type) {
            n++;
            if (last_body)
                *last_body = body;
            if (last_rem)
                *last_rem = rem;
            if (last_flags)
                *last_flags = tf & 0x0f;
        }
    }
    return n;
}

static void test_client(void)
{
    static har_mqtt m;
    har_socket sock;
    size_t pos = 0, p2;
    const uint8_t *body;
    uint32_t rem;
    uint8_t flags;
    static const uint8_t in_pub[] = {0x32, 0x10, 0x00, 0x06, 'd', 'e', 'v', '/', 'd', 'n',
                                     0x00, 0x07, 'h', 'e', 'l', 'l', 'o', '!'};

    fake_init(&sock);
    har_mqtt_init(&m, &sock, fake_clock, "broker", 1883, "dev-1", on_message, NULL);
    m.keepalive_s = 10;
    CHECK(har_mqtt_subscribe(&m, "dev/dn") == 0);

    /* handshake: CONNECT, CONNACK, SUBSCRIBE, SUBACK; the broker's bytes arrive one by one */
    fake_feed_connack();
    fake_feed_suback(1);
    fake.chunk = 1;
    CHECK_EQ_INT(har_mqtt_connect(&m), 0);
    fake.chunk = 0;
    CHECK(m.connected && m.connections == 1);
    p2 = 0;
    CHECK_EQ_INT(count_sent(&p2, HAR_MQTT_CONNECT, NULL, NULL, NULL), 1);
    p2 = 0;
    CHECK_EQ_INT(count_sent(&p2, HAR_MQTT_SUBSCRIBE, &body, &rem, &flags), 1);
    CHECK(flags == 0x2 && rem == 2 + 2 + 6 + 1 && body[rem - 1] == 1); /* QoS 1 */
    pos = fake.out_len;

    /* an incoming QoS 1 message is delivered and acknowledged with its packet id */
    fake_feed(in_pub, sizeof in_pub);
    CHECK_EQ_INT(har_mqtt_step(&m, 100), 0);
    CHECK(messages == 1 && strcmp(last_topic, "dev/dn") == 0 && last_len == 6 &&
          memcmp(last_payload, "hello!", 6) == 0);
    CHECK_EQ_INT(count_sent(&pos, HAR_MQTT_PUBACK, &body, &rem, NULL), 1);
    CHECK(rem == 2 && body[0] == 0x00 && body[1] == 0x07);

    /* an outgoing QoS 1 message stays in flight until its PUBACK */
    CHECK(har_mqtt_publish(&m, "dev/up", (const uint8_t *)"abc", 3, 1) == 0);
    CHECK_EQ_INT(har_mqtt_inflight_count(&m), 1);
    CHECK_EQ_INT(count_sent(&pos, HAR_MQTT_PUBLISH, &body, &rem, &flags), 1);
    CHECK(flags == 0x2 && rem == 2 + 6 + 2 + 3);
    {
        uint8_t ack[4] = {0x40, 0x02, body[8], body[9]};
        uint8_t wrong[4] = {0x40, 0x02, body[8], (uint8_t)(body[9] + 1)};
        fake_feed(wrong, 4);
        har_mqtt_step(&m, 10);
        CHECK_EQ_INT(har_mqtt_inflight_count(&m), 1);
        fake_feed(ack, 4);
        har_mqtt_step(&m, 10);
        CHECK_EQ_INT(har_mqtt_inflight_count(&m), 0);
    }
    /* QoS 0 goes out without a packet id and is not kept */
    CHECK(har_mqtt_publish(&m, "dev/up", (const uint8_t *)"q0", 2, 0) == 0);
    CHECK_EQ_INT(count_sent(&pos, HAR_MQTT_PUBLISH, &body, &rem, &flags), 1);
    CHECK(flags == 0 && har_mqtt_inflight_count(&m) == 0);
    /* the inflight window is bounded */
    {
        int i, ok = 1;
        for (i = 0; i < HAR_MQTT_INFLIGHT; i++)
            ok &= har_mqtt_publish(&m, "dev/up", (const uint8_t *)"w", 1, 1) == 0;
        CHECK(ok);
        CHECK(har_mqtt_publish(&m, "dev/up", (const uint8_t *)"w", 1, 1) == -1);
        /* acknowledge them all */
        while (fake_next_packet(&pos, &flags, &body, &rem)) {
            uint8_t ack[4] = {0x40, 0x02, body[8], body[9]};
            fake_feed(ack, 4);
        }
        har_mqtt_step(&m, 10);
        CHECK_EQ_INT(har_mqtt_inflight_count(&m), 0);
    }

    /* keepalive: idle for 3/4 of it sends PINGREQ; PINGRESP clears it */
    {
        uint64_t start = fake_now;
        while (fake_now - start < 8000 && fake.out_len == pos)
            har_mqtt_step(&m, 1000);
        CHECK_EQ_INT(count_sent(&pos, HAR_MQTT_PINGREQ, NULL, NULL, NULL), 1);
        CHECK(m.ping_sent != 0);
        {
            static const uint8_t pingresp[] = {0xd0, 0x00};
            fake_feed(pingresp, 2);
        }
        har_mqtt_step(&m, 10);
        CHECK(m.ping_sent == 0 && m.connected);
    }
    /* no PINGRESP within the keepalive: the connection is dropped */
    {
        int steps = 0;
        while (m.connected && steps++ < 100)
            har_mqtt_step(&m, 1000);
        CHECK(!m.connected && !fake.open);
    }

    /* reconnection: refused attempts back off exponentially up to the maximum */
    {
        uint64_t prev_attempt = 0, gaps[6];
        int i, n = 0, attempts_before = fake.connects;
        fake.refuse_connect = 1;
        m.backoff_max_ms = 4000;
        /* a QoS 1 message published while disconnected is queued */
        CHECK(har_mqtt_publish(&m, "dev/up", (const uint8_t *)"later", 5, 1) == 0);
        CHECK(har_mqtt_publish(&m, "dev/up", (const uint8_t *)"q0", 2, 0) == -1);
        while (n < 6) {
            int before = fake.connects;
            har_mqtt_step(&m, 100000);
            if (fake.connects != before) {
                if (prev_attempt)
                    gaps[n++] = fake_now - prev_attempt;
                prev_attempt = fake_now;
            }
        }
        CHECK(fake.connects - attempts_before >= 6);
        for (i = 1; i < 6; i++)
            CHECK(gaps[i] >= gaps[i - 1]);
        CHECK(gaps[0] >= 500 && gaps[5] == 4000);
        /* the broker is back: connect, resubscribe, retransmit with DUP */
        fake.refuse_connect = 0;
        fake.out_len = 0;
        pos = 0;
        fake_feed_connack();
        fake_feed_suback(m.next_packet_id); /* the id the client will use next */
        for (i = 0; i < 20 && !m.connected; i++)
            har_mqtt_step(&m, 5000);
        CHECK(m.connected && m.connections == 2);
        p2 = 0;
        CHECK_EQ_INT(count_sent(&p2, HAR_MQTT_SUBSCRIBE, NULL, NULL, NULL), 1);
        p2 = 0;
        CHECK_EQ_INT(count_sent(&p2, HAR_MQTT_PUBLISH, &body, &rem, &flags), 1);
        CHECK(flags == 0xa && memcmp(body + 10, "later", 5) == 0); /* DUP, QoS 1 */
        CHECK(m.backoff_ms == m.backoff_min_ms);
    }

    /* a CONNACK refusal fails the connection */
    {
        static const uint8_t refused[] = {0x20, 0x02, 0x00, 0x05};
        har_mqtt_disconnect(&m);
        fake_feed(refused, sizeof refused);
        CHECK_EQ_INT(har_mqtt_connect(&m), -1);
        CHECK(!m.connected);
    }

    /* an incoming packet larger than the buffer is acknowledged and skipped; the next one
     * is still delivered */
    {
        static uint8_t big[HAR_MQTT_BUF + 300];
        uint32_t remaining = (uint32_t)(sizeof big - 4);
        int before;
        fake_feed_connack();
        fake_feed_suback(m.next_packet_id);
        CHECK_EQ_INT(har_mqtt_connect(&m), 0);
        pos = fake.out_len;
        memset(big, 'z', sizeof big);
        big[0] = 0x32;
        big[1] = (uint8_t)(0x80 | (remaining & 0x7f));
        big[2] = (uint8_t)(0x80 | ((remaining >> 7) & 0x7f));
        big[3] = (uint8_t)(remaining >> 14);
        big[4] = 0x00;
        big[5] = 0x01;
        big[6] = 't';
        big[7] = 0x00;
        big[8] = 0x09;
        fake_feed(big, sizeof big);
        fake_feed(in_pub, sizeof in_pub);
        before = messages;
        fake.chunk = 700;
        {
            int i;
            for (i = 0; i < 10; i++)
                har_mqtt_step(&m, 10);
        }
        fake.chunk = 0;
        CHECK(m.connected);
        CHECK_EQ_INT(messages, before + 1);
        CHECK(strcmp(last_topic, "dev/dn") == 0);
        CHECK_EQ_INT(count_sent(&pos, HAR_MQTT_PUBACK, &body, &rem, NULL), 2);
    }
    /* the peer closing the socket is noticed */
    fake.open = 0;
    CHECK_EQ_INT(har_mqtt_step(&m, 10), -1);
    CHECK(!m.connected);
}

int main(void)
{
    test_encoding();
    test_client();
    return check_report("mqtt");
}
