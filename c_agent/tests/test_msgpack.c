/* test_msgpack.c - the msgpack reader/writer: exact encodings, round trips, bounds, limits. */
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "har_msgpack.h"

static size_t encode_uint(uint64_t v, uint8_t *out)
{
    har_mp_writer w;
    har_mp_writer_init(&w, out, 16);
    har_mp_write_uint(&w, v);
    return w.err ? 0 : w.pos;
}

static size_t encode_int(int64_t v, uint8_t *out)
{
    har_mp_writer w;
    har_mp_writer_init(&w, out, 16);
    har_mp_write_int(&w, v);
    return w.err ? 0 : w.pos;
}

static void test_integers(void)
{
    static const struct {
        uint64_t v;
        size_t len;
        uint8_t first;
    } u[] = {{0, 1, 0x00},          {127, 1, 0x7f},         {128, 2, 0xcc},
             {255, 2, 0xcc},        {256, 3, 0xcd},         {65535, 3, 0xcd},
             {65536, 5, 0xce},      {0xffffffffu, 5, 0xce}, {0x100000000ull, 9, 0xcf},
             {UINT64_MAX, 9, 0xcf}};
    static const struct {
        int64_t v;
        size_t len;
        uint8_t first;
    } s[] = {{-1, 1, 0xff},       {-32, 1, 0xe0},        {-33, 2, 0xd0},
             {-128, 2, 0xd0},     {-129, 3, 0xd1},       {-32768, 3, 0xd1},
             {-32769, 5, 0xd2},   {INT32_MIN, 5, 0xd2},  {(int64_t)INT32_MIN - 1, 9, 0xd3},
             {INT64_MIN, 9, 0xd3}};
    size_t i;
    uint8_t buf[16];
    for (i = 0; i < sizeof u / sizeof u[0]; i++) {
        har_mp_reader r;
        uint64_t got = 0;
        size_t n = encode_uint(u[i].v, buf);
        CHECK_EQ_INT(n, u[i].len);
        CHECK_EQ_INT(buf[0], u[i].first);
        har_mp_reader_init(&r, buf, n);
        CHECK_EQ_INT(har_mp_peek(&r), HAR_MP_UINT);
        CHECK(har_mp_read_uint(&r, &got) == 0 && got == u[i].v && r.pos == n);
        /* one byte short: a bounds failure, not a read past the end */
        har_mp_reader_init(&r, buf, n - 1);
        CHECK(n == 1 || har_mp_read_uint(&r, &got) == -1);
    }
    for (i = 0; i < sizeof s / sizeof s[0]; i++) {
        har_mp_reader r;
        int64_t got = 0;
        uint64_t ug;
        size_t n = encode_int(s[i].v, buf);
        CHECK_EQ_INT(n, s[i].len);
        CHECK_EQ_INT(buf[0], s[i].first);
        har_mp_reader_init(&r, buf, n);
        CHECK_EQ_INT(har_mp_peek(&r), HAR_MP_INT);
        CHECK(har_mp_read_int(&r, &got) == 0 && got == s[i].v);
        har_mp_reader_init(&r, buf, n);
        CHECK(har_mp_read_uint(&r, &ug) == -1); /* negative is not a uint */
    }
    /* a non-negative value in a signed encoding is a uint (int8 5) */
    {
        const uint8_t b[] = {0xd0, 0x05};
        har_mp_reader r;
        uint64_t got = 0;
        har_mp_reader_init(&r, b, sizeof b);
        CHECK_EQ_INT(har_mp_peek(&r), HAR_MP_UINT);
        CHECK(har_mp_read_uint(&r, &got) == 0 && got == 5);
    }
    /* uint64 above INT64_MAX does not fit read_int */
    {
        har_mp_reader r;
        int64_t got;
        size_t n = encode_uint(UINT64_MAX, buf);
        har_mp_reader_init(&r, buf, n);
        CHECK(har_mp_read_int(&r, &got) == -1);
    }
}

