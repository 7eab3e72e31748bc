/* har_protocol.c - HARCP v1 frame codec, payload schemas and receiver checks (no heap). */
#include "har_protocol.h"

#include <string.h>

static const char *const error_names[] = {
    NULL,           "malformed",   "truncated",      "trailing_bytes",   "unsupported_version",
    "unknown_type", "reserved_flag", "oversize",     "unsigned_refused", "unknown_key",
    "bad_signature", "bad_payload", "stale",         "replayed",         "sequence",
    "wrong_target", "unknown_op",  "unexpected_type"};

static const char *const type_names[] = {NULL,     "execute", "ack", "status", "capability_query",
                                         "capability_response", "error"};

const char *har_error_name(int code)
{
    if (code <= 0 || code >= (int)(sizeof error_names / sizeof error_names[0]))
        return NULL;
    return error_names[code];
}

const char *har_type_name(int type)
{
    if (type <= 0 || type > HAR_ERROR)
        return NULL;
    return type_names[type];
}

int har_type_from_name(const char *name)
{
    int t;
    for (t = HAR_EXECUTE; t <= HAR_ERROR; t++)
        if (strcmp(type_names[t], name) == 0)
            return t;
    return 0;
}

static uint64_t get_be(const uint8_t *p, unsigned n)
{
    uint64_t v = 0;
    unsigned i;
    for (i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

static void put_be(uint8_t *p, uint64_t v, unsigned n)
{
    unsigned i;
    for (i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * (n - 1 - i)));
}

int har_frame_decode(const uint8_t *buf, size_t len, size_t max_payload, har_frame *out)
{
    size_t pos, total, sig_len;
    uint32_t n = 0;
    unsigned i;

    memset(out, 0, sizeof *out);
    if (len < HAR_HEADER_LEN)
        return HAR_E_TRUNCATED;
    out->version = buf[0];
    out->type = buf[1];
    out->flags = buf[2];
    memcpy(out->operation_id, buf + 3, HAR_OPERATION_ID_LEN);
    out->timestamp = get_be(buf + 19, 8);
    out->sequence = (uint32_t)get_be(buf + 27, 4);
    memcpy(out->key_id, buf + 31, HAR_KEY_ID_LEN);
    if (out->version != HAR_VERSION)
        return HAR_E_UNSUPPORTED_VERSION;
    if (out->type < HAR_EXECUTE || out->type > HAR_ERROR)
        return HAR_E_UNKNOWN_TYPE;
    if (out->flags & (uint8_t)~HAR_FLAG_SIGNED)
        return HAR_E_RESERVED_FLAG;
    if (!(out->flags & HAR_FLAG_SIGNED)) {
        /* an unsigned frame names no key: otherwise unsigned frames could advance a real
         * key's sequence (docs/harcp.md section 1) */
        for (i = 0; i < HAR_KEY_ID_LEN; i++)
            if (out->key_id[i])
                return HAR_E_MALFORMED;
    }

    pos = HAR_HEADER_LEN;
    for (i = 0;; i++) {
        uint8_t b;
        if (i == 4)
            return HAR_E_MALFORMED; /* a fifth byte would be needed */
        if (pos >= len)
            return HAR_E_TRUNCATED;
        b = buf[pos++];
        n |= (uint32_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80))
            break;
    }
    if (n > max_payload)
        return HAR_E_OVERSIZE;
    sig_len = (out->flags & HAR_FLAG_SIGNED) ? HAR_SIGNATURE_LEN : 0;
    total = pos + n + sig_len;
    if (len < total)
        return HAR_E_TRUNCATED;
    if (len > total)
        return HAR_E_TRAILING_BYTES;
    out->payload = buf + pos;
    out->payload_len = n;
    out->signed_len = pos + n;
    out->signature = sig_len ? buf + pos + n : NULL;
    return HAR_OK;
}

size_t har_varint_encode(uint32_t v, uint8_t out[4])
{
    size_t n = 0;
    if (v >= (1u << 28))
        return 0;
    do {
        uint8_t b = v & 0x7f;
        v >>= 7;
        if (v)
            b |= 0x80;
        out[n++] = b;
    } while (v);
    return n;
}

