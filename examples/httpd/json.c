/*
 * json.c - growable text buffer and JSON encoding (RFC 8259 strings, numbers, structure).
 *
 * Strings from Python (exception messages, tracebacks) may hold any byte, so json_string_n
 * validates UTF-8 and replaces each invalid byte with U+FFFD: the reply is always valid JSON.
 */
#include "json.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void jbuf_init(jbuf *b)
{
    memset(b, 0, sizeof *b);
}

void jbuf_free(jbuf *b)
{
    free(b->data);
    jbuf_init(b);
}

char *jbuf_take(jbuf *b, size_t *len)
{
    jbuf_append(b, "", 0); /* makes sure there is a buffer to terminate */
    if (b->oom) {
        jbuf_free(b);
        return NULL;
    }
    char *text = b->data;
    *len = b->len;
    jbuf_init(b);
    return text;
}

static bool jbuf_reserve(jbuf *b, size_t extra)
{
    if (b->oom)
        return false;
    if (b->len + extra + 1 <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1)
        cap *= 2;
    char *data = realloc(b->data, cap);
    if (!data) {
        b->oom = true;
        return false;
    }
    b->data = data;
    b->cap = cap;
    return true;
}

void jbuf_append(jbuf *b, const char *s, size_t n)
{
    if (!jbuf_reserve(b, n))
        return;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void jbuf_puts(jbuf *b, const char *s)
{
    jbuf_append(b, s, strlen(s));
}

/* A comma is due unless the buffer is empty or the last token opened a container or a key. */
static void json_sep(jbuf *b)
{
    if (b->len == 0 || b->oom)
        return;
    char last = b->data[b->len - 1];
    if (last != '{' && last != '[' && last != ':')
        jbuf_append(b, ",", 1);
}

void json_begin_object(jbuf *b)
{
    json_sep(b);
    jbuf_append(b, "{", 1);
}

void json_end_object(jbuf *b)
{
    jbuf_append(b, "}", 1);
}

void json_begin_array(jbuf *b)
{
    json_sep(b);
    jbuf_append(b, "[", 1);
}

void json_end_array(jbuf *b)
{
    jbuf_append(b, "]", 1);
}

void json_key(jbuf *b, const char *key)
{
    json_string(b, key);
    jbuf_append(b, ":", 1);
}

/* Length of the valid UTF-8 sequence at s (1-4), or 0 if it is invalid (RFC 3629: no
 * overlong forms, no surrogates, nothing above U+10FFFF). */
static size_t utf8_valid_len(const unsigned char *s, size_t left)
{
    unsigned char c = s[0];
    size_t n;
    unsigned char lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        lo = c == 0xE0 ? 0xA0 : 0x80;
        hi = c == 0xED ? 0x9F : 0xBF;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        lo = c == 0xF0 ? 0x90 : 0x80;
        hi = c == 0xF4 ? 0x8F : 0xBF;
    } else {
        return 0;
    }
    if (left < n || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
    }
    return n;
}

/* The escape for an ASCII byte, or NULL if it is copied as is. */
static const char *ascii_escape(unsigned char c, char tmp[8])
{
    switch (c) {
    case '"':
        return "\\\"";
    case '\\':
        return "\\\\";
    case '\n':
        return "\\n";
    case '\r':
        return "\\r";
    case '\t':
        return "\\t";
    case '\b':
        return "\\b";
    case '\f':
        return "\\f";
    default:
        break;
    }
    if (c < 0x20 || c == 0x7F) {
        snprintf(tmp, 8, "\\u%04x", c);
        return tmp;
    }
    return NULL;
}

void json_string_n(jbuf *b, const char *s, size_t n)
{
    json_sep(b);
    jbuf_append(b, "\"", 1);
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        char tmp[8];
        if (u[i] < 0x80) {
            const char *esc = ascii_escape(u[i], tmp);
            if (esc)
                jbuf_puts(b, esc);
            else
                jbuf_append(b, s + i, 1);
            i++;
            continue;
        }
        size_t len = utf8_valid_len(u + i, n - i);
        if (len == 0) {
            jbuf_puts(b, "\\ufffd");
            i++;
        } else {
            jbuf_append(b, s + i, len);
            i += len;
        }
    }
    jbuf_append(b, "\"", 1);
}

void json_string(jbuf *b, const char *s)
{
    if (!s) {
        json_sep(b);
        jbuf_puts(b, "null");
        return;
    }
    json_string_n(b, s, strlen(s));
}

void json_u64(jbuf *b, uint64_t v)
{
    char tmp[32];
    snprintf(tmp, sizeof tmp, "%" PRIu64, v);
    json_sep(b);
    jbuf_puts(b, tmp);
}

void json_i64(jbuf *b, int64_t v)
{
    char tmp[32];
    snprintf(tmp, sizeof tmp, "%" PRId64, v);
    json_sep(b);
    jbuf_puts(b, tmp);
}

void json_bool(jbuf *b, bool v)
{
    json_sep(b);
    jbuf_puts(b, v ? "true" : "false");
}

void json_field_str(jbuf *b, const char *key, const char *v)
{
    json_key(b, key);
    json_string(b, v);
}

void json_field_u64(jbuf *b, const char *key, uint64_t v)
{
    json_key(b, key);
    json_u64(b, v);
}

void json_field_i64(jbuf *b, const char *key, int64_t v)
{
    json_key(b, key);
    json_i64(b, v);
}

void json_field_bool(jbuf *b, const char *key, bool v)
{
    json_key(b, key);
    json_bool(b, v);
}
