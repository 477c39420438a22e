/*
 * hostfn.c - serving ctx.host() calls from handlers: the key/value store's kv_get and kv_set.
 *
 * pypool runs this on the request's own thread, the one waiting in pypool_call or
 * pypool_stream_next, with no pool lock held; the store has its own lock.
 */
#include "hostfn.h"

#include <string.h>

#include "kv.h"

static int host_kv_get(kv_store *kv, const char *key, size_t len, void **reply, size_t *reply_len)
{
    char *value = NULL;
    int rc = kv_get(kv, key, len, &value, reply_len);
    *reply = value;
    return rc;
}

static int host_kv_set(kv_store *kv, const char *payload, size_t len)
{
    const char *nul = memchr(payload, '\0', len);
    if (!nul)
        return KV_EBADKEY; /* no key/value separator */
    size_t key_len = (size_t)(nul - payload);
    return kv_set(kv, payload, key_len, nul + 1, len - key_len - 1);
}

int host_call(void *ud, const char *name, const void *payload, size_t len, void **reply,
              size_t *reply_len)
{
    kv_store *kv = ud;
    *reply = NULL;
    *reply_len = 0;
    if (!payload)
        len = 0;
    const char *p = payload ? payload : "";
    if (strcmp(name, "kv_get") == 0)
        return host_kv_get(kv, p, len, reply, reply_len);
    if (strcmp(name, "kv_set") == 0)
        return host_kv_set(kv, p, len);
    return HOST_EUNKNOWN;
}
