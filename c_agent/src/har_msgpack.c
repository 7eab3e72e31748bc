/* har_msgpack.c - see har_msgpack.h. Every read is bounds-checked against the reader's length. */
#include "har_msgpack.h"

#include <string.h>

void har_mp_reader_init(har_mp_reader *r, const uint8_t *buf, size_t len)
{
    r->buf = buf;
    r->len = len;
    r->pos = 0;
    r->err = 0;
}

static int fail(har_mp_reader *r)
{
    r->err = 1;
    return -1;
}

static int need(const har_mp_reader *r, size_t n)
{
    return !r->err && r->pos <= r->len && r->len - r->pos >= n;
}

static uint64_t be(const uint8_t *p, unsigned n)
{
    uint64_t v = 0;
    unsigned i;
    for (i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

har_mp_type har_mp_peek(const har_mp_reader *r)
{
    uint8_t b;
    if (!need(r, 1))
        return HAR_MP_INVALID;
    b = r->buf[r->pos];
    if (b <= 0x7f || (b >= 0xcc && b <= 0xcf))
        return HAR_MP_UINT;
    if (b >= 0xe0)
        return HAR_MP_INT;
    if (b >= 0xd0 && b <= 0xd3) {
        /* signed encodings: the sign decides the kind */
        if (!need(r, 2))
            return HAR_MP_INVALID;
        return (r->buf[r->pos + 1] & 0x80) ? HAR_MP_INT : HAR_MP_UINT;
    }
    if ((b >= 0x80 && b <= 0x8f) || b == 0xde || b == 0xdf)
        return HAR_MP_MAP;
    if ((b >= 0x90 && b <= 0x9f) || b == 0xdc || b == 0xdd)
        return HAR_MP_ARRAY;
    if ((b >= 0xa0 && b <= 0xbf) || (b >= 0xd9 && b <= 0xdb))
        return HAR_MP_STR;
    switch (b) {
    case 0xc0: return HAR_MP_NIL;
    case 0xc2: case 0xc3: return HAR_MP_BOOL;
    case 0xc4: case 0xc5: case 0xc6: return HAR_MP_BIN;
    case 0xca: case 0xcb: return HAR_MP_FLOAT;
    case 0xc7: case 0xc8: case 0xc9:
    case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8: return HAR_MP_EXT;
    default: return HAR_MP_INVALID; /* 0xc1 is never used */
    }
}

int har_mp_read_nil(har_mp_reader *r)
{
    if (!need(r, 1) || r->buf[r->pos] != 0xc0)
        return fail(r);
    r->pos++;
    return 0;
}

int har_mp_read_bool(har_mp_reader *r, int *out)
{
    uint8_t b;
    if (!need(r, 1))
        return fail(r);
    b = r->buf[r->pos];
    if (b != 0xc2 && b != 0xc3)
        return fail(r);
    *out = b == 0xc3;
    r->pos++;
    return 0;
}

/* Reads any integer: *neg set when negative, *mag the two's complement value. */
static int read_integer(har_mp_reader *r, int *neg, uint64_t *val)
{
    uint8_t b;
    unsigned n;
    if (!need(r, 1))
        return fail(r);
    b = r->buf[r->pos];
    if (b <= 0x7f) {
        *neg = 0;
        *val = b;
        r->pos++;
        return 0;
    }
    if (b >= 0xe0) {
        *neg = 1;
        *val = (uint64_t)(int64_t)(int8_t)b;
        r->pos++;
        return 0;
    }
    if (b >= 0xcc && b <= 0xcf) {
        n = 1u << (b - 0xcc);
        if (!need(r, 1 + n))
            return fail(r);
        *neg = 0;
        *val = be(r->buf + r->pos + 1, n);
        r->pos += 1 + n;
        return 0;
    }
    if (b >= 0xd0 && b <= 0xd3) {
        uint64_t u;
        n = 1u << (b - 0xd0);
        if (!need(r, 1 + n))
            return fail(r);
        u = be(r->buf + r->pos + 1, n);
        if (n < 8 && (u >> (8 * n - 1)) & 1)
            u |= ~(uint64_t)0 << (8 * n); /* sign-extend */
        *neg = (u >> 63) & 1;
        *val = u;
        r->pos += 1 + n;
        return 0;
    }
    return fail(r);
}

int har_mp_read_uint(har_mp_reader *r, uint64_t *out)
{
    int neg;
    uint64_t v;
    size_t save = r->pos;
    if (read_integer(r, &neg, &v))
        return -1;
    if (neg) {
        r->pos = save;
        return fail(r);
    }
    *out = v;
    return 0;
}

int har_mp_read_int(har_mp_reader *r, int64_t *out)
{
    int neg;
    uint64_t v;
    size_t save = r->pos;
    if (read_integer(r, &neg, &v))
        return -1;
    if (!neg && v > (uint64_t)INT64_MAX) {
        r->pos = save;
        return fail(r);
    }
    *out = (int64_t)v;
    return 0;
}

int har_mp_read_float(har_mp_reader *r, double *out)
{
    uint8_t b;
    if (!need(r, 1))
        return fail(r);
    b = r->buf[r->pos];
    if (b == 0xca) {
        uint32_t u;
        float f;
        if (!need(r, 5))
            return fail(r);
        u = (uint32_t)be(r->buf + r->pos + 1, 4);
        memcpy(&f, &u, 4);
        *out = f;
        r->pos += 5;
        return 0;
    }
    if (b == 0xcb) {
        uint64_t u;
        if (!need(r, 9))
            return fail(r);
        u = be(r->buf + r->pos + 1, 8);
        memcpy(out, &u, 8);
        r->pos += 9;
        return 0;
    }
    return fail(r);
}

/* Reads a length prefix of `n` bytes after the type byte and checks `len` bytes follow. */
static int read_sized(har_mp_reader *r, unsigned n, const uint8_t **out, uint32_t *len)
{
    uint64_t l;
    if (!need(r, 1 + n))
        return fail(r);
    l = be(r->buf + r->pos + 1, n);
    if (!need(r, 1 + n + l))
        return fail(r);
    *out = r->buf + r->pos + 1 + n;
    *len = (uint32_t)l;
    r->pos += 1 + n + l;
    return 0;
}

int har_mp_read_str(har_mp_reader *r, const char **out, uint32_t *len)
{
    uint8_t b;
    const uint8_t *p = NULL;
    uint32_t l = 0;
    size_t save = r->pos;
    if (!need(r, 1))
        return fail(r);
    b = r->buf[r->pos];
    if (b >= 0xa0 && b <= 0xbf) {
        l = b & 0x1f;
        if (!need(r, 1 + (size_t)l))
            return fail(r);
        p = r->buf + r->pos + 1;
        r->pos += 1 + l;
    } else if (b >= 0xd9 && b <= 0xdb) {
        if (read_sized(r, 1u << (b - 0xd9), &p, &l))
            return -1;
    } else {
        return fail(r);
    }
    if (!har_utf8_valid(p, l)) {
        r->pos = save;
        return fail(r);
    }
    *out = (const char *)p;
    *len = l;
    return 0;
}

int har_mp_read_bin(har_mp_reader *r, const uint8_t **out, uint32_t *len)
{
    uint8_t b;
    if (!need(r, 1))
        return fail(r);
    b = r->buf[r->pos];
    if (b < 0xc4 || b > 0xc6)
        return fail(r);
    return read_sized(r, 1u << (b - 0xc4), out, len);
}

static int read_container(har_mp_reader *r, uint8_t fix_lo, uint8_t b16, uint32_t *count)
{
    uint8_t b;
    if (!need(r, 1))
        return fail(r);
    b = r->buf[r->pos];
    if (b >= fix_lo && b <= (uint8_t)(fix_lo + 15)) {
        *count = b & 0x0f;
        r->pos++;
        return 0;
    }
    if (b == b16 || b == b16 + 1) {
        unsigned n = b == b16 ? 2 : 4;
        if (!need(r, 1 + n))
            return fail(r);
        *count = (uint32_t)be(r->buf + r->pos + 1, n);
        r->pos += 1 + n;
        /* every element takes at least one byte: refuse counts that cannot fit */
        if (*count > r->len - r->pos)
            return fail(r);
        return 0;
    }
    return fail(r);
}

int har_mp_read_array(har_mp_reader *r, uint32_t *count)
{
    return read_container(r, 0x90, 0xdc, count);
}

int har_mp_read_map(har_mp_reader *r, uint32_t *count)
{
    return read_container(r, 0x80, 0xde, count);
}

static int skip_ext(har_mp_reader *r)
{
    uint8_t b = r->buf[r->pos];
    size_t n;
    const uint8_t *p;
    uint32_t l;
    switch (b) {
    case 0xd4: n = 1; break;
    case 0xd5: n = 2; break;
    case 0xd6: n = 4; break;
    case 0xd7: n = 8; break;
    case 0xd8: n = 16; break;
    default:
        /* ext 8/16/32: length, then a type byte, then the data */
        if (read_sized(r, 1u << (b - 0xc7), &p, &l))
            return -1;
        if (!need(r, 1))
            return fail(r);
        r->pos += 1;
        /* read_sized consumed `l` bytes before the type byte; the layout is len, type,
         * data, so the total is the same and only the split differs */
        return 0;
    }
    if (!need(r, 2 + n))
        return fail(r);
    r->pos += 2 + n;
    return 0;
}

/* Skips one value at nesting level `depth` (the outermost value is level 1). A container
 * deeper than HAR_MP_MAX_DEPTH fails. `strict`: maps must have unique str keys, no ext. */
static int walk(har_mp_reader *r, unsigned depth, int strict)
{
    const char *s;
    const uint8_t *b;
    uint32_t l, n, i;
    uint64_t u;
    int64_t sv;
    double d;
    int bo;
    switch (har_mp_peek(r)) {
    case HAR_MP_NIL: return har_mp_read_nil(r);
    case HAR_MP_BOOL: return har_mp_read_bool(r, &bo);
    case HAR_MP_UINT: return har_mp_read_uint(r, &u);
    case HAR_MP_INT: return har_mp_read_int(r, &sv);
    case HAR_MP_FLOAT: return har_mp_read_float(r, &d);
    case HAR_MP_STR: return har_mp_read_str(r, &s, &l);
    case HAR_MP_BIN: return har_mp_read_bin(r, &b, &l);
    case HAR_MP_EXT: return strict ? fail(r) : skip_ext(r);
    case HAR_MP_ARRAY:
        if (depth > HAR_MP_MAX_DEPTH || har_mp_read_array(r, &n))
            return fail(r);
        for (i = 0; i < n; i++)
            if (walk(r, depth + 1, strict))
                return -1;
        return 0;
    case HAR_MP_MAP: {
        size_t first;
        if (depth > HAR_MP_MAX_DEPTH || har_mp_read_map(r, &n))
            return fail(r);
        first = r->pos;
        for (i = 0; i < n; i++) {
            if (strict) {
                /* a str key, different from the keys before it in this map */
                har_mp_reader prev;
                uint32_t j;
                if (har_mp_read_str(r, &s, &l))
                    return -1;
                har_mp_reader_init(&prev, r->buf, r->len);
                prev.pos = first;
                for (j = 0; j < i; j++) {
                    const char *ps;
                    uint32_t pl;
                    if (har_mp_read_str(&prev, &ps, &pl) || walk(&prev, depth + 1, 0))
                        return fail(r);
                    if (pl == l && memcmp(ps, s, l) == 0)
                        return fail(r);
                }
            } else if (walk(r, depth + 1, strict)) {
                return -1;
            }
            if (walk(r, depth + 1, strict))
                return -1;
        }
        return 0;
    }
    default:
        return fail(r);
    }
}

int har_mp_skip(har_mp_reader *r)
{
    return walk(r, 1, 0);
}

int har_mp_validate(har_mp_reader *r)
{
    return walk(r, 1, 1);
}

int har_mp_str_eq(const char *str, uint32_t len, const char *s)
{
    size_t n = strlen(s);
    return n == len && memcmp(str, s, n) == 0;
}

int har_utf8_valid(const uint8_t *p, size_t len)
{
    size_t i = 0;
    while (i < len) {
        uint8_t c = p[i];
        size_t n;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) {
            n = 1;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            cp = c & 0x07;
        } else {
            return 0;
        }
        if (len - i <= n)
            return 0;
        {
            size_t k;
            for (k = 1; k <= n; k++) {
                if ((p[i + k] & 0xc0) != 0x80)
                    return 0;
                cp = (cp << 6) | (p[i + k] & 0x3f);
            }
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += n + 1;
    }
    return 1;
}

/* ---- writer ---- */

void har_mp_writer_init(har_mp_writer *w, uint8_t *buf, size_t cap)
{
    w->buf = buf;
    w->cap = cap;
    w->pos = 0;
    w->err = 0;
}

static int put(har_mp_writer *w, const void *b, size_t n)
{
    if (w->err || w->cap - w->pos < n) {
        w->err = 1;
        return -1;
    }
    if (n)
        memcpy(w->buf + w->pos, b, n);
    w->pos += n;
    return 0;
}

static int put_be(har_mp_writer *w, uint8_t tag, uint64_t v, unsigned n)
{
    uint8_t tmp[9];
    unsigned i;
    tmp[0] = tag;
    for (i = 0; i < n; i++)
        tmp[1 + i] = (uint8_t)(v >> (8 * (n - 1 - i)));
    return put(w, tmp, 1 + n);
}

int har_mp_write_nil(har_mp_writer *w)
{
    uint8_t b = 0xc0;
    return put(w, &b, 1);
}

int har_mp_write_bool(har_mp_writer *w, int v)
{
    uint8_t b = v ? 0xc3 : 0xc2;
    return put(w, &b, 1);
}

int har_mp_write_uint(har_mp_writer *w, uint64_t v)
{
    if (v <= 0x7f)
        return put_be(w, (uint8_t)v, 0, 0);
    if (v <= 0xff)
        return put_be(w, 0xcc, v, 1);
    if (v <= 0xffff)
        return put_be(w, 0xcd, v, 2);
    if (v <= 0xffffffffu)
        return put_be(w, 0xce, v, 4);
    return put_be(w, 0xcf, v, 8);
}

int har_mp_write_int(har_mp_writer *w, int64_t v)
{
    if (v >= 0)
        return har_mp_write_uint(w, (uint64_t)v);
    if (v >= -32)
        return put_be(w, (uint8_t)(int8_t)v, 0, 0);
    if (v >= INT8_MIN)
        return put_be(w, 0xd0, (uint64_t)v & 0xff, 1);
    if (v >= INT16_MIN)
        return put_be(w, 0xd1, (uint64_t)v & 0xffff, 2);
    if (v >= INT32_MIN)
        return put_be(w, 0xd2, (uint64_t)v & 0xffffffffu, 4);
    return put_be(w, 0xd3, (uint64_t)v, 8);
}

int har_mp_write_float64(har_mp_writer *w, double v)
{
    uint64_t u;
    memcpy(&u, &v, 8);
    return put_be(w, 0xcb, u, 8);
}

static int write_len(har_mp_writer *w, size_t len, uint8_t fix, size_t fixmax, uint8_t t8,
                     uint8_t t16, uint8_t t32)
{
    if (fix && len <= fixmax)
        return put_be(w, (uint8_t)(fix | len), 0, 0);
    if (t8 && len <= 0xff)
        return put_be(w, t8, len, 1);
    if (len <= 0xffff)
        return put_be(w, t16, len, 2);
    if ((uint64_t)len <= 0xffffffffu)
        return put_be(w, t32, len, 4);
    w->err = 1;
    return -1;
}

int har_mp_write_str(har_mp_writer *w, const char *s, size_t len)
{
    if (write_len(w, len, 0xa0, 31, 0xd9, 0xda, 0xdb))
        return -1;
    return put(w, s, len);
}

int har_mp_write_cstr(har_mp_writer *w, const char *s)
{
    return har_mp_write_str(w, s, strlen(s));
}

int har_mp_write_bin(har_mp_writer *w, const uint8_t *b, size_t len)
{
    if (write_len(w, len, 0, 0, 0xc4, 0xc5, 0xc6))
        return -1;
    return put(w, b, len);
}

int har_mp_write_array(har_mp_writer *w, uint32_t count)
{
    return write_len(w, count, 0x90, 15, 0, 0xdc, 0xdd);
}

int har_mp_write_map(har_mp_writer *w, uint32_t count)
{
    return write_len(w, count, 0x80, 15, 0, 0xde, 0xdf);
}

int har_mp_write_raw(har_mp_writer *w, const uint8_t *b, size_t len)
{
    return put(w, b, len);
}
