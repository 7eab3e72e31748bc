/* test_vectors.c - runs every shared HARCP vector (tests/vectors/harcp) through the C codec
 * and the generic receiver (device and controller roles): decode, re-encode and sign, accept;
 * and every reject vector must fail with exactly the named error. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "har_keyfile.h"
#include "har_protocol.h"
#include "json.h"

static const har_crypto *crypto;
static json *keys;
static int vector_failures;

static uint8_t *hex_alloc(const json *v, size_t *len)
{
    size_t n;
    uint8_t *out;
    if (!v || v->kind != J_STR) {
        *len = 0;
        return NULL;
    }
    n = strlen(v->str) / 2;
    out = malloc(n ? n : 1);
    if (!out || har_hex_decode(v->str, strlen(v->str), out, n)) {
        free(out);
        *len = 0;
        return NULL;
    }
    *len = n;
    return out;
}

static int hex_field(const json *v, uint8_t *out, size_t n)
{
    if (!v || v->kind != J_STR)
        return -1;
    return har_hex_decode(v->str, strlen(v->str), out, n);
}

/* Sets up a receiver from a vector's R; returns 0 and the clock in *now. */
static int make_receiver(const json *R, har_receiver *r, uint64_t *now, const char *name)
{
    const json *role = json_get(R, "role"), *tk = json_get(R, "trusted_keys"),
               *ls = json_get(R, "last_sequence"), *seen = json_get(R, "seen_operations"),
               *dev = json_get(R, "device_id");
    size_t i;
    uint32_t types;
    if (!role || role->kind != J_STR || !dev || dev->kind != J_STR) {
        fprintf(stderr, "%s: receiver without role/device_id\n", name);
        return -1;
    }
    if (strcmp(role->str, "device") == 0)
        types = HAR_DEVICE_TYPES;
    else if (strcmp(role->str, "controller") == 0)
        types = HAR_CONTROLLER_TYPES;
    else {
        fprintf(stderr, "%s: unknown role %s\n", name, role->str);
        return -1;
    }
    har_receiver_init(r, crypto, dev->str, types);
    *now = json_u64(json_get(R, "now_ms"));
    r->window_ms = json_u64(json_get(R, "window_ms"));
    r->max_payload = (size_t)json_u64(json_get(R, "max_payload"));
    r->allow_unsigned = json_get(R, "allow_unsigned") && json_get(R, "allow_unsigned")->boolean;
    for (i = 0; tk && i < tk->n; i++) {
        const json *k = json_get(keys, tk->items[i]->str);
        uint8_t pub[32];
        if (!k || hex_field(json_get(k, "public"), pub, 32) || har_receiver_trust(r, pub)) {
            fprintf(stderr, "%s: cannot trust key %s\n", name, tk->items[i]->str);
            return -1;
        }
    }
    for (i = 0; ls && i < ls->n; i++) {
        uint8_t kid[8];
        if (har_hex_decode(ls->keys[i], strlen(ls->keys[i]), kid, 8) ||
            har_receiver_set_sequence(r, kid, (uint32_t)json_u64(ls->items[i]))) {
            fprintf(stderr, "%s: bad last_sequence\n", name);
            return -1;
        }
    }
    for (i = 0; seen && i < seen->n; i++) {
        uint8_t op[16];
        if (hex_field(seen->items[i], op, 16)) {
            fprintf(stderr, "%s: bad seen operation\n", name);
            return -1;
        }
        /* seen "within the window": as if accepted with a timestamp of now */
        har_receiver_remember(r, op, *now, *now);
    }
    return 0;
}

static void fail_vector(const char *name, const char *what)
{
    vector_failures++;
    fprintf(stderr, "vector %s: %s\n", name, what);
}