void har_frame_prepare(har_frame *f, har_type type, const uint8_t operation_id[16],
                       uint64_t timestamp, uint32_t sequence, const har_signing_key *key,
                       const uint8_t *payload, size_t payload_len)
{
    memset(f, 0, sizeof *f);
    f->version = HAR_VERSION;
    f->type = (uint8_t)type;
    f->flags = key ? HAR_FLAG_SIGNED : 0;
    memcpy(f->operation_id, operation_id, HAR_OPERATION_ID_LEN);
    f->timestamp = timestamp;
    f->sequence = sequence;
    if (key)
        memcpy(f->key_id, key->key_id, HAR_KEY_ID_LEN);
    f->payload = payload;
    f->payload_len = payload_len;
}

int har_frame_encode(const har_frame *f, const har_crypto *c, const har_signing_key *key,
                     uint8_t *out, size_t cap, size_t *out_len)
{
    uint8_t varint[4];
    size_t vlen, total, pos;
    int sign = (f->flags & HAR_FLAG_SIGNED) != 0;

    if (f->payload_len > 0x0fffffffu)
        return HAR_E_BUFFER;
    vlen = har_varint_encode((uint32_t)f->payload_len, varint);
    total = HAR_HEADER_LEN + vlen + f->payload_len + (sign ? HAR_SIGNATURE_LEN : 0);
    if (total > cap)
        return HAR_E_BUFFER;
    if (sign && (!c || !key))
        return HAR_E_CRYPTO;
    out[0] = f->version;
    out[1] = f->type;
    out[2] = f->flags;
    memcpy(out + 3, f->operation_id, HAR_OPERATION_ID_LEN);
    put_be(out + 19, f->timestamp, 8);
    put_be(out + 27, f->sequence, 4);
    memcpy(out + 31, f->key_id, HAR_KEY_ID_LEN);
    pos = HAR_HEADER_LEN;
    memcpy(out + pos, varint, vlen);
    pos += vlen;
    if (f->payload_len)
        memmove(out + pos, f->payload, f->payload_len);
    pos += f->payload_len;
    if (sign) {
        if (c->sign(key->seed, key->public_key, out, pos, out + pos))
            return HAR_E_CRYPTO;
        pos += HAR_SIGNATURE_LEN;
    }
    *out_len = pos;
    return HAR_OK;
}

/* ---- payload schemas (§3) ---- */

enum { K_STR = 1, K_UINT, K_MAP, K_STR_ARRAY, K_STR_MAP, K_ANY, K_ERROR_MAP };

typedef struct {
    const char *name;
    uint8_t kind;
    uint8_t required;
} field_spec;

#define MAX_FIELDS 4

static const field_spec schemas[7][MAX_FIELDS] = {
    {{NULL, 0, 0}},
    /* execute */
    {{"device", K_STR, 1}, {"op", K_STR, 1}, {"args", K_MAP, 1}, {"timeout_ms", K_UINT, 0}},
    /* ack */
    {{"status", K_STR, 1}, {"result", K_ANY, 0}, {"error", K_ERROR_MAP, 0}, {NULL, 0, 0}},
    /* status */
    {{"health", K_STR, 1}, {"uptime_s", K_UINT, 0}, {"inventory", K_MAP, 0},
     {"deployments", K_STR_MAP, 0}},
    /* capability_query */
    {{"device", K_STR, 1}, {NULL, 0, 0}},
    /* capability_response */
    {{"agent", K_STR, 1}, {"ops", K_STR_ARRAY, 1}, {"max_payload", K_UINT, 1}, {"tier", K_STR, 1}},
    /* error */
    {{"code", K_UINT, 1}, {"reason", K_STR, 1}, {"detail", K_STR, 0}, {NULL, 0, 0}},
};

/* Enumerated string values (§3); NULL-terminated lists. */
static const char *const ack_statuses[] = {"accepted", "rejected", "done", "failed", NULL};
static const char *const healths[] = {"ok", "degraded", "failed", NULL};
static const char *const tiers[] = {"signed", "open", NULL};

