/* har_crypto.h - the cryptography HARCP needs, behind an interface.
 *
 * Ed25519 (pure, RFC 8032) signatures and SHA-256. The Linux build provides
 * har_crypto_sodium() over libsodium; a port to another platform fills a har_crypto with its
 * own functions (an RTOS's crypto library, a secure element) and passes it to the protocol
 * layer and the agent. Functions return 0 on success. */
#ifndef HAR_CRYPTO_H
#define HAR_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define HAR_SEED_LEN 32
#define HAR_PUBLIC_KEY_LEN 32
#define HAR_SIGNATURE_LEN 64
#define HAR_KEY_ID_LEN 8
#define HAR_SHA256_LEN 32

typedef struct har_crypto {
    /* Ed25519 signature of msg by the key of `seed` (whose public key is `public_key`). */
    int (*sign)(const uint8_t seed[HAR_SEED_LEN], const uint8_t public_key[HAR_PUBLIC_KEY_LEN],
                const uint8_t *msg, size_t len, uint8_t sig[HAR_SIGNATURE_LEN]);
    /* 0 if sig is a valid signature of msg by public_key. */
    int (*verify)(const uint8_t public_key[HAR_PUBLIC_KEY_LEN], const uint8_t *msg, size_t len,
                  const uint8_t sig[HAR_SIGNATURE_LEN]);
    int (*sha256)(const uint8_t *msg, size_t len, uint8_t out[HAR_SHA256_LEN]);
    /* The Ed25519 public key of a seed. */
    int (*public_from_seed)(const uint8_t seed[HAR_SEED_LEN],
                            uint8_t public_key[HAR_PUBLIC_KEY_LEN]);
    /* len cryptographically random bytes (operation ids) */
    int (*random)(uint8_t *buf, size_t len);
} har_crypto;

/* A signing key: seed, public key, key id (first 8 bytes of SHA-256 of the public key). */
typedef struct {
    uint8_t seed[HAR_SEED_LEN];
    uint8_t public_key[HAR_PUBLIC_KEY_LEN];
    uint8_t key_id[HAR_KEY_ID_LEN];
} har_signing_key;

/* A trusted peer's public key and its key id. */
typedef struct {
    uint8_t public_key[HAR_PUBLIC_KEY_LEN];
    uint8_t key_id[HAR_KEY_ID_LEN];
} har_public_key;

/* key_id = SHA-256(public_key)[0..8). */
int har_key_id(const har_crypto *c, const uint8_t public_key[HAR_PUBLIC_KEY_LEN],
               uint8_t key_id[HAR_KEY_ID_LEN]);
/* Fills a signing key (public key, key id) from its seed. */
int har_signing_key_from_seed(const har_crypto *c, const uint8_t seed[HAR_SEED_LEN],
                              har_signing_key *out);
/* Fills a public key's key id. */
int har_public_key_init(const har_crypto *c, const uint8_t public_key[HAR_PUBLIC_KEY_LEN],
                        har_public_key *out);

/* The libsodium implementation (src/har_crypto_sodium.c); NULL if sodium_init() fails. */
const har_crypto *har_crypto_sodium(void);

#ifdef __cplusplus
}
#endif
#endif
