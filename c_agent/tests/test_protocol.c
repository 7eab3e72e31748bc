/* test_protocol.c - frame codec, receiver state (seen ring, sequences, persistence), key files. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "har_keyfile.h"
#include "har_protocol.h"

static const har_crypto *c;
static har_signing_key controller, stranger;
static const uint8_t payload_q[] = {0x81, 0xa6, 'd', 'e', 'v', 'i', 'c', 'e', 0xa5, 'd', 'e', 'v',
                                    '-', '1'}; /* {"device": "dev-1"} */

static void op_id(uint8_t id[16], unsigned n)
{
    memset(id, 0, 16);
    id[14] = (uint8_t)(n >> 8);
    id[15] = (uint8_t)n;
}

static size_t query(uint8_t *out, const har_signing_key *k, unsigned id, uint64_t ts,
                    uint32_t seq)
{
    har_frame f;
    uint8_t op[16];
    size_t len = 0;
    op_id(op, id);
    har_frame_prepare(&f, HAR_CAPABILITY_QUERY, op, ts, seq, k, payload_q, sizeof payload_q);
    CHECK_EQ_INT(har_frame_encode(&f, c, k, out, HAR_MAX_FRAME, &len), HAR_OK);
    return len;
}

static void test_varint_and_names(void)
{
    uint8_t v[4];
    CHECK(har_varint_encode(0, v) == 1 && v[0] == 0);
    CHECK(har_varint_encode(127, v) == 1 && v[0] == 0x7f);
    CHECK(har_varint_encode(128, v) == 2 && v[0] == 0x80 && v[1] == 0x01);
    CHECK(har_varint_encode(16383, v) == 2 && v[0] == 0xff && v[1] == 0x7f);
    CHECK(har_varint_encode(16384, v) == 3);
    CHECK(har_varint_encode(268435455, v) == 4 && v[3] == 0x7f);
    CHECK(har_varint_encode(268435456, v) == 0);
    CHECK(strcmp(har_error_name(HAR_E_MALFORMED), "malformed") == 0);
    CHECK(strcmp(har_error_name(HAR_E_UNEXPECTED_TYPE), "unexpected_type") == 0);
    CHECK(har_error_name(0) == NULL && har_error_name(18) == NULL);
    CHECK(har_type_from_name("capability_response") == HAR_CAPABILITY_RESPONSE);
    CHECK(har_type_from_name("nope") == 0);
    CHECK(har_error_answerable(HAR_E_BAD_SIGNATURE, HAR_EXECUTE));
    CHECK(har_error_answerable(HAR_E_WRONG_TARGET, HAR_CAPABILITY_QUERY));
    CHECK(!har_error_answerable(HAR_E_OVERSIZE, HAR_EXECUTE));
    CHECK(!har_error_answerable(HAR_E_BAD_SIGNATURE, HAR_ACK));
}

static void test_codec(void)
{
    uint8_t buf[HAR_MAX_FRAME], small[60];
    har_frame f, d;
    uint8_t op[16];
    size_t len = 0;
    op_id(op, 1);
    har_frame_prepare(&f, HAR_CAPABILITY_QUERY, op, 1764000000000ull, 7, &controller, payload_q,
                      sizeof payload_q);
    CHECK_EQ_INT(har_frame_encode(&f, c, &controller, buf, sizeof buf, &len), HAR_OK);
    CHECK_EQ_INT(len, HAR_HEADER_LEN + 1 + sizeof payload_q + 64);
    CHECK_EQ_INT(har_frame_decode(buf, len, 1024, &d), HAR_OK);
    CHECK(d.type == HAR_CAPABILITY_QUERY && d.flags == HAR_FLAG_SIGNED && d.sequence == 7);
    CHECK(d.timestamp == 1764000000000ull && memcmp(d.key_id, controller.key_id, 8) == 0);
    CHECK(d.payload_len == sizeof payload_q && d.signature == buf + len - 64);
    CHECK(c->verify(controller.public_key, buf, d.signed_len, d.signature) == 0);
    /* too small an output buffer: refused, not overrun */
    CHECK_EQ_INT(har_frame_encode(&f, c, &controller, small, sizeof small, &len), HAR_E_BUFFER);
    /* unsigned: no signature, zero key id */
    har_frame_prepare(&f, HAR_CAPABILITY_QUERY, op, 1, 1, NULL, payload_q, sizeof payload_q);
    CHECK_EQ_INT(har_frame_encode(&f, c, NULL, buf, sizeof buf, &len), HAR_OK);
    CHECK_EQ_INT(len, HAR_HEADER_LEN + 1 + sizeof payload_q);
    CHECK_EQ_INT(har_frame_decode(buf, len, 1024, &d), HAR_OK);
    CHECK(d.signature == NULL && d.flags == 0);
    /* every strict prefix of a valid frame is truncated, never accepted */
    {
        size_t cut;
        int all_truncated = 1;
        len = query(buf, &controller, 2, 1, 1);
        for (cut = 0; cut < len; cut++)
            if (har_frame_decode(buf, cut, 1024, &d) != HAR_E_TRUNCATED)
                all_truncated = 0;
        CHECK(all_truncated);
    }
    /* an oversize length is refused from the varint alone */
    CHECK_EQ_INT(har_frame_decode(buf, len, sizeof payload_q - 1, &d), HAR_E_OVERSIZE);
}

