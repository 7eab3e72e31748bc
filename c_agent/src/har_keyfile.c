/* har_keyfile.c - key file parser (no heap, no I/O). */
#include "har_keyfile.h"

#include <string.h>

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int har_hex_decode(const char *hex, size_t hex_len, uint8_t *out, size_t n)
{
    size_t i;
    if (hex_len != 2 * n)
        return -1;
    for (i = 0; i < n; i++) {
        int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

void har_hex_encode(const uint8_t *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    size_t i;
    for (i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r';
}

int har_keyfile_parse(const char *text, size_t len, const har_crypto *c, har_keyfile *out)
{
    size_t pos = 0;
    int have_alg = 0, have_id = 0, have_pub = 0;
    memset(out, 0, sizeof *out);
    while (pos < len) {
        size_t end = pos, p, name_start, name_end, val_start, val_end;
        while (end < len && text[end] != '\n')
            end++;
        p = pos;
        pos = end + 1;
        while (p < end && is_space(text[p]))
            p++;
        if (p == end || text[p] == '#')
            continue;
        name_start = p;
        while (p < end && (text[p] == '_' || (text[p] >= 'a' && text[p] <= 'z') ||
                           (text[p] >= 'A' && text[p] <= 'Z') || (text[p] >= '0' && text[p] <= '9')))
            p++;
        name_end = p;
        while (p < end && is_space(text[p]))
            p++;
        if (name_end == name_start || p == end || text[p] != '=')
            return HAR_KEYFILE_SYNTAX;
        p++;
        while (p < end && is_space(text[p]))
            p++;
        if (p == end || text[p] != '"')
            return HAR_KEYFILE_SYNTAX;
        val_start = ++p;
        while (p < end && text[p] != '"')
            p++;
        if (p == end)
            return HAR_KEYFILE_SYNTAX;
        val_end = p++;
        while (p < end && is_space(text[p]))
            p++;
        if (p < end && text[p] != '#')
            return HAR_KEYFILE_SYNTAX;
#define NAME_IS(s) (name_end - name_start == sizeof(s) - 1 && \
                    memcmp(text + name_start, s, sizeof(s) - 1) == 0)
        if (NAME_IS("algorithm")) {
            if (val_end - val_start != 7 || memcmp(text + val_start, "ed25519", 7) != 0)
                return HAR_KEYFILE_ALGORITHM;
            have_alg = 1;
        } else if (NAME_IS("key_id")) {
            if (har_hex_decode(text + val_start, val_end - val_start, out->key_id,
                               HAR_KEY_ID_LEN))
                return HAR_KEYFILE_BAD_VALUE;
            have_id = 1;
        } else if (NAME_IS("public")) {
            if (har_hex_decode(text + val_start, val_end - val_start, out->public_key,
                               HAR_PUBLIC_KEY_LEN))
                return HAR_KEYFILE_BAD_VALUE;
            have_pub = 1;
        } else if (NAME_IS("secret")) {
            if (har_hex_decode(text + val_start, val_end - val_start, out->seed, HAR_SEED_LEN))
                return HAR_KEYFILE_BAD_VALUE;
            out->has_secret = 1;
        }
#undef NAME_IS
    }
    if (!have_alg)
        return HAR_KEYFILE_ALGORITHM;
    if (!have_id || !have_pub)
        return HAR_KEYFILE_MISSING;
    if (c) {
        uint8_t id[HAR_KEY_ID_LEN], pub[HAR_PUBLIC_KEY_LEN];
        if (har_key_id(c, out->public_key, id) || memcmp(id, out->key_id, sizeof id) != 0)
            return HAR_KEYFILE_MISMATCH;
        if (out->has_secret && (c->public_from_seed(out->seed, pub) ||
                                memcmp(pub, out->public_key, sizeof pub) != 0))
            return HAR_KEYFILE_MISMATCH;
    }
    return HAR_KEYFILE_OK;
}

const char *har_keyfile_strerror(int status)
{
    switch (status) {
    case HAR_KEYFILE_OK: return "ok";
    case HAR_KEYFILE_SYNTAX: return "a line is not `name = \"value\"`";
    case HAR_KEYFILE_ALGORITHM: return "algorithm missing or not \"ed25519\"";
    case HAR_KEYFILE_MISSING: return "key_id or public missing";
    case HAR_KEYFILE_BAD_VALUE: return "a value has the wrong length or is not hex";
    case HAR_KEYFILE_MISMATCH: return "key_id/public do not match public/secret";
    case HAR_KEYFILE_IO: return "cannot read the file";
    case HAR_KEYFILE_PERMISSIONS: return "secret key file readable by group or others";
    default: return "unknown error";
    }
}
