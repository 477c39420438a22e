/*
 * exchange.c - layer 2, client side: the replies of one request (see exchange.h).
 *
 * Design notes:
 * - A host call runs on the thread that waits for the call that made it, with no lock held,
 *   between two frames of that call: the worker's handler is blocked in ctx.host() meanwhile,
 *   so nothing else of this request can arrive until the HostReply is sent.
 * - Joining a stream for pypool_call keeps the whole reply bounded by max_frame_bytes, the
 *   same bound a one-frame reply has.
 */
#include "exchange.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "error.h"

/* Takes a decoded string field; empty ones stay (protobuf-c may point them at a static ""). */
static char *take_string(char **field)
{
    char *s = *field;
    if (!s || s == protobuf_c_empty_string || !*s)
        return NULL;
    *field = NULL;
    return s;
}

int pypool__xchg_fill(Pypool__Response *resp, pypool_result *out)
{
    if (resp->error) {
        out->error_type = take_string(&resp->error->type);
        out->error_message = take_string(&resp->error->message);
        out->traceback = take_string(&resp->error->traceback);
        if (!out->error_type)
            out->error_type = strdup("Exception");
        if (!out->error_message)
            out->error_message = strdup(out->error_type ? out->error_type : "remote error");
        pypool__set_error(PYPOOL_EREMOTE, "%s: %s", out->error_type ? out->error_type : "",
                          out->error_message ? out->error_message : "");
        return PYPOOL_EREMOTE;
    }
    out->data = pypool__steal_bytes(&resp->payload, &out->len);
    return out->data ? PYPOOL_OK : PYPOOL_ENOMEM;
}

static int send_host_reply(pypool__xchg *x, const Pypool__HostCall *call, const void *data,
                           size_t len, int code, const char *msg)
{
    pypool__wbuf b = {0};
    int rc = pypool__encode_host_reply(&b, call->id, call->call_id, data, len, code, msg,
                                       x->p->cfg.max_frame_bytes);
    if (rc == PYPOOL_EINVAL)
        rc = pypool__encode_host_reply(
            &b, call->id, call->call_id, NULL, 0, PYPOOL__HOST_ERR_TOO_BIG,
            "the host's reply exceeds max_frame_bytes", x->p->cfg.max_frame_bytes);
    if (rc == 0)
        rc = x->send(x, b.data, b.len);
    pypool__wbuf_free(&b);
    return rc;
}

int pypool__xchg_host_call(pypool__xchg *x, const Pypool__HostCall *call)
{
    pypool_host_fn fn = x->p->cfg.host_fn;
    if (!fn)
        return send_host_reply(x, call, NULL, 0, PYPOOL__HOST_ERR_NO_FN,
                               "this pool has no host function (pypool_config.host_fn)");
    void *reply = NULL;
    size_t reply_len = 0;
    int code = fn(x->p->cfg.host_ud, call->name ? call->name : "", call->payload.data,
                  call->payload.len, &reply, &reply_len);
    int rc;
    if (code != 0) {
        char msg[160];
        snprintf(msg, sizeof msg, "host function failed with code %d", code);
        free(reply);
        rc = send_host_reply(x, call, NULL, 0, code, msg);
    } else {
        rc = send_host_reply(x, call, reply, reply ? reply_len : 0, 0, NULL);
        free(reply);
    }
    return rc;
}

/* Appends a chunk to the joined reply: 0, PYPOOL__ETOOBIG once it outgrew max_frame_bytes, or
 * PYPOOL_ENOMEM. */
#define PYPOOL__ETOOBIG (-103)
static int join_chunk(pypool__xchg *x, pypool_result *out, const ProtobufCBinaryData *chunk)
{
    if (out->len + chunk->len > x->p->cfg.max_frame_bytes)
        return PYPOOL__ETOOBIG;
    uint8_t *data = realloc(out->data, out->len + chunk->len + 1);
    if (!data)
        return PYPOOL_ENOMEM;
    if (chunk->len) /* an empty chunk may have no buffer at all */
        memcpy(data + out->len, chunk->data, chunk->len);
    out->data = data;
    out->len += chunk->len;
    out->data[out->len] = 0;
    return 0;
}

