/*
 * kvroute.c - /kv/<key>: GET answers the value's bytes (404 if unset), PUT stores the body,
 * DELETE removes the key. Store failures map to the status their kv_status code names.
 */
#include "kvroute.h"

#include <stdlib.h>
#include <string.h>

#include "kv.h"

static void reply_kv_error(reply *r, int rc)
{
    switch (rc) {
    case KV_EBADKEY:
        reply_error(r, 400, "bad request", "key must be 1-128 of [A-Za-z0-9_.:-]");
        break;
    case KV_ENOTFOUND:
        reply_error(r, 404, "not found", "no such key");
        break;
    case KV_ETOOLARGE:
        reply_error(r, 413, "payload too large", "values are limited to 65536 bytes");
        break;
    case KV_EFULL:
        reply_error(r, 507, "insufficient storage", "the store is full (--kv-max-keys)");
        break;
    default:
        reply_error(r, 500, "internal error", "out of memory");
        break;
    }
}

static void reply_key(reply *r, const char *key, const char *what, size_t n)
{
    jbuf doc;
    jbuf_init(&doc);
    json_begin_object(&doc);
    json_field_str(&doc, "key", key);
    json_field_u64(&doc, what, n);
    json_end_object(&doc);
    reply_json(r, 200, &doc);
}

void handle_kv(const httpd_app *app, const char *http_method, const char *key, const char *body,
               size_t len, reply *r)
{
    size_t key_len = strlen(key);
    int rc;
    if (strcmp(http_method, "PUT") == 0) {
        rc = kv_set(app->kv, key, key_len, body, len);
        if (rc == KV_OK)
            reply_key(r, key, "stored", len);
    } else if (strcmp(http_method, "DELETE") == 0) {
        rc = kv_delete(app->kv, key, key_len);
        if (rc == KV_OK)
            reply_key(r, key, "deleted", 1);
    } else { /* GET, HEAD */
        char *value = NULL;
        size_t n = 0;
        rc = kv_get(app->kv, key, key_len, &value, &n);
        if (rc == KV_OK)
            reply_bytes(r, 200, value, n, "application/octet-stream");
        free(value);
    }
    if (rc != KV_OK)
        reply_kv_error(r, rc);
}