static void test_strings_and_containers(void)
{
    uint8_t buf[400];
    char long_str[300];
    har_mp_writer w;
    har_mp_reader r;
    const char *s;
    const uint8_t *b;
    uint32_t l, n;
    int bo;
    double d;

    memset(long_str, 'x', sizeof long_str);
    har_mp_writer_init(&w, buf, sizeof buf);
    har_mp_write_map(&w, 3);
    har_mp_write_cstr(&w, "op");
    har_mp_write_cstr(&w, "led.set");
    har_mp_write_cstr(&w, "args");
    har_mp_write_array(&w, 3);
    har_mp_write_nil(&w);
    har_mp_write_bool(&w, 1);
    har_mp_write_float64(&w, 1.5);
    har_mp_write_cstr(&w, "bin");
    har_mp_write_bin(&w, (const uint8_t *)"\x01\x02", 2);
    CHECK(!w.err);
    {
        static const uint8_t want[] = {0x83, 0xa2, 'o', 'p', 0xa7, 'l', 'e', 'd', '.', 's', 'e',
                                       't', 0xa4, 'a', 'r', 'g', 's', 0x93, 0xc0, 0xc3, 0xcb,
                                       0x3f, 0xf8, 0, 0, 0, 0, 0, 0, 0xa3, 'b', 'i', 'n',
                                       0xc4, 0x02, 0x01, 0x02};
        CHECK_EQ_INT(w.pos, sizeof want);
        CHECK_MEM(buf, want, sizeof want);
    }
    har_mp_reader_init(&r, buf, w.pos);
    CHECK(har_mp_read_map(&r, &n) == 0 && n == 3);
    CHECK(har_mp_read_str(&r, &s, &l) == 0 && har_mp_str_eq(s, l, "op"));
    CHECK(har_mp_read_str(&r, &s, &l) == 0 && har_mp_str_eq(s, l, "led.set"));
    CHECK(har_mp_read_str(&r, &s, &l) == 0 && har_mp_str_eq(s, l, "args"));
    CHECK(har_mp_read_array(&r, &n) == 0 && n == 3);
    CHECK(har_mp_read_nil(&r) == 0);
    CHECK(har_mp_read_bool(&r, &bo) == 0 && bo == 1);
    CHECK(har_mp_read_float(&r, &d) == 0 && d == 1.5);
    CHECK(har_mp_read_str(&r, &s, &l) == 0);
    CHECK(har_mp_read_bin(&r, &b, &l) == 0 && l == 2 && b[1] == 2);
    CHECK(r.pos == w.pos && !r.err);
    /* reading past the end fails and the error sticks */
    CHECK(har_mp_read_nil(&r) == -1 && r.err);

    /* str8 / str16 boundaries */
    har_mp_writer_init(&w, buf, sizeof buf);
    har_mp_write_str(&w, long_str, 31);
    CHECK_EQ_INT(buf[0], 0xbf);
    har_mp_writer_init(&w, buf, sizeof buf);
    har_mp_write_str(&w, long_str, 32);
    CHECK(buf[0] == 0xd9 && buf[1] == 32);
    har_mp_writer_init(&w, buf, sizeof buf);
    har_mp_write_str(&w, long_str, 256);
    CHECK(buf[0] == 0xda && buf[1] == 1 && buf[2] == 0);
    har_mp_reader_init(&r, buf, w.pos);
    CHECK(har_mp_read_str(&r, &s, &l) == 0 && l == 256);
    /* a declared length beyond the buffer */
    har_mp_reader_init(&r, buf, w.pos - 1);
    CHECK(har_mp_read_str(&r, &s, &l) == -1);
    /* the writer refuses to overflow, and stays failed */
    har_mp_writer_init(&w, buf, 10);
    CHECK(har_mp_write_str(&w, long_str, 20) == -1 && w.err);
    CHECK(har_mp_write_nil(&w) == -1);
    /* array16 / map16 headers */
    har_mp_writer_init(&w, buf, sizeof buf);
    har_mp_write_array(&w, 16);
    har_mp_write_map(&w, 70000);
    {
        static const uint8_t want[] = {0xdc, 0x00, 0x10, 0xdf, 0x00, 0x01, 0x11, 0x70};
        CHECK_MEM(buf, want, sizeof want);
    }
    /* a container count larger than the bytes left is refused up front */
    har_mp_reader_init(&r, buf, 3);
    CHECK(har_mp_read_array(&r, &n) == -1);
    /* float32 */
    {
        const uint8_t f32[] = {0xca, 0x3f, 0xc0, 0x00, 0x00};
        har_mp_reader_init(&r, f32, sizeof f32);
        CHECK(har_mp_read_float(&r, &d) == 0 && d == 1.5);
    }
    /* 0xc1 is never valid */
    {
        const uint8_t bad[] = {0xc1};
        har_mp_reader_init(&r, bad, 1);
        CHECK_EQ_INT(har_mp_peek(&r), HAR_MP_INVALID);
        CHECK(har_mp_skip(&r) == -1);
    }
}

