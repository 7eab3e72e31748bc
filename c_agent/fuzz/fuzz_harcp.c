/* fuzz_harcp.c - libFuzzer target: every input goes through the frame decoder, the receiver
 * checks of both roles (with real Ed25519 verification, and with a verifier that accepts any
 * signature so the payload, window, replay and sequence checks are reached), the payload
 * schemas of every type, the msgpack reader, the MQTT header parser and the key file parser.
 * Built and run by fuzz/run.sh (`make fuzz-c`). */
#include <stdint.h>
#include <string.h>

#include "har_keyfile.h"
#include "har_protocol.h"
#include "har_transport.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* the controller and device keys of tests/vectors/harcp/keys.json */
static const char controller_pub[] =
    "d14bc129198ce624f4f7e10459383a6a5456a485c4c94b1a86acb1508068fca7";
static const uint64_t now = 1764000000000ull;

static har_crypto lenient;

static int accept_any(const uint8_t pk[32], const uint8_t *m, size_t n, const uint8_t sig[64])
{
    (void)pk;
    (void)m;
    (void)n;
    (void)sig;
    return 0;
}

static void walk_reader(const uint8_t *data, size_t size)
{
    har_mp_reader r;
    unsigned steps = 0;
    har_mp_reader_init(&r, data, size);
    /* read value by value with the typed readers until the input ends or fails */
    while (!r.err && r.pos < size && steps++ < 4096) {
        const char *s;
        const uint8_t *b;
        uint32_t l;
        uint64_t u;
        int64_t i;
        double d;
        int bo;
        switch (har_mp_peek(&r)) {
        case HAR_MP_NIL: har_mp_read_nil(&r); break;
        case HAR_MP_BOOL: har_mp_read_bool(&r, &bo); break;
        case HAR_MP_UINT: har_mp_read_uint(&r, &u); break;
        case HAR_MP_INT: har_mp_read_int(&r, &i); break;
        case HAR_MP_FLOAT: har_mp_read_float(&r, &d); break;
        case HAR_MP_STR: har_mp_read_str(&r, &s, &l); break;
        case HAR_MP_BIN: har_mp_read_bin(&r, &b, &l); break;
        case HAR_MP_ARRAY: har_mp_read_array(&r, &l); break;
        case HAR_MP_MAP: har_mp_read_map(&r, &l); break;
        case HAR_MP_EXT: har_mp_skip(&r); break;
        default: r.err = 1; break;
        }
        if (r.pos > size)
            __builtin_trap();
    }
    har_mp_reader_init(&r, data, size);
    if (har_mp_skip(&r) == 0 && r.pos > size)
        __builtin_trap();
    har_mp_reader_init(&r, data, size);
    if (har_mp_validate(&r) == 0 && r.pos > size)
        __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static har_receiver device, controller, open_device;
    static int ready;
    static uint8_t pub[32];
    har_frame f;
    int t, rc;

    if (!ready) {
        const har_crypto *c = har_crypto_sodium();
        if (!c || har_hex_decode(controller_pub, 64, pub, 32))
            __builtin_trap();
        lenient = *c;
        lenient.verify = accept_any;
        ready = 1;
    }
    /* structure */
    rc = har_frame_decode(data, size, 1024, &f);
    if (rc == HAR_OK && (f.signed_len > size || f.payload + f.payload_len > data + size))
        __builtin_trap();

    /* a device with real verification */
    har_receiver_init(&device, har_crypto_sodium(), "dev-1", HAR_DEVICE_TYPES);
    har_receiver_trust(&device, pub);
    har_receiver_check(&device, data, size, now, &f);
    /* a device and a controller that take any signature, and unsigned frames: everything
     * after step 4 is reached; each input is delivered twice (replay/sequence paths) */
    har_receiver_init(&open_device, &lenient, "dev-1", HAR_DEVICE_TYPES);
    open_device.allow_unsigned = 1;
    har_receiver_trust(&open_device, pub);
    if (har_receiver_check(&open_device, data, size, now, &f) == HAR_OK &&
        har_receiver_check(&open_device, data, size, now, &f) == HAR_OK)
        __builtin_trap(); /* the same frame accepted twice */
    har_receiver_init(&controller, &lenient, "dev-1", HAR_CONTROLLER_TYPES);
    controller.allow_unsigned = 1;
    controller.max_payload = 4096;
    har_receiver_trust(&controller, pub);
    har_receiver_check(&controller, data, size, now, &f);
    har_receiver_check(&controller, data, size, now + 1, &f);

    /* the input as a payload of every type, and as msgpack */
    for (t = HAR_EXECUTE; t <= HAR_ERROR; t++)
        har_payload_validate(t, data, size);
    {
        har_mp_reader v;
        har_payload_find(data, size, "device", &v);
    }
    walk_reader(data, size);

    /* the MQTT fixed header and the key file parser */
    {
        uint8_t tf;
        uint32_t rem;
        size_t hl;
        har_keyfile k;
        if (har_mqtt_parse_header(data, size, &tf, &rem, &hl) == 1 && hl > size)
            __builtin_trap();
        har_keyfile_parse((const char *)data, size, &lenient, &k);
    }
    return 0;
}
