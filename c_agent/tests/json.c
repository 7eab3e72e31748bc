/* json.c - see json.h. Enough JSON for the HARCP vectors: objects, arrays, strings with the
 * usual escapes (\uXXXX incl. surrogate pairs to UTF-8), numbers, true/false/null. */
#include "json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *p;
} parser;

static void ws(parser *ps)
{
    while (*ps->p == ' ' || *ps->p == '\n' || *ps->p == '\r' || *ps->p == '\t')
        ps->p++;
}

static json *node(json_kind k)
{
    json *j = calloc(1, sizeof *j);
    if (!j)
        abort();
    j->kind = k;
    return j;
}

static int hex4(const char *p, unsigned *out)
{
    unsigned v = 0;
    int i;
    for (i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

static char *parse_string(parser *ps)
{
    size_t cap = 16, n = 0;
    char *out = malloc(cap);
    if (!out)
        abort();
    if (*ps->p != '"')
        goto fail;
    ps->p++;
    while (*ps->p != '"') {
        unsigned cp;
        char buf[4];
        size_t bl = 0, k;
        if (!*ps->p)
            goto fail;
        if (*ps->p == '\\') {
            ps->p++;
            switch (*ps->p) {
            case '"': buf[bl++] = '"'; break;
            case '\\': buf[bl++] = '\\'; break;
            case '/': buf[bl++] = '/'; break;
            case 'b': buf[bl++] = '\b'; break;
            case 'f': buf[bl++] = '\f'; break;
            case 'n': buf[bl++] = '\n'; break;
            case 'r': buf[bl++] = '\r'; break;
            case 't': buf[bl++] = '\t'; break;
            case 'u':
                if (hex4(ps->p + 1, &cp))
                    goto fail;
                ps->p += 4;
                if (cp >= 0xd800 && cp < 0xdc00 && ps->p[1] == '\\' && ps->p[2] == 'u') {
                    unsigned lo;
                    if (hex4(ps->p + 3, &lo) == 0 && lo >= 0xdc00 && lo < 0xe000) {
                        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                        ps->p += 6;
                    }
                }
                if (cp < 0x80) {
                    buf[bl++] = (char)cp;
                } else if (cp < 0x800) {
                    buf[bl++] = (char)(0xc0 | (cp >> 6));
                    buf[bl++] = (char)(0x80 | (cp & 0x3f));
                } else if (cp < 0x10000) {
                    buf[bl++] = (char)(0xe0 | (cp >> 12));
                    buf[bl++] = (char)(0x80 | ((cp >> 6) & 0x3f));
                    buf[bl++] = (char)(0x80 | (cp & 0x3f));
                } else {
                    buf[bl++] = (char)(0xf0 | (cp >> 18));
                    buf[bl++] = (char)(0x80 | ((cp >> 12) & 0x3f));
                    buf[bl++] = (char)(0x80 | ((cp >> 6) & 0x3f));
                    buf[bl++] = (char)(0x80 | (cp & 0x3f));
                }
                break;
            default:
                goto fail;
            }
            ps->p++;
        } else {
            buf[bl++] = *ps->p++;
        }
        for (k = 0; k < bl; k++) {
            if (n + 2 > cap) {
                cap *= 2;
                out = realloc(out, cap);
                if (!out)
                    abort();
            }
            out[n++] = buf[k];
        }
    }
    ps->p++;
    out[n] = '\0';
    return out;
fail:
    free(out);
    return NULL;
}

static json *parse_value(parser *ps);

static void push(json *j, char *key, json *v)
{
    j->items = realloc(j->items, (j->n + 1) * sizeof *j->items);
    if (!j->items)
        abort();
    if (j->kind == J_OBJ) {
        j->keys = realloc(j->keys, (j->n + 1) * sizeof *j->keys);
        if (!j->keys)
            abort();
        j->keys[j->n] = key;
    }
    j->items[j->n++] = v;
}

static json *parse_value(parser *ps)
{
    json *j = NULL;
    ws(ps);
    switch (*ps->p) {
    case '{':
        j = node(J_OBJ);
        ps->p++;
        ws(ps);
        if (*ps->p == '}') {
            ps->p++;
            return j;
        }
        for (;;) {
            char *key;
            json *v;
            ws(ps);
            key = parse_string(ps);
            if (!key)
                goto fail;
            ws(ps);
            if (*ps->p != ':') {
                free(key);
                goto fail;
            }
            ps->p++;
            v = parse_value(ps);
            if (!v) {
                free(key);
                goto fail;
            }
            push(j, key, v);
            ws(ps);
            if (*ps->p == ',') {
                ps->p++;
                continue;
            }
            if (*ps->p == '}') {
                ps->p++;
                return j;
            }
            goto fail;
        }
    case '[':
        j = node(J_ARR);
        ps->p++;
        ws(ps);
        if (*ps->p == ']') {
            ps->p++;
            return j;
        }
        for (;;) {
            json *v = parse_value(ps);
            if (!v)
                goto fail;
            push(j, NULL, v);
            ws(ps);
            if (*ps->p == ',') {
                ps->p++;
                continue;
            }
            if (*ps->p == ']') {
                ps->p++;
                return j;
            }
            goto fail;
        }
    case '"':
        j = node(J_STR);
        j->str = parse_string(ps);
        if (!j->str)
            goto fail;
        return j;
    case 't':
        if (strncmp(ps->p, "true", 4))
            return NULL;
        ps->p += 4;
        j = node(J_BOOL);
        j->boolean = 1;
        return j;
    case 'f':
        if (strncmp(ps->p, "false", 5))
            return NULL;
        ps->p += 5;
        return node(J_BOOL);
    case 'n':
        if (strncmp(ps->p, "null", 4))
            return NULL;
        ps->p += 4;
        return node(J_NULL);
    default: {
        const char *start = ps->p;
        char *end;
        double d = strtod(start, &end);
        if (end == start)
            return NULL;
        j = node(J_NUM);
        j->num = d;
        j->num_text = malloc((size_t)(end - start) + 1);
        if (!j->num_text)
            abort();
        memcpy(j->num_text, start, (size_t)(end - start));
        j->num_text[end - start] = '\0';
        ps->p = end;
        return j;
    }
    }
fail:
    json_free(j);
    return NULL;
}

json *json_parse(const char *text)
{
    parser ps;
    json *j;
    ps.p = text;
    j = parse_value(&ps);
    if (!j)
        return NULL;
    ws(&ps);
    if (*ps.p) {
        json_free(j);
        return NULL;
    }
    return j;
}

json *json_load(const char *path)
{
    FILE *f = fopen(path, "rb");
    long n;
    char *text;
    json *j;
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    text = malloc((size_t)n + 1);
    if (!text || fread(text, 1, (size_t)n, f) != (size_t)n) {
        fclose(f);
        free(text);
        return NULL;
    }
    fclose(f);
    text[n] = '\0';
    j = json_parse(text);
    free(text);
    return j;
}

const json *json_get(const json *obj, const char *key)
{
    size_t i;
    if (!obj || obj->kind != J_OBJ)
        return NULL;
    for (i = 0; i < obj->n; i++)
        if (strcmp(obj->keys[i], key) == 0)
            return obj->items[i];
    return NULL;
}

unsigned long long json_u64(const json *v)
{
    if (!v || v->kind != J_NUM)
        return 0;
    return strtoull(v->num_text, NULL, 10);
}

void json_free(json *j)
{
    size_t i;
    if (!j)
        return;
    for (i = 0; i < j->n; i++) {
        json_free(j->items[i]);
        if (j->keys)
            free(j->keys[i]);
    }
    free(j->items);
    free(j->keys);
    free(j->str);
    free(j->num_text);
    free(j);
}