static int too_big(pypool__xchg *x, pypool_result *out)
{
    pypool_result_free(out);
    out->error_type = strdup("FrameTooLarge");
    char msg[200];
    snprintf(msg, sizeof msg, "the streamed reply of '%s' exceeds max_frame_bytes (%u)", x->method,
             x->p->cfg.max_frame_bytes);
    out->error_message = strdup(msg);
    return pypool__set_error(PYPOOL_EREMOTE, "FrameTooLarge: %s", msg);
}

/* A final Response ends a joined stream: its chunks, or its own payload, or its error. */
static int finish_joined(pypool__xchg *x, Pypool__Response *resp, pypool_result *out)
{
    x->over = true;
    if (resp->error || !resp->stream_end) {
        uint8_t *joined = out->data;
        size_t joined_len = out->len;
        out->data = NULL;
        out->len = 0;
        int rc = pypool__xchg_fill(resp, out);
        if (rc == PYPOOL_OK && joined_len) { /* chunks before a last plain value: keep order */
            uint8_t *tail = out->data;
            size_t tail_len = out->len;
            out->data = joined;
            out->len = joined_len;
            ProtobufCBinaryData t = {tail_len, tail};
            int joined_rc = join_chunk(x, out, &t);
            free(tail);
            return joined_rc == PYPOOL__ETOOBIG ? too_big(x, out) : joined_rc;
        }
        free(joined);
        return rc;
    }
    if (!out->data && !(out->data = calloc(1, 1)))
        return PYPOOL_ENOMEM;
    return PYPOOL_OK;
}

/* The next Response of the exchange; host calls met on the way are served here. */
static int next_response(pypool__xchg *x, int64_t until_ns, Pypool__Envelope **env)
{
    for (;;) {
        int rc = x->next(x, until_ns, env);
        if (rc < 0 || (*env)->msg_case == PYPOOL__ENVELOPE__MSG_RESPONSE)
            return rc;
        rc = pypool__xchg_host_call(x, (*env)->host_call);
        pypool__envelope_free(*env);
        if (rc < 0)
            return rc;
    }
}

int pypool__xchg_collect(pypool__xchg *x, pypool_result *out)
{
    for (;;) {
        Pypool__Envelope *env;
        int rc = next_response(x, -1, &env);
        if (rc < 0) { /* a failed call returns no data, not the chunks it got so far */
            free(out->data);
            out->data = NULL;
            out->len = 0;
            return rc;
        }
        Pypool__Response *resp = env->response;
        if (resp->more) {
            x->chunks++;
            rc = join_chunk(x, out, &resp->payload);
            pypool__envelope_free(env);
            if (rc == PYPOOL__ETOOBIG)
                return too_big(x, out);
            if (rc)
                return rc;
            continue;
        }
        rc = finish_joined(x, resp, out);
        pypool__envelope_free(env);
        return rc;
    }
}

int pypool__xchg_chunk(pypool__xchg *x, int64_t until_ns, pypool_result *chunk)
{
    if (x->over)
        return PYPOOL_DONE;
    Pypool__Envelope *env;
    int rc = next_response(x, until_ns, &env);
    if (rc < 0)
        return rc;
    Pypool__Response *resp = env->response;
    x->over = !resp->more;
    if (resp->more) {
        x->chunks++;
        chunk->data = pypool__steal_bytes(&resp->payload, &chunk->len);
        rc = chunk->data ? PYPOOL_OK : PYPOOL_ENOMEM;
    } else if (resp->stream_end && !resp->error) {
        rc = PYPOOL_DONE;
    } else {
        x->chunks++;
        rc = pypool__xchg_fill(resp, chunk); /* a plain value (one chunk) or the error */
    }
    pypool__envelope_free(env);
    return rc;
}

int pypool__xchg_drain(pypool__xchg *x)
{
    while (!x->over) {
        Pypool__Envelope *env;
        int rc = x->next(x, -1, &env);
        if (rc < 0)
            return rc;
        if (env->msg_case == PYPOOL__ENVELOPE__MSG_HOST_CALL) {
            rc = send_host_reply(x, env->host_call, NULL, 0, PYPOOL__HOST_ERR_CANCELED,
                                 "the call was cancelled");
            pypool__envelope_free(env);
            if (rc < 0)
                return rc;
            continue;
        }
        x->over = !env->response->more;
        pypool__envelope_free(env);
    }
    return 0;
}
