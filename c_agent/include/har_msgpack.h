/* har_msgpack.h - a minimal msgpack reader/writer over caller-provided buffers (no heap).
 *
 * Subset: nil, bool, integers (all widths), float32/float64, str, bin, array, map. The reader
 * also skips ext values (har_mp_validate refuses them), validates UTF-8 in str, and limits
 * nesting to HAR_MP_MAX_DEPTH. Errors are sticky: after the first failure every call
 * fails and `err` stays set, so a caller may check once at the end. */
#ifndef HAR_MSGPACK_H
#define HAR_MSGPACK_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifndef HAR_MP_MAX_DEPTH
#define HAR_MP_MAX_DEPTH 32
#endif

typedef enum {
    HAR_MP_INVALID = 0,
    HAR_MP_NIL,
    HAR_MP_BOOL,
    HAR_MP_UINT,   /* a non-negative integer (positive fixint, uint*, or int* >= 0) */
    HAR_MP_INT,    /* a negative integer */
    HAR_MP_FLOAT,
    HAR_MP_STR,
    HAR_MP_BIN,
    HAR_MP_ARRAY,
    HAR_MP_MAP,
    HAR_MP_EXT
} har_mp_type;

typedef struct {
    const uint8_t *buf;
    size_t len;
    size_t pos;
    int err;
} har_mp_reader;

void har_mp_reader_init(har_mp_reader *r, const uint8_t *buf, size_t len);
/* Type of the next value without consuming it; HAR_MP_INVALID at the end or on a bad byte. */
har_mp_type har_mp_peek(const har_mp_reader *r);
int har_mp_read_nil(har_mp_reader *r);
int har_mp_read_bool(har_mp_reader *r, int *out);
/* Any integer that fits in the target; a negative value fails read_uint. */
int har_mp_read_uint(har_mp_reader *r, uint64_t *out);
int har_mp_read_int(har_mp_reader *r, int64_t *out);
int har_mp_read_float(har_mp_reader *r, double *out);
/* The str's bytes (not NUL terminated), validated as UTF-8. */
int har_mp_read_str(har_mp_reader *r, const char **out, uint32_t *len);
int har_mp_read_bin(har_mp_reader *r, const uint8_t **out, uint32_t *len);
int har_mp_read_array(har_mp_reader *r, uint32_t *count);
int har_mp_read_map(har_mp_reader *r, uint32_t *count);
/* Skips one complete value (checking its structure); containers may nest HAR_MP_MAX_DEPTH
 * levels, the value itself being level 1. */
int har_mp_skip(har_mp_reader *r);
/* Like har_mp_skip, and stricter: every map's keys are str and unique within the map, and no
 * ext value appears (what HARCP payloads require, docs/harcp.md §3). */
int har_mp_validate(har_mp_reader *r);
/* 1 if the str bytes equal the NUL-terminated `s`. */
int har_mp_str_eq(const char *str, uint32_t len, const char *s);
/* 1 if buf[0..len) is valid UTF-8 (no overlongs, no surrogates, <= U+10FFFF). */
int har_utf8_valid(const uint8_t *buf, size_t len);

typedef struct {
    uint8_t *buf;
    size_t cap;
    size_t pos;
    int err;
} har_mp_writer;

void har_mp_writer_init(har_mp_writer *w, uint8_t *buf, size_t cap);
int har_mp_write_nil(har_mp_writer *w);
int har_mp_write_bool(har_mp_writer *w, int v);
int har_mp_write_uint(har_mp_writer *w, uint64_t v);
int har_mp_write_int(har_mp_writer *w, int64_t v);
int har_mp_write_float64(har_mp_writer *w, double v);
int har_mp_write_str(har_mp_writer *w, const char *s, size_t len);
int har_mp_write_cstr(har_mp_writer *w, const char *s);
int har_mp_write_bin(har_mp_writer *w, const uint8_t *b, size_t len);
int har_mp_write_array(har_mp_writer *w, uint32_t count);
int har_mp_write_map(har_mp_writer *w, uint32_t count);
/* Appends already encoded msgpack bytes. */
int har_mp_write_raw(har_mp_writer *w, const uint8_t *b, size_t len);

#ifdef __cplusplus
}
#endif
#endif
