/*
 * json.h - a growable text buffer and the JSON encoding the server's replies need.
 *
 * Out-of-memory is sticky: after a failed allocation every append is a no-op and
 * jbuf_take() returns NULL, so builders check once at the end instead of after every call.
 */
#ifndef HTTPD_JSON_H
#define HTTPD_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct jbuf {
    char *data;
    size_t len, cap;
    bool oom;
} jbuf;

void jbuf_init(jbuf *b);
void jbuf_free(jbuf *b);
/* Hands the NUL-terminated text (free() it) and its length to the caller; NULL after OOM. */
char *jbuf_take(jbuf *b, size_t *len);
void jbuf_append(jbuf *b, const char *s, size_t n);
void jbuf_puts(jbuf *b, const char *s);

/* Structure: separators are inserted automatically between members and elements. */
void json_begin_object(jbuf *b);
void json_end_object(jbuf *b);
void json_begin_array(jbuf *b);
void json_end_array(jbuf *b);
void json_key(jbuf *b, const char *key);

/* Values (each writes a separator first when needed). */
void json_string_n(jbuf *b, const char *s, size_t n); /* escaped; invalid UTF-8 -> U+FFFD */
void json_string(jbuf *b, const char *s);             /* NULL -> null */
void json_u64(jbuf *b, uint64_t v);
void json_i64(jbuf *b, int64_t v);
void json_bool(jbuf *b, bool v);

/* key + value shorthands */
void json_field_str(jbuf *b, const char *key, const char *v);
void json_field_u64(jbuf *b, const char *key, uint64_t v);
void json_field_i64(jbuf *b, const char *key, int64_t v);
void json_field_bool(jbuf *b, const char *key, bool v);

#endif