static const char *const *enum_of(int type, const char *name)
{
    if (type == HAR_ACK && strcmp(name, "status") == 0)
        return ack_statuses;
    if (type == HAR_STATUS && strcmp(name, "health") == 0)
        return healths;
    if (type == HAR_CAPABILITY_RESPONSE && strcmp(name, "tier") == 0)
        return tiers;
    return NULL;
}

static int check_str(har_mp_reader *r, const char *const *allowed)
{
    const char *s;
    uint32_t l;
    if (har_mp_read_str(r, &s, &l))
        return -1;
    if (allowed) {
        for (; *allowed; allowed++)
            if (har_mp_str_eq(s, l, *allowed))
                return 0;
        return -1;
    }
    return 0;
}

/* Checks one value of `kind` at the reader's position. */
static int check_kind(har_mp_reader *r, uint8_t kind, const char *const *allowed)
{
    uint32_t n, i;
    uint64_t u;
    const char *s;
    uint32_t l;
    switch (kind) {
    case K_STR:
        return check_str(r, allowed);
    case K_UINT:
        return har_mp_read_uint(r, &u);
    case K_MAP:
        /* keys are strings; values anything */
        if (har_mp_read_map(r, &n))
            return -1;
        for (i = 0; i < n; i++)
            if (har_mp_read_str(r, &s, &l) || har_mp_skip(r))
                return -1;
        return 0;
    case K_STR_MAP:
        if (har_mp_read_map(r, &n))
            return -1;
        for (i = 0; i < n; i++)
            if (har_mp_read_str(r, &s, &l) || har_mp_read_str(r, &s, &l))
                return -1;
        return 0;
    case K_STR_ARRAY:
        if (har_mp_read_array(r, &n))
            return -1;
        for (i = 0; i < n; i++)
            if (har_mp_read_str(r, &s, &l))
                return -1;
        return 0;
    case K_ERROR_MAP: {
        har_mp_reader v;
        size_t start = r->pos;
        /* a map whose `code` is a uint and `message` a str */
        if (check_kind(r, K_MAP, NULL))
            return -1;
        if (har_payload_find(r->buf + start, r->pos - start, "code", &v) ||
            har_mp_read_uint(&v, &u))
            return -1;
        if (har_payload_find(r->buf + start, r->pos - start, "message", &v) ||
            har_mp_read_str(&v, &s, &l))
            return -1;
        return 0;
    }
    default:
        return har_mp_skip(r);
    }
}

int har_payload_find(const uint8_t *payload, size_t len, const char *key, har_mp_reader *value)
{
    har_mp_reader r;
    uint32_t n, i;
    int found = 0;
    har_mp_reader_init(&r, payload, len);
    if (har_mp_read_map(&r, &n))
        return -1;
    for (i = 0; i < n; i++) {
        const char *s;
        uint32_t l;
        int match = 0;
        if (har_mp_peek(&r) == HAR_MP_STR) {
            if (har_mp_read_str(&r, &s, &l))
                return -1;
            match = har_mp_str_eq(s, l, key);
        } else if (har_mp_skip(&r)) {
            return -1;
        }
        if (match) {
            *value = r;
            found = 1;
        }
        if (har_mp_skip(&r))
            return -1;
    }
    return found ? 0 : -1;
}

int har_payload_validate(int type, const uint8_t *payload, size_t len)
{
    har_mp_reader r;
    size_t value_pos[MAX_FIELDS];
    uint32_t n, i;
    int f;
    const field_spec *spec;

    if (type < HAR_EXECUTE || type > HAR_ERROR)
        return HAR_E_BAD_PAYLOAD;
    spec = schemas[type];
    for (f = 0; f < MAX_FIELDS; f++)
        value_pos[f] = (size_t)-1;
    /* one map and nothing after it; unique str keys in every map, no ext, nesting <= 32 */
    har_mp_reader_init(&r, payload, len);
    if (har_mp_peek(&r) != HAR_MP_MAP || har_mp_validate(&r) || r.pos != len)
        return HAR_E_BAD_PAYLOAD;
    har_mp_reader_init(&r, payload, len);
    if (har_mp_read_map(&r, &n))
        return HAR_E_BAD_PAYLOAD;
    for (i = 0; i < n; i++) {
        const char *s;
        uint32_t l;
        if (har_mp_read_str(&r, &s, &l))
            return HAR_E_BAD_PAYLOAD;
        for (f = 0; f < MAX_FIELDS && spec[f].name; f++)
            if (har_mp_str_eq(s, l, spec[f].name))
                value_pos[f] = r.pos;
        if (har_mp_skip(&r))
            return HAR_E_BAD_PAYLOAD;
    }
    for (f = 0; f < MAX_FIELDS && spec[f].name; f++) {
        if (value_pos[f] == (size_t)-1) {
            if (spec[f].required)
                return HAR_E_BAD_PAYLOAD;
            continue;
        }
        r.pos = value_pos[f];
        r.err = 0;
        if (check_kind(&r, spec[f].kind, enum_of(type, spec[f].name)))
            return HAR_E_BAD_PAYLOAD;
    }
    return HAR_OK;
}

