/*
 * hostfn.h - the pool's host function: what Python handlers may call in the server with
 * ctx.host(name, payload).
 *
 *   kv_get  payload: key                 reply: the value
 *   kv_set  payload: key, NUL, value     reply: empty
 *
 * Failures are the kv_status codes (kv.h: 400 bad key or payload, 404 no such key, 413 value too
 * large, 507 store full, 500 out of memory) and HOST_EUNKNOWN for a name not listed above;
 * ctx.host raises pypool.HostError with that code.
 */
#ifndef HTTPD_HOSTFN_H
#define HTTPD_HOSTFN_H

#include <stddef.h>

#define HOST_EUNKNOWN 501 /* no host function of that name */

/* A pypool_host_fn; ud is the kv_store. Thread-safe (the store is). */
int host_call(void *ud, const char *name, const void *payload, size_t len, void **reply,
              size_t *reply_len);

#endif
