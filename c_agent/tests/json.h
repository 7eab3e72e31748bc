/* json.h - a tiny JSON reader for the test harness (heap-allocated tree; tests only). */
#ifndef HAR_TEST_JSON_H
#define HAR_TEST_JSON_H

#include <stddef.h>

typedef enum { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ } json_kind;

typedef struct json {
    json_kind kind;
    int boolean;
    double num;
    char *str;           /* J_STR (NUL-terminated, no embedded NULs needed here) */
    char *num_text;      /* J_NUM: the literal, for exact 64-bit integers */
    struct json **items; /* J_ARR values, J_OBJ values */
    char **keys;         /* J_OBJ keys */
    size_t n;
} json;

/* Parses a whole document; NULL on a syntax error. */
json *json_parse(const char *text);
json *json_load(const char *path);
/* Member of an object, NULL if absent. */
const json *json_get(const json *obj, const char *key);
unsigned long long json_u64(const json *v);
void json_free(json *v);

#endif