/* ---- receiver ---- */

void har_receiver_init(har_receiver *r, const har_crypto *c, const char *device_id,
                       uint32_t accept_types)
{
    memset(r, 0, sizeof *r);
    r->crypto = c;
    r->device_id = device_id;
    r->accept_types = accept_types;
    r->window_ms = HAR_DEFAULT_WINDOW_MS;
    r->max_payload = HAR_MAX_PAYLOAD;
}

int har_receiver_trust(har_receiver *r, const uint8_t public_key[HAR_PUBLIC_KEY_LEN])
{
    if (r->n_keys >= HAR_MAX_TRUSTED_KEYS)
        return -1;
    if (har_public_key_init(r->crypto, public_key, &r->keys[r->n_keys]))
        return -1;
    r->n_keys++;
    return 0;
}

static int is_trusted_key_id(const har_receiver *r, const uint8_t key_id[HAR_KEY_ID_LEN])
{
    size_t i;
    for (i = 0; i < r->n_keys; i++)
        if (memcmp(r->keys[i].key_id, key_id, HAR_KEY_ID_LEN) == 0)
            return 1;
    return 0;
}

static har_sequence_slot *find_slot(har_receiver *r, const uint8_t key_id[HAR_KEY_ID_LEN])
{
    size_t i;
    for (i = 0; i < HAR_SEQUENCE_SLOTS; i++)
        if (r->sequences[i].used && memcmp(r->sequences[i].key_id, key_id, HAR_KEY_ID_LEN) == 0)
            return &r->sequences[i];
    return NULL;
}

static har_sequence_slot *take_slot(har_receiver *r, const uint8_t key_id[HAR_KEY_ID_LEN])
{
    size_t i;
    har_sequence_slot *s = find_slot(r, key_id);
    if (s)
        return s;
    for (i = 0; i < HAR_SEQUENCE_SLOTS && !s; i++)
        if (!r->sequences[i].used)
            s = &r->sequences[i];
    /* full: reuse a slot whose key is not trusted (an unsigned sender's), never a trusted one */
    for (i = 0; i < HAR_SEQUENCE_SLOTS && !s; i++)
        if (!is_trusted_key_id(r, r->sequences[i].key_id))
            s = &r->sequences[i];
    if (!s)
        return NULL;
    memcpy(s->key_id, key_id, HAR_KEY_ID_LEN);
    s->last = 0;
    s->used = 1;
    return s;
}

int har_receiver_set_sequence(har_receiver *r, const uint8_t key_id[HAR_KEY_ID_LEN],
                              uint32_t sequence)
{
    har_sequence_slot *s = take_slot(r, key_id);
    if (!s)
        return -1;
    s->last = sequence;
    return 0;
}

static void expire_seen(har_receiver *r, uint64_t now_ms)
{
    while (r->seen_count) {
        const har_seen_entry *e = &r->seen[r->seen_start];
        if (e->timestamp + r->window_ms >= now_ms)
            break;
        r->seen_start = (r->seen_start + 1) % HAR_SEEN_CAPACITY;
        r->seen_count--;
    }
}

