/*
 * kv.h - a small in-memory key/value store owned by the server, shared by every thread.
 *
 * Python handlers reach it through host calls (hostfn.c: ctx.host("kv_get"/"kv_set")), HTTP
 * clients through /kv/<key> (kvroute.c). Keys are 1-128 bytes of [A-Za-z0-9_.:-], values at
 * most KV_MAX_VALUE bytes (any bytes); the store holds at most max_keys keys.
 */
#ifndef HTTPD_KV_H
#define HTTPD_KV_H

#include <stdbool.h>
#include <stddef.h>

#define KV_MAX_KEY   128
#define KV_MAX_VALUE 65536

/* Results, non-zero ones chosen to read like HTTP status codes (they reach Python as
 * pypool.HostError codes, see hostfn.h). */
enum kv_status {
    KV_OK = 0,
    KV_EBADKEY = 400,   /* empty, too long or outside the alphabet */
    KV_ENOTFOUND = 404, /* no such key */
    KV_ETOOLARGE = 413, /* value over KV_MAX_VALUE */
    KV_ENOMEM = 500,    /* out of memory */
    KV_EFULL = 507,     /* max_keys keys already, and this one is new */
};

typedef struct kv_store kv_store;

/* NULL when out of memory. */
kv_store *kv_create(size_t max_keys);
void kv_destroy(kv_store *kv); /* NULL-safe */

bool kv_valid_key(const char *key, size_t len);

/* A malloc'ed copy of the value (NUL-terminated, *len without the NUL) in *out. */
int kv_get(kv_store *kv, const char *key, size_t key_len, char **out, size_t *len);
/* Stores a copy, replacing any previous value. */
int kv_set(kv_store *kv, const char *key, size_t key_len, const void *value, size_t len);
/* KV_OK, or KV_ENOTFOUND if there was nothing to delete. */
int kv_delete(kv_store *kv, const char *key, size_t key_len);
size_t kv_count(kv_store *kv);

#endif
