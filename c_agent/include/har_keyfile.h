/* har_keyfile.h - HARCP key files (docs/harcp.md §7): `name = "value"` lines, `#` comments.
 *
 *   algorithm = "ed25519"
 *   key_id = "<16 hex>"
 *   public = "<64 hex>"
 *   secret = "<64 hex: the 32-byte seed>"    # only in the private file
 */
#ifndef HAR_KEYFILE_H
#define HAR_KEYFILE_H

#include <stddef.h>
#include <stdint.h>

#include "har_crypto.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int has_secret;
    uint8_t seed[HAR_SEED_LEN];
    uint8_t public_key[HAR_PUBLIC_KEY_LEN];
    uint8_t key_id[HAR_KEY_ID_LEN];
} har_keyfile;

typedef enum {
    HAR_KEYFILE_OK = 0,
    HAR_KEYFILE_SYNTAX = -1,      /* a line that is not `name = "value"` */
    HAR_KEYFILE_ALGORITHM = -2,   /* algorithm missing or not ed25519 */
    HAR_KEYFILE_MISSING = -3,     /* key_id or public missing */
    HAR_KEYFILE_BAD_VALUE = -4,   /* a value of the wrong length or not hex */
    HAR_KEYFILE_MISMATCH = -5,    /* key_id or public do not match public or secret */
    HAR_KEYFILE_IO = -6,          /* cannot read the file */
    HAR_KEYFILE_PERMISSIONS = -7  /* a secret in a file readable by group or others */
} har_keyfile_status;

/* Parses key file text. With `c`, checks key_id = SHA-256(public)[0..8) and, when a secret is
 * present, that it yields `public`. Unknown names are ignored. */
int har_keyfile_parse(const char *text, size_t len, const har_crypto *c, har_keyfile *out);
/* Reads and parses a file (POSIX): refuses a file with a secret readable by group/others. */
int har_keyfile_load(const char *path, const har_crypto *c, har_keyfile *out);
const char *har_keyfile_strerror(int status);
/* Hex helpers: 0 on success (exactly 2*n hex digits). */
int har_hex_decode(const char *hex, size_t hex_len, uint8_t *out, size_t n);
void har_hex_encode(const uint8_t *in, size_t n, char *out /* 2n+1 */);

#ifdef __cplusplus
}
#endif
#endif