void har_receiver_remember(har_receiver *r, const uint8_t operation_id[HAR_OPERATION_ID_LEN],
                           uint64_t timestamp, uint64_t now_ms)
{
    har_seen_entry *e;
    expire_seen(r, now_ms);
    if (r->seen_count == HAR_SEEN_CAPACITY) { /* drop the oldest */
        r->seen_start = (r->seen_start + 1) % HAR_SEEN_CAPACITY;
        r->seen_count--;
    }
    e = &r->seen[(r->seen_start + r->seen_count) % HAR_SEEN_CAPACITY];
    memcpy(e->operation_id, operation_id, HAR_OPERATION_ID_LEN);
    e->timestamp = timestamp;
    r->seen_count++;
}

static int seen(const har_receiver *r, const uint8_t operation_id[HAR_OPERATION_ID_LEN])
{
    size_t i;
    for (i = 0; i < r->seen_count; i++)
        if (memcmp(r->seen[(r->seen_start + i) % HAR_SEEN_CAPACITY].operation_id, operation_id,
                   HAR_OPERATION_ID_LEN) == 0)
            return 1;
    return 0;
}

int har_receiver_check(har_receiver *r, const uint8_t *buf, size_t len, uint64_t now_ms,
                       har_frame *f)
{
    int rc, fresh;
    size_t i;
    const har_public_key *key = NULL;
    har_sequence_slot *slot;

    /* 1. structure */
    rc = har_frame_decode(buf, len, r->max_payload, f);
    if (rc)
        return rc;
    /* 2-4. signature */
    if (!(f->flags & HAR_FLAG_SIGNED)) {
        if (!r->allow_unsigned)
            return HAR_E_UNSIGNED_REFUSED;
    } else {
        for (i = 0; i < r->n_keys && !key; i++)
            if (memcmp(r->keys[i].key_id, f->key_id, HAR_KEY_ID_LEN) == 0)
                key = &r->keys[i];
        if (!key)
            return HAR_E_UNKNOWN_KEY;
        if (r->crypto->verify(key->public_key, buf, f->signed_len, f->signature))
            return HAR_E_BAD_SIGNATURE;
    }
    /* 5. payload */
    rc = har_payload_validate(f->type, f->payload, f->payload_len);
    if (rc)
        return rc;
    /* 6. timestamp window */
    if (f->timestamp > now_ms ? f->timestamp - now_ms > r->window_ms
                              : now_ms - f->timestamp > r->window_ms)
        return HAR_E_STALE;
    /* 7. replay: for the types that carry a fresh operation id (an ack, a
     * capability_response, an error repeat the id they answer) */
    fresh = f->type == HAR_EXECUTE || f->type == HAR_CAPABILITY_QUERY || f->type == HAR_STATUS;
    if (fresh) {
        expire_seen(r, now_ms);
        if (seen(r, f->operation_id))
            return HAR_E_REPLAYED;
    }
    /* 8. sequence */
    /* (sequences start at 1: a key never seen has a last sequence of 0) */
    slot = find_slot(r, f->key_id);
    if (f->sequence <= (slot ? slot->last : 0))
        return HAR_E_SEQUENCE;
    /* 9. type and target */
    if (!(r->accept_types & HAR_TYPE_BIT(f->type)))
        return HAR_E_UNEXPECTED_TYPE;
    if (r->device_id && (f->type == HAR_EXECUTE || f->type == HAR_CAPABILITY_QUERY)) {
        har_mp_reader v;
        const char *s;
        uint32_t l;
        if (har_payload_find(f->payload, f->payload_len, "device", &v) ||
            har_mp_read_str(&v, &s, &l))
            return HAR_E_BAD_PAYLOAD; /* cannot happen after step 5 */
        if (!har_mp_str_eq(s, l, r->device_id))
            return HAR_E_WRONG_TARGET;
    }
    /* 10. accept */
    if (fresh)
        har_receiver_remember(r, f->operation_id, f->timestamp, now_ms);
    slot = take_slot(r, f->key_id);
    if (slot) {
        slot->last = f->sequence;
        if (r->persist)
            r->persist(r->persist_ctx, f->key_id, f->sequence);
    }
    return HAR_OK;
}

int har_error_answerable(int code, int type)
{
    return code > HAR_E_OVERSIZE && code != HAR_OK &&
           (type == HAR_EXECUTE || type == HAR_CAPABILITY_QUERY);
}
