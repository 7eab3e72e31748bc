/* har_protocol.h - HARCP v1 frames (docs/harcp.md): encode, decode, payload schemas and the
 * receiver checks of §5, all into caller-provided memory. Nothing here allocates. */
#ifndef HAR_PROTOCOL_H
#define HAR_PROTOCOL_H

#include <stddef.h>
#include <stdint.h>

#include "har_crypto.h"
#include "har_msgpack.h"

#ifdef __cplusplus
extern "C" {
#endif

#define HAR_VERSION 1
#define HAR_HEADER_LEN 39
#define HAR_OPERATION_ID_LEN 16
#define HAR_FLAG_SIGNED 0x01

/* The largest payload this build accepts or produces (docs/harcp.md §1). */
#ifndef HAR_MAX_PAYLOAD
#define HAR_MAX_PAYLOAD 1024
#endif
/* The largest frame of HAR_MAX_PAYLOAD: header, 4-byte varint, payload, signature. */
#define HAR_MAX_FRAME (HAR_HEADER_LEN + 4 + HAR_MAX_PAYLOAD + HAR_SIGNATURE_LEN)
/* Operation ids remembered for the replay check (a ring: the oldest goes first). */
#ifndef HAR_SEEN_CAPACITY
#define HAR_SEEN_CAPACITY 64
#endif
/* Trusted keys per receiver (two per peer during a rotation). */
#ifndef HAR_MAX_TRUSTED_KEYS
#define HAR_MAX_TRUSTED_KEYS 4
#endif
/* Per-key sequence slots: every trusted key, plus room for unsigned senders' key ids. */
#define HAR_SEQUENCE_SLOTS (HAR_MAX_TRUSTED_KEYS + 4)
#define HAR_DEFAULT_WINDOW_MS 300000u

typedef enum {
    HAR_EXECUTE = 1,
    HAR_ACK = 2,
    HAR_STATUS = 3,
    HAR_CAPABILITY_QUERY = 4,
    HAR_CAPABILITY_RESPONSE = 5,
    HAR_ERROR = 6
} har_type;

#define HAR_TYPE_BIT(t) (1u << (t))
/* What a device and a controller take (§2). */
#define HAR_DEVICE_TYPES (HAR_TYPE_BIT(HAR_EXECUTE) | HAR_TYPE_BIT(HAR_CAPABILITY_QUERY))
#define HAR_CONTROLLER_TYPES                                                                   \
    (HAR_TYPE_BIT(HAR_ACK) | HAR_TYPE_BIT(HAR_STATUS) | HAR_TYPE_BIT(HAR_CAPABILITY_RESPONSE) | \
     HAR_TYPE_BIT(HAR_ERROR))

/* Error codes (§4). 0 is success. */
typedef enum {
    HAR_OK = 0,
    HAR_E_MALFORMED = 1,
    HAR_E_TRUNCATED = 2,
    HAR_E_TRAILING_BYTES = 3,
    HAR_E_UNSUPPORTED_VERSION = 4,
    HAR_E_UNKNOWN_TYPE = 5,
    HAR_E_RESERVED_FLAG = 6,
    HAR_E_OVERSIZE = 7,
    HAR_E_UNSIGNED_REFUSED = 8,
    HAR_E_UNKNOWN_KEY = 9,
    HAR_E_BAD_SIGNATURE = 10,
    HAR_E_BAD_PAYLOAD = 11,
    HAR_E_STALE = 12,
    HAR_E_REPLAYED = 13,
    HAR_E_SEQUENCE = 14,
    HAR_E_WRONG_TARGET = 15,
    HAR_E_UNKNOWN_OP = 16,
    HAR_E_UNEXPECTED_TYPE = 17,
    /* not wire codes: local failures of encoding */
    HAR_E_BUFFER = 100,
    HAR_E_CRYPTO = 101
} har_error;

/* "malformed", "truncated", ... (§4); NULL for an unknown code. */
const char *har_error_name(int code);
/* "execute", "ack", ... (§2); NULL for an unknown type. */
const char *har_type_name(int type);
/* The type of a name, 0 if unknown. */
int har_type_from_name(const char *name);

/* A decoded frame. Pointers point into the buffer that was decoded. */
typedef struct {
    uint8_t version;
    uint8_t type;
    uint8_t flags;
    uint8_t operation_id[HAR_OPERATION_ID_LEN];
    uint64_t timestamp;
    uint32_t sequence;
    uint8_t key_id[HAR_KEY_ID_LEN];
    const uint8_t *payload;
    size_t payload_len;
    const uint8_t *signature; /* NULL when unsigned */
    size_t signed_len;        /* bytes before the signature */
} har_frame;

/* Structure checks of §5 step 1 only: fills `out` and returns HAR_OK or the error. */
int har_frame_decode(const uint8_t *buf, size_t len, size_t max_payload, har_frame *out);

/* Encodes `f` (version, type, flags, operation id, timestamp, sequence, key id, payload) into
 * out[0..cap). If flags has HAR_FLAG_SIGNED, `key` signs the frame (its key id must be the
 * frame's: har_frame_prepare sets it). Returns HAR_OK, HAR_E_BUFFER or HAR_E_CRYPTO. */
int har_frame_encode(const har_frame *f, const har_crypto *c, const har_signing_key *key,
                     uint8_t *out, size_t cap, size_t *out_len);

/* Sets up a version-1 frame: signed by `key` (its key id) or unsigned (key NULL, zero key id). */
void har_frame_prepare(har_frame *f, har_type type, const uint8_t operation_id[16],
                       uint64_t timestamp, uint32_t sequence, const har_signing_key *key,
                       const uint8_t *payload, size_t payload_len);

/* MQTT variable byte integer: encodes v (< 2^28) into out (4 bytes room), returns its length,
 * 0 if too large. */
size_t har_varint_encode(uint32_t v, uint8_t out[4]);

/* §5 step 5: HAR_OK if payload is one msgpack map with the keys §3 requires for `type`. */
int har_payload_validate(int type, const uint8_t *payload, size_t len);

/* Finds `key` in the payload's top-level map (the last occurrence, as a dict would keep) and
 * positions `value` on its value. 0 if found. */
int har_payload_find(const uint8_t *payload, size_t len, const char *key, har_mp_reader *value);

/* Called when a sequence is accepted, so it can be stored and restored after a reboot. */
typedef void (*har_sequence_persist_fn)(void *ctx, const uint8_t key_id[HAR_KEY_ID_LEN],
                                        uint32_t sequence);

typedef struct {
    uint8_t key_id[HAR_KEY_ID_LEN];
    uint32_t last;
    uint8_t used;
} har_sequence_slot;

typedef struct {
    uint8_t operation_id[HAR_OPERATION_ID_LEN];
    uint64_t timestamp;
} har_seen_entry;

/* A receiver's configuration and replay state (fixed size; embed it anywhere). */
typedef struct {
    const har_crypto *crypto;
    const char *device_id;  /* for `wrong_target`; NULL skips the check (a controller) */
    uint32_t accept_types;  /* HAR_TYPE_BIT set of the types taken (§5 step 9) */
    uint64_t window_ms;
    size_t max_payload;
    int allow_unsigned;
    har_public_key keys[HAR_MAX_TRUSTED_KEYS];
    size_t n_keys;
    har_sequence_slot sequences[HAR_SEQUENCE_SLOTS];
    har_seen_entry seen[HAR_SEEN_CAPACITY];
    size_t seen_start, seen_count;
    har_sequence_persist_fn persist;
    void *persist_ctx;
} har_receiver;

/* Defaults: window 300 s, max payload HAR_MAX_PAYLOAD, signatures required, no keys. */
void har_receiver_init(har_receiver *r, const har_crypto *c, const char *device_id,
                       uint32_t accept_types);
/* Trusts a public key (-1 when HAR_MAX_TRUSTED_KEYS are trusted already). */
int har_receiver_trust(har_receiver *r, const uint8_t public_key[HAR_PUBLIC_KEY_LEN]);
/* Restores the last accepted sequence of a key id (from persisted state). */
int har_receiver_set_sequence(har_receiver *r, const uint8_t key_id[HAR_KEY_ID_LEN],
                              uint32_t sequence);
/* Records an operation id as seen (what step 10 does on accept). */
void har_receiver_remember(har_receiver *r, const uint8_t operation_id[HAR_OPERATION_ID_LEN],
                           uint64_t timestamp, uint64_t now_ms);

/* All checks of §5 in order, with the receiver's clock at now_ms (ms since the Unix epoch).
 * On HAR_OK the frame is accepted and recorded (step 10). On an error `out` holds what was
 * read: for codes above HAR_E_OVERSIZE the header (type, operation id) is valid. */
int har_receiver_check(har_receiver *r, const uint8_t *buf, size_t len, uint64_t now_ms,
                       har_frame *out);

/* 1 if a frame of `type` refused with `code` is answered with an `error` frame (§5). */
int har_error_answerable(int code, int type);

#ifdef __cplusplus
}
#endif
#endif