static int run_valid(const json *v)
{
    const char *name = json_get(v, "name")->str;
    const json *fields = json_get(v, "fields"), *signer = json_get(v, "signer");
    size_t len, plen, out_len;
    uint8_t *frame = hex_alloc(json_get(v, "frame"), &len);
    uint8_t *payload = hex_alloc(json_get(fields, "payload_hex"), &plen);
    uint8_t op[16], kid[8], *out = malloc(len + 64);
    har_frame f, enc;
    har_receiver r;
    uint64_t now;
    int rc, before = vector_failures;

    if (!frame || !out) {
        fail_vector(name, "no frame");
        free(frame);
        free(payload);
        free(out);
        return -1;
    }
    /* 1. decoding gives exactly the fields */
    rc = har_frame_decode(frame, len, 1u << 28, &f);
    if (rc != HAR_OK) {
        fail_vector(name, har_error_name(rc));
    } else {
        hex_field(json_get(fields, "operation_id"), op, 16);
        hex_field(json_get(fields, "key_id"), kid, 8);
        if (f.version != json_u64(json_get(fields, "version")))
            fail_vector(name, "version differs");
        if (!har_type_name(f.type) ||
            strcmp(har_type_name(f.type), json_get(fields, "type")->str) != 0)
            fail_vector(name, "type differs");
        if (f.flags != json_u64(json_get(fields, "flags")))
            fail_vector(name, "flags differ");
        if (memcmp(f.operation_id, op, 16))
            fail_vector(name, "operation id differs");
        if (f.timestamp != json_u64(json_get(fields, "timestamp")))
            fail_vector(name, "timestamp differs");
        if (f.sequence != json_u64(json_get(fields, "sequence")))
            fail_vector(name, "sequence differs");
        if (memcmp(f.key_id, kid, 8))
            fail_vector(name, "key id differs");
        if (f.payload_len != plen || (plen && memcmp(f.payload, payload, plen)))
            fail_vector(name, "payload differs");
        if ((f.flags & HAR_FLAG_SIGNED) && f.signature != frame + len - 64)
            fail_vector(name, "signature is not the last 64 bytes");
    }
    /* 2. encoding the fields (and signing with the signer's seed) gives the frame */
    memset(&enc, 0, sizeof enc);
    enc.version = (uint8_t)json_u64(json_get(fields, "version"));
    enc.type = (uint8_t)har_type_from_name(json_get(fields, "type")->str);
    enc.flags = (uint8_t)json_u64(json_get(fields, "flags"));
    memcpy(enc.operation_id, op, 16);
    enc.timestamp = json_u64(json_get(fields, "timestamp"));
    enc.sequence = (uint32_t)json_u64(json_get(fields, "sequence"));
    memcpy(enc.key_id, kid, 8);
    enc.payload = payload;
    enc.payload_len = plen;
    if (signer && signer->kind == J_STR) {
        har_signing_key key;
        uint8_t seed[32];
        const json *k = json_get(keys, signer->str);
        if (!k || hex_field(json_get(k, "seed"), seed, 32) ||
            har_signing_key_from_seed(crypto, seed, &key)) {
            fail_vector(name, "unknown signer");
        } else {
            if (memcmp(key.key_id, kid, 8))
                fail_vector(name, "signer's key id differs from the frame's");
            rc = har_frame_encode(&enc, crypto, &key, out, len + 64, &out_len);
            if (rc || out_len != len || memcmp(out, frame, len))
                fail_vector(name, "encoding + signing does not give the frame");
        }
    } else {
        rc = har_frame_encode(&enc, crypto, NULL, out, len + 64, &out_len);
        if (rc || out_len != len || memcmp(out, frame, len))
            fail_vector(name, "encoding does not give the frame");
    }
    /* 3. the receiver accepts it; the same bytes again are refused */
    if (make_receiver(json_get(v, "receiver"), &r, &now, name) == 0) {
        rc = har_receiver_check(&r, frame, len, now, &f);
        if (rc != HAR_OK) {
            char msg[96];
            snprintf(msg, sizeof msg, "receiver refused it: %s (%d)", har_error_name(rc), rc);
            fail_vector(name, msg);
        } else {
            int again = har_receiver_check(&r, frame, len, now, &f);
            int fresh = f.type == HAR_EXECUTE || f.type == HAR_CAPABILITY_QUERY ||
                        f.type == HAR_STATUS;
            if (again != (fresh ? HAR_E_REPLAYED : HAR_E_SEQUENCE))
                fail_vector(name, "a second delivery was not refused as replayed/sequence");
        }
    } else {
        fail_vector(name, "bad receiver state");
    }
    free(frame);
    free(payload);
    free(out);
    return vector_failures == before ? 0 : -1;
}

