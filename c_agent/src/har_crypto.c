/* har_crypto.c - helpers over a har_crypto implementation. */
#include "har_crypto.h"

#include <string.h>

int har_key_id(const har_crypto *c, const uint8_t public_key[HAR_PUBLIC_KEY_LEN],
               uint8_t key_id[HAR_KEY_ID_LEN])
{
    uint8_t digest[HAR_SHA256_LEN];
    if (c->sha256(public_key, HAR_PUBLIC_KEY_LEN, digest))
        return -1;
    memcpy(key_id, digest, HAR_KEY_ID_LEN);
    return 0;
}

int har_signing_key_from_seed(const har_crypto *c, const uint8_t seed[HAR_SEED_LEN],
                              har_signing_key *out)
{
    memcpy(out->seed, seed, HAR_SEED_LEN);
    if (c->public_from_seed(seed, out->public_key))
        return -1;
    return har_key_id(c, out->public_key, out->key_id);
}

int har_public_key_init(const har_crypto *c, const uint8_t public_key[HAR_PUBLIC_KEY_LEN],
                        har_public_key *out)
{
    memcpy(out->public_key, public_key, HAR_PUBLIC_KEY_LEN);
    return har_key_id(c, public_key, out->key_id);
}
