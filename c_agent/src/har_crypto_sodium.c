/* har_crypto_sodium.c - the har_crypto interface over libsodium. */
#include "har_crypto.h"

#include <sodium.h>
#include <string.h>

static int s_sign(const uint8_t seed[HAR_SEED_LEN], const uint8_t public_key[HAR_PUBLIC_KEY_LEN],
                  const uint8_t *msg, size_t len, uint8_t sig[HAR_SIGNATURE_LEN])
{
    /* libsodium's secret key is seed || public key */
    uint8_t sk[crypto_sign_SECRETKEYBYTES];
    int rc;
    memcpy(sk, seed, HAR_SEED_LEN);
    memcpy(sk + HAR_SEED_LEN, public_key, HAR_PUBLIC_KEY_LEN);
    rc = crypto_sign_detached(sig, NULL, msg, len, sk);
    sodium_memzero(sk, sizeof sk);
    return rc == 0 ? 0 : -1;
}

static int s_verify(const uint8_t public_key[HAR_PUBLIC_KEY_LEN], const uint8_t *msg, size_t len,
                    const uint8_t sig[HAR_SIGNATURE_LEN])
{
    return crypto_sign_verify_detached(sig, msg, len, public_key) == 0 ? 0 : -1;
}

static int s_sha256(const uint8_t *msg, size_t len, uint8_t out[HAR_SHA256_LEN])
{
    return crypto_hash_sha256(out, msg, len) == 0 ? 0 : -1;
}

static int s_public_from_seed(const uint8_t seed[HAR_SEED_LEN],
                              uint8_t public_key[HAR_PUBLIC_KEY_LEN])
{
    uint8_t sk[crypto_sign_SECRETKEYBYTES];
    int rc = crypto_sign_seed_keypair(public_key, sk, seed);
    sodium_memzero(sk, sizeof sk);
    return rc == 0 ? 0 : -1;
}

static int s_random(uint8_t *buf, size_t len)
{
    randombytes_buf(buf, len);
    return 0;
}

static const har_crypto sodium_impl = {s_sign, s_verify, s_sha256, s_public_from_seed, s_random};

const har_crypto *har_crypto_sodium(void)
{
    if (sodium_init() < 0)
        return NULL;
    return &sodium_impl;
}