static int run_reject(const json *v)
{
    const char *name = json_get(v, "name")->str;
    const char *want = json_get(v, "error")->str;
    int code = (int)json_u64(json_get(v, "code"));
    size_t len;
    uint8_t *frame = hex_alloc(json_get(v, "frame"), &len);
    har_receiver r;
    har_frame f;
    uint64_t now;
    int rc, before = vector_failures;

    if (!frame && len == 0 && json_get(v, "frame")->str[0] != '\0') {
        fail_vector(name, "bad frame hex");
        return -1;
    }
    if (!har_error_name(code) || strcmp(har_error_name(code), want) != 0)
        fail_vector(name, "the vector's code and name disagree with har_error_name()");
    if (make_receiver(json_get(v, "receiver"), &r, &now, name) == 0) {
        static const uint8_t empty[1] = {0};
        rc = har_receiver_check(&r, frame ? frame : empty, len, now, &f);
        if (rc != code) {
            char msg[128];
            snprintf(msg, sizeof msg, "expected %s (%d), got %s (%d)", want, code,
                     rc ? har_error_name(rc) : "accepted", rc);
            fail_vector(name, msg);
        }
    } else {
        fail_vector(name, "bad receiver state");
    }
    free(frame);
    return vector_failures == before ? 0 : -1;
}

static json *load(const char *dir, const char *file)
{
    char path[1024];
    json *j;
    snprintf(path, sizeof path, "%s/%s", dir, file);
    j = json_load(path);
    if (!j)
        fprintf(stderr, "cannot read %s\n", path);
    return j;
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "../tests/vectors/harcp";
    json *valid, *reject;
    const json *list;
    size_t i, nv = 0, nr = 0, passed_v = 0, passed_r = 0;

    crypto = har_crypto_sodium();
    CHECK(crypto != NULL);
    keys = load(dir, "keys.json");
    valid = load(dir, "valid.json");
    reject = load(dir, "reject.json");
    if (!crypto || !keys || !valid || !reject) {
        printf("vectors: cannot load the vectors from %s\n", dir);
        return 1;
    }
    /* keys.json: each key id is SHA-256(public)[0..8), each public the seed's */
    for (i = 0; i < keys->n; i++) {
        uint8_t seed[32], pub[32], kid[8];
        har_signing_key k;
        CHECK(hex_field(json_get(keys->items[i], "seed"), seed, 32) == 0);
        CHECK(hex_field(json_get(keys->items[i], "public"), pub, 32) == 0);
        CHECK(hex_field(json_get(keys->items[i], "key_id"), kid, 8) == 0);
        CHECK(har_signing_key_from_seed(crypto, seed, &k) == 0);
        CHECK_MEM(k.public_key, pub, 32);
        CHECK_MEM(k.key_id, kid, 8);
    }
    list = json_get(valid, "vectors");
    for (i = 0; list && i < list->n; i++, nv++)
        passed_v += run_valid(list->items[i]) == 0;
    list = json_get(reject, "vectors");
    for (i = 0; list && i < list->n; i++, nr++)
        passed_r += run_reject(list->items[i]) == 0;
    CHECK(nv > 0 && nr > 0);
    CHECK_EQ_INT(passed_v, nv);
    CHECK_EQ_INT(passed_r, nr);
    printf("vectors: valid %zu/%zu, reject %zu/%zu passed\n", passed_v, nv, passed_r, nr);
    json_free(keys);
    json_free(valid);
    json_free(reject);
    return check_report("vectors");
}