static int persisted_calls;
static uint8_t persisted_key[8];
static uint32_t persisted_seq;

static void persist(void *ctx, const uint8_t key_id[8], uint32_t seq)
{
    CHECK(ctx == (void *)&persisted_calls);
    persisted_calls++;
    memcpy(persisted_key, key_id, 8);
    persisted_seq = seq;
}

static void test_receiver_state(void)
{
    static har_receiver r;
    uint8_t buf[HAR_MAX_FRAME], first[HAR_MAX_FRAME];
    size_t len, first_len;
    har_frame f;
    const uint64_t now = 1764000000000ull;
    unsigned i;

    har_receiver_init(&r, c, "dev-1", HAR_DEVICE_TYPES);
    CHECK(har_receiver_trust(&r, controller.public_key) == 0);
    r.persist = persist;
    r.persist_ctx = &persisted_calls;
    first_len = query(first, &controller, 1, now, 1);
    CHECK_EQ_INT(har_receiver_check(&r, first, first_len, now, &f), HAR_OK);
    CHECK(persisted_calls == 1 && persisted_seq == 1 &&
          memcmp(persisted_key, controller.key_id, 8) == 0);
    /* fill the seen ring past its capacity: the first id is evicted, yet its replay is
     * still refused by the sequence rule */
    for (i = 2; i < HAR_SEEN_CAPACITY + 10; i++) {
        len = query(buf, &controller, i, now, i);
        CHECK_EQ_INT(har_receiver_check(&r, buf, len, now, &f), HAR_OK);
    }
    CHECK_EQ_INT(r.seen_count, HAR_SEEN_CAPACITY);
    CHECK_EQ_INT(har_receiver_check(&r, first, first_len, now, &f), HAR_E_SEQUENCE);
    /* a recent id is still in the ring */
    CHECK_EQ_INT(har_receiver_check(&r, buf, len, now, &f), HAR_E_REPLAYED);
    /* entries older than the window are dropped */
    len = query(buf, &controller, 5000, now + 400000, 5000);
    CHECK_EQ_INT(har_receiver_check(&r, buf, len, now + 400000, &f), HAR_OK);
    CHECK_EQ_INT(r.seen_count, 1);

    /* a reboot: a fresh receiver restored from the persisted sequence refuses old frames */
    har_receiver_init(&r, c, "dev-1", HAR_DEVICE_TYPES);
    har_receiver_trust(&r, controller.public_key);
    CHECK(har_receiver_set_sequence(&r, persisted_key, persisted_seq) == 0);
    len = query(buf, &controller, 6000, now + 400000, persisted_seq);
    CHECK_EQ_INT(har_receiver_check(&r, buf, len, now + 400000, &f), HAR_E_SEQUENCE);
    len = query(buf, &controller, 6001, now + 400000, persisted_seq + 1);
    CHECK_EQ_INT(har_receiver_check(&r, buf, len, now + 400000, &f), HAR_OK);

    /* a stranger's frame is refused before anything is parsed, and its operation id is
     * readable for the error answer */
    len = query(buf, &stranger, 77, now, 1);
    CHECK_EQ_INT(har_receiver_check(&r, buf, len, now, &f), HAR_E_UNKNOWN_KEY);
    CHECK(f.operation_id[15] == 77 && har_error_answerable(HAR_E_UNKNOWN_KEY, f.type));
    /* trust is bounded */
    for (i = 1; i < HAR_MAX_TRUSTED_KEYS; i++)
        CHECK(har_receiver_trust(&r, stranger.public_key) == 0);
    CHECK(har_receiver_trust(&r, stranger.public_key) == -1);
}

