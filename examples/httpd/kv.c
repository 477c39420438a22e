/*
 * kv.c - the server's key/value store: a hash table with chaining behind one mutex.
 *
 * Design notes: `mu` guards every field but max_keys (fixed at creation). Values are copied in
 * and out under the lock, so no caller ever holds a pointer into the table; the lock is held
 * only for a lookup and a memcpy of at most KV_MAX_VALUE bytes. 1024 buckets, no rehashing:
 * chains stay short for the example's sizes (max_keys is 10000 by default).
 */
#include "kv.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define KV_BUCKETS 1024

typedef struct kv_entry {
    struct kv_entry *next;
    char *value;
    size_t value_len;
    size_t key_len;
    char key[]; /* key_len bytes, NUL-terminated */
} kv_entry;

struct kv_store {
    pthread_mutex_t mu;
    size_t max_keys;
    size_t count;
    kv_entry *buckets[KV_BUCKETS];
};

kv_store *kv_create(size_t max_keys)
{
    kv_store *kv = calloc(1, sizeof *kv);
    if (!kv)
        return NULL;
    if (pthread_mutex_init(&kv->mu, NULL) != 0) {
        free(kv);
        return NULL;
    }
    kv->max_keys = max_keys;
    return kv;
}

void kv_destroy(kv_store *kv)
{
    if (!kv)
        return;
    for (size_t i = 0; i < KV_BUCKETS; i++) {
        kv_entry *e = kv->buckets[i];
        while (e) {
            kv_entry *next = e->next;
            free(e->value);
            free(e);
            e = next;
        }
    }
    pthread_mutex_destroy(&kv->mu);
    free(kv);
}

bool kv_valid_key(const char *key, size_t len)
{
    static const char extra[] = "_.:-";
    if (len == 0 || len > KV_MAX_KEY)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = key[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (!alnum && (c == '\0' || !strchr(extra, c)))
            return false;
    }
    return true;
}

/* FNV-1a */
static size_t bucket_of(const char *key, size_t len)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)key[i];
        h *= 16777619u;
    }
    return h % KV_BUCKETS;
}

/* The link that points at the key's entry (or at the NULL ending its chain). */
static kv_entry **find_locked(kv_store *kv, const char *key, size_t len)
{
    kv_entry **link = &kv->buckets[bucket_of(key, len)];
    while (*link && ((*link)->key_len != len || memcmp((*link)->key, key, len) != 0))
        link = &(*link)->next;
    return link;
}

/* A malloc'ed, NUL-terminated copy of len bytes. */
static char *copy_bytes(const void *data, size_t len)
{
    char *c = malloc(len + 1);
    if (!c)
        return NULL;
    if (len)
        memcpy(c, data, len);
    c[len] = '\0';
    return c;
}

int kv_get(kv_store *kv, const char *key, size_t key_len, char **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    if (!kv_valid_key(key, key_len))
        return KV_EBADKEY;
    int rc = KV_ENOTFOUND;
    pthread_mutex_lock(&kv->mu);
    kv_entry *e = *find_locked(kv, key, key_len);
    if (e) {
        *out = copy_bytes(e->value, e->value_len);
        *len = *out ? e->value_len : 0;
        rc = *out ? KV_OK : KV_ENOMEM;
    }
    pthread_mutex_unlock(&kv->mu);
    return rc;
}

int kv_set(kv_store *kv, const char *key, size_t key_len, const void *value, size_t len)
{
    if (!kv_valid_key(key, key_len))
        return KV_EBADKEY;
    if (len > KV_MAX_VALUE)
        return KV_ETOOLARGE;
    char *copy = copy_bytes(value, len); /* outside the lock */
    if (!copy)
        return KV_ENOMEM;
    int rc = KV_OK;
    pthread_mutex_lock(&kv->mu);
    kv_entry **link = find_locked(kv, key, key_len);
    if (*link) {
        free((*link)->value);
        (*link)->value = copy;
        (*link)->value_len = len;
        copy = NULL;
    } else if (kv->count >= kv->max_keys) {
        rc = KV_EFULL;
    } else {
        kv_entry *e = malloc(sizeof *e + key_len + 1);
        if (e) {
            memcpy(e->key, key, key_len);
            e->key[key_len] = '\0';
            e->key_len = key_len;
            e->value = copy;
            e->value_len = len;
            e->next = NULL;
            *link = e;
            kv->count++;
            copy = NULL;
        } else {
            rc = KV_ENOMEM;
        }
    }
    pthread_mutex_unlock(&kv->mu);
    free(copy);
    return rc;
}

int kv_delete(kv_store *kv, const char *key, size_t key_len)
{
    if (!kv_valid_key(key, key_len))
        return KV_EBADKEY;
    pthread_mutex_lock(&kv->mu);
    kv_entry **link = find_locked(kv, key, key_len);
    kv_entry *e = *link;
    if (e) {
        *link = e->next;
        kv->count--;
    }
    pthread_mutex_unlock(&kv->mu);
    if (!e)
        return KV_ENOTFOUND;
    free(e->value);
    free(e);
    return KV_OK;
}

size_t kv_count(kv_store *kv)
{
    pthread_mutex_lock(&kv->mu);
    size_t n = kv->count;
    pthread_mutex_unlock(&kv->mu);
    return n;
}