static void test_utf8(void)
{
    CHECK(har_utf8_valid((const uint8_t *)"h\xc3\xa9", 3));
    CHECK(har_utf8_valid((const uint8_t *)"\xf0\x9f\x98\x80", 4));
    CHECK(!har_utf8_valid((const uint8_t *)"\xc0\xaf", 2));         /* overlong */
    CHECK(!har_utf8_valid((const uint8_t *)"\xe0\x80\xaf", 3));     /* overlong */
    CHECK(!har_utf8_valid((const uint8_t *)"\xed\xa0\x80", 3));     /* surrogate */
    CHECK(!har_utf8_valid((const uint8_t *)"\xf4\x90\x80\x80", 4)); /* > U+10FFFF */
    CHECK(!har_utf8_valid((const uint8_t *)"\xc3", 1));             /* cut short */
    CHECK(!har_utf8_valid((const uint8_t *)"\x80", 1));
    {
        const uint8_t s[] = {0xa2, 0xc3, 0x28};
        har_mp_reader r;
        const char *p;
        uint32_t l;
        har_mp_reader_init(&r, s, sizeof s);
        CHECK(har_mp_read_str(&r, &p, &l) == -1);
    }
}

/* n nested arrays around nil: depth n (the outermost is level 1) */
static size_t nested(uint8_t *buf, unsigned n)
{
    unsigned i;
    for (i = 0; i < n; i++)
        buf[i] = 0x91;
    buf[n] = 0xc0;
    return n + 1;
}

static void test_limits_and_strict(void)
{
    uint8_t buf[64];
    har_mp_reader r;
    size_t n = nested(buf, HAR_MP_MAX_DEPTH);
    har_mp_reader_init(&r, buf, n);
    CHECK(har_mp_validate(&r) == 0 && r.pos == n);
    n = nested(buf, HAR_MP_MAX_DEPTH + 1);
    har_mp_reader_init(&r, buf, n);
    CHECK(har_mp_skip(&r) == -1);
    {
        /* duplicate keys: skip takes it, validate refuses */
        const uint8_t dup[] = {0x82, 0xa1, 'a', 0x01, 0xa1, 'a', 0x02};
        const uint8_t nested_dup[] = {0x81, 0xa1, 'x', 0x82, 0xa1, 'a', 0x01, 0xa1, 'a', 0x02};
        const uint8_t distinct[] = {0x82, 0xa1, 'a', 0x01, 0xa2, 'a', 'b', 0x02};
        const uint8_t int_key[] = {0x81, 0x01, 0x02};
        const uint8_t bin_key[] = {0x81, 0xc4, 0x01, 'a', 0x02};
        const uint8_t ext[] = {0x81, 0xa1, 'e', 0xd4, 0x01, 0x02};
        const uint8_t ext8[] = {0x91, 0xc7, 0x02, 0x05, 0xaa, 0xbb};
        har_mp_reader_init(&r, dup, sizeof dup);
        CHECK(har_mp_skip(&r) == 0);
        har_mp_reader_init(&r, dup, sizeof dup);
        CHECK(har_mp_validate(&r) == -1);
        har_mp_reader_init(&r, nested_dup, sizeof nested_dup);
        CHECK(har_mp_validate(&r) == -1);
        har_mp_reader_init(&r, distinct, sizeof distinct);
        CHECK(har_mp_validate(&r) == 0 && r.pos == sizeof distinct);
        har_mp_reader_init(&r, int_key, sizeof int_key);
        CHECK(har_mp_validate(&r) == -1);
        har_mp_reader_init(&r, bin_key, sizeof bin_key);
        CHECK(har_mp_validate(&r) == -1);
        har_mp_reader_init(&r, ext, sizeof ext);
        CHECK(har_mp_skip(&r) == 0 && r.pos == sizeof ext);
        har_mp_reader_init(&r, ext, sizeof ext);
        CHECK(har_mp_validate(&r) == -1);
        har_mp_reader_init(&r, ext8, sizeof ext8);
        CHECK(har_mp_skip(&r) == 0 && r.pos == sizeof ext8);
        har_mp_reader_init(&r, ext8, sizeof ext8 - 1);
        CHECK(har_mp_skip(&r) == -1);
    }
}

int main(void)
{
    test_integers();
    test_strings_and_containers();
    test_utf8();
    test_limits_and_strict();
    return check_report("msgpack");
}