static void test_keyfile(void)
{
    char text[512], hex_seed[65], hex_pub[65], hex_id[17];
    har_keyfile k;
    int n;
    har_hex_encode(controller.seed, 32, hex_seed);
    har_hex_encode(controller.public_key, 32, hex_pub);
    har_hex_encode(controller.key_id, 8, hex_id);
    n = snprintf(text, sizeof text,
                 "# HARCP Ed25519 key\nalgorithm = \"ed25519\"\nkey_id = \"%s\"\n"
                 "public = \"%s\"\nsecret = \"%s\"    # only in the private file\n",
                 hex_id, hex_pub, hex_seed);
    CHECK_EQ_INT(har_keyfile_parse(text, (size_t)n, c, &k), HAR_KEYFILE_OK);
    CHECK(k.has_secret && memcmp(k.seed, controller.seed, 32) == 0);
    CHECK_MEM(k.public_key, controller.public_key, 32);
    /* the public file */
    n = snprintf(text, sizeof text, "algorithm = \"ed25519\"\r\nkey_id = \"%s\"\r\npublic = \"%s\"\r\n",
                 hex_id, hex_pub);
    CHECK_EQ_INT(har_keyfile_parse(text, (size_t)n, c, &k), HAR_KEYFILE_OK);
    CHECK(!k.has_secret);
    /* faults */
    n = snprintf(text, sizeof text, "algorithm = \"rsa\"\nkey_id = \"%s\"\npublic = \"%s\"\n",
                 hex_id, hex_pub);
    CHECK_EQ_INT(har_keyfile_parse(text, (size_t)n, c, &k), HAR_KEYFILE_ALGORITHM);
    n = snprintf(text, sizeof text, "algorithm = \"ed25519\"\npublic = \"%s\"\n", hex_pub);
    CHECK_EQ_INT(har_keyfile_parse(text, (size_t)n, c, &k), HAR_KEYFILE_MISSING);
    n = snprintf(text, sizeof text, "algorithm = ed25519\n");
    CHECK_EQ_INT(har_keyfile_parse(text, (size_t)n, c, &k), HAR_KEYFILE_SYNTAX);
    n = snprintf(text, sizeof text, "algorithm = \"ed25519\"\nkey_id = \"%.14s\"\npublic = \"%s\"\n",
                 hex_id, hex_pub);
    CHECK_EQ_INT(har_keyfile_parse(text, (size_t)n, c, &k), HAR_KEYFILE_BAD_VALUE);
    hex_id[0] = hex_id[0] == '0' ? '1' : '0';
    n = snprintf(text, sizeof text, "algorithm = \"ed25519\"\nkey_id = \"%s\"\npublic = \"%s\"\n",
                 hex_id, hex_pub);
    CHECK_EQ_INT(har_keyfile_parse(text, (size_t)n, c, &k), HAR_KEYFILE_MISMATCH);
    /* a secret that does not give the public key */
    har_hex_encode(controller.key_id, 8, hex_id);
    har_hex_encode(stranger.seed, 32, hex_seed);
    n = snprintf(text, sizeof text,
                 "algorithm = \"ed25519\"\nkey_id = \"%s\"\npublic = \"%s\"\nsecret = \"%s\"\n",
                 hex_id, hex_pub, hex_seed);
    CHECK_EQ_INT(har_keyfile_parse(text, (size_t)n, c, &k), HAR_KEYFILE_MISMATCH);

    /* files: a secret readable by others is refused; 0600 is accepted */
    {
        char path[] = "/tmp/har_keyfile_XXXXXX";
        int fd = mkstemp(path);
        har_hex_encode(controller.seed, 32, hex_seed);
        n = snprintf(text, sizeof text,
                     "algorithm = \"ed25519\"\nkey_id = \"%s\"\npublic = \"%s\"\nsecret = \"%s\"\n",
                     hex_id, hex_pub, hex_seed);
        CHECK(fd >= 0 && write(fd, text, (size_t)n) == n);
        close(fd);
        CHECK(chmod(path, 0600) == 0);
        CHECK_EQ_INT(har_keyfile_load(path, c, &k), HAR_KEYFILE_OK);
        CHECK(chmod(path, 0644) == 0);
        CHECK_EQ_INT(har_keyfile_load(path, c, &k), HAR_KEYFILE_PERMISSIONS);
        unlink(path);
        CHECK_EQ_INT(har_keyfile_load(path, c, &k), HAR_KEYFILE_IO);
    }
}

int main(void)
{
    uint8_t seed[32];
    c = har_crypto_sodium();
    if (!c)
        return 1;
    memset(seed, 1, sizeof seed);
    har_signing_key_from_seed(c, seed, &controller);
    memset(seed, 2, sizeof seed);
    har_signing_key_from_seed(c, seed, &stranger);
    test_varint_and_names();
    test_codec();
    test_receiver_state();
    test_keyfile();
    return check_report("protocol");
}
