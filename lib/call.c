/*
 * call.c - one request/reply on a checked-out worker, done by the calling thread itself.
 *
 * Design notes:
 * - The caller owns the slot's channel while BUSY (pool.h), so nothing here takes the pool
 *   mutex on the success path. The mutex is taken only to kill a worker (the pid must not be
 *   reaped meanwhile) and to wait for the reaper's exit status of a worker that died.
 * - A reply whose id is not the outstanding request's is logged and dropped, never returned.
 * - When the deadline passes mid-call the worker's state is unknown: it is killed, and the
 *   slot goes back broken, so no later caller can read the late reply.
 * - A request that could not be written at all (EPIPE before the first byte) never reached a
 *   worker: the caller may retry it on another worker (PYPOOL__ENOTSENT).
 */
#include "call.h"

#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "error.h"
#include "sync.h"

#define EXIT_STATUS_WAIT_MS 1000

void pypool__slot_kill(pypool *p, pypool__slot *s)
{
    pypool__lock(&p->mu);
    if (s->child.pid > 0 && !s->reaped) {
        s->killed = true;
        pypool__signal_group(s->child.pid, SIGKILL);
    }
    pypool__unlock(&p->mu);
}

/* Waits (bounded) for the reaper to reap the slot's worker; fills how it ended. */
static bool wait_exit_status(pypool *p, pypool__slot *s, int64_t wait_ms, char *buf, size_t len)
{
    int64_t until = pypool__deadline_after_ms(wait_ms);
    pypool__lock(&p->mu);
    while (!s->reaped && pypool__cond_wait_until(&p->state_cv, &p->mu, until))
        ;
    bool reaped = s->reaped;
    int status = s->exit_status;
    pypool__unlock(&p->mu);
    if (reaped)
        pypool__describe_status(status, buf, len);
    return reaped;
}

static int fail(pypool_result *out, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(pypool_result *out, int err, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    free(out->error_message);
    out->error_message = strdup(buf);
    pypool__set_error(err, "%s", buf);
    return err;
}

/* The channel broke (EOF, bad frame): tell a dead worker from a misbehaving one. */
static int channel_broken(pypool *p, pypool__slot *s, int rc, const char *method,
                          pypool_result *out, int *reason)
{
    char how[128];
    int64_t wait_ms = rc == PYPOOL_EWORKER ? EXIT_STATUS_WAIT_MS : 50;
    if (wait_exit_status(p, s, wait_ms, how, sizeof how)) {
        *reason = PYPOOL__BREAK_CRASH;
        return fail(out, PYPOOL_EWORKER, "worker pid %d %s during call to '%s'", s->child.pid, how,
                    method);
    }
    pypool__slot_kill(p, s);
    *reason = PYPOOL__BREAK_PROTO;
    s->pend_proto++;
    pypool__log(p, PYPOOL_LOG_WARN, s->child.pid, "protocol error during call to '%s': %s", method,
                rc == PYPOOL_EWORKER ? "reply channel closed" : "bad frame");
    return fail(out, PYPOOL_EPROTO, "worker pid %d broke the protocol during call to '%s' (%s)",
                s->child.pid, method,
                rc == PYPOOL_EWORKER ? "closed its reply channel" : "bad frame");
}

static int timed_out(pypool *p, pypool__slot *s, const char *method, pypool_result *out,
                     int *reason)
{
    pypool__slot_kill(p, s);
    *reason = PYPOOL__BREAK_TIMEOUT;
    s->pend_call_timeouts++;
    pypool__log(p, PYPOOL_LOG_WARN, s->child.pid, "call to '%s' passed its deadline: worker killed",
                method);
    return fail(out, PYPOOL_ETIMEDOUT, "call to '%s' passed its deadline; worker pid %d killed",
                method, s->child.pid);
}

/* Takes a decoded string field; empty ones stay (protobuf-c may point them at a static ""). */
static char *take_string(char **field)
{
    char *s = *field;
    if (!s || s == protobuf_c_empty_string || !*s)
        return NULL;
    *field = NULL;
    return s;
}

/* Moves a decoded Response into the result. */
static int fill_result(pypool__slot *s, Pypool__Response *resp, pypool_result *out)
{
    s->served++;
    if (resp->error) {
        s->pend_remote++;
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

/* Reads frames until the reply to `id`, dropping stale or unexpected ones. */
static int read_reply(pypool *p, pypool__slot *s, uint64_t id, const char *method,
                      int64_t deadline_ns, pypool_result *out, int *reason)
{
    for (;;) {
        const uint8_t *body;
        uint32_t len;
        int rc = pypool__frame_read(&s->reader, deadline_ns, &body, &len);
        if (rc == PYPOOL_ETIMEDOUT)
            return timed_out(p, s, method, out, reason);
        if (rc == PYPOOL_ESYS) {
            pypool__slot_kill(p, s);
            *reason = PYPOOL__BREAK_PROTO;
            return fail(out, PYPOOL_ESYS, "reading the reply failed");
        }
        if (rc < 0)
            return channel_broken(p, s, rc, method, out, reason);
        Pypool__Envelope *env = pypool__envelope_decode(body, len);
        if (!env)
            return channel_broken(p, s, PYPOOL_EPROTO, method, out, reason);
        if (env->msg_case == PYPOOL__ENVELOPE__MSG_RESPONSE && env->response->id == id) {
            rc = fill_result(s, env->response, out);
            pypool__envelope_free(env);
            return rc;
        }
        pypool__log(p, PYPOOL_LOG_WARN, s->child.pid,
                    "dropped an unexpected message (case %d, id %llu) while waiting for reply %llu",
                    (int)env->msg_case,
                    env->msg_case == PYPOOL__ENVELOPE__MSG_RESPONSE
                        ? (unsigned long long)env->response->id
                        : 0ull,
                    (unsigned long long)id);
        pypool__envelope_free(env);
    }
}

/* The worker died without reading a byte of the request: it never saw it. */
static bool never_read(const pypool__slot *s, size_t written)
{
    return written > 0 && pypool__unread_requests(&s->child) >= written;
}

static int not_sent(pypool__slot *s, int *reason)
{
    (void)s;
    *reason = PYPOOL__BREAK_CRASH;
    return PYPOOL__ENOTSENT;
}

static int64_t ms_left(int64_t deadline_ns)
{
    if (deadline_ns < 0)
        return 0;
    int64_t left = (deadline_ns - pypool__now_ns()) / PYPOOL__MS;
    return left > 0 ? left : 1;
}

int pypool__slot_call(pypool *p, pypool__slot *s, const char *session_id, const char *method,
                      const void *payload, size_t len, int64_t deadline_ns, pypool_result *out,
                      int *reason)
{
    *reason = PYPOOL__BREAK_NONE;
    out->worker_pid = s->child.pid;
    pypool__request_hdr h = {.id = ++s->next_id,
                             .method = method,
                             .session_id = session_id,
                             .deadline_ms = ms_left(deadline_ns),
                             .payload_len = len};
    int rc = pypool__encode_request(&s->wbuf, &h, p->cfg.max_frame_bytes);
    if (rc == PYPOOL_EINVAL)
        return fail(out, rc, "request of %zu payload bytes exceeds max_frame_bytes (%u)", len,
                    p->cfg.max_frame_bytes);
    if (rc)
        return fail(out, rc, "out of memory encoding the request");
    struct iovec iov[2] = {{s->wbuf.data, s->wbuf.len}, {(void *)payload, len}};
    size_t written = 0;
    rc = pypool__frame_write_held(s->child.req_fd, s->child.resp_fd, iov, len ? 2 : 1, deadline_ns,
                                  &written);
    if (rc == PYPOOL_EWORKER)
        return never_read(s, written) ? not_sent(s, reason)
                                      : channel_broken(p, s, rc, method, out, reason);
    if (rc == PYPOOL_ETIMEDOUT)
        return timed_out(p, s, method, out, reason);
    if (rc) {
        pypool__slot_kill(p, s);
        *reason = PYPOOL__BREAK_PROTO;
        return fail(out, PYPOOL_ESYS, "writing the request failed");
    }
    rc = read_reply(p, s, h.id, method, deadline_ns, out, reason);
    if (rc == PYPOOL_EWORKER && *reason == PYPOOL__BREAK_CRASH && never_read(s, written)) {
        free(out->error_message);
        out->error_message = NULL;
        return not_sent(s, reason);
    }
    return rc;
}

int pypool__slot_session_close(pypool *p, pypool__slot *s, const char *session_id, int *reason)
{
    *reason = PYPOOL__BREAK_NONE;
    if (pypool__encode_session_close(&s->wbuf, session_id) != 0)
        return PYPOOL_ENOMEM;
    struct iovec iov = {s->wbuf.data, s->wbuf.len};
    int64_t deadline = pypool__deadline_after_ms(p->cfg.call_timeout_ms);
    int rc = pypool__frame_write_held(s->child.req_fd, s->child.resp_fd, &iov, 1, deadline, NULL);
    if (rc) {
        pypool__slot_kill(p, s);
        *reason = rc == PYPOOL_EWORKER ? PYPOOL__BREAK_CRASH : PYPOOL__BREAK_TIMEOUT;
    }
    return 0; /* the state is gone either way */
}

bool pypool__slot_channel_dirty(const pypool__slot *s)
{
    /* No system call here: a worker that died idle is caught by the reaper (pidfd) or, in
     * the window before it, by the write/EOF path (never_read: the request is retried). */
    return s->reader.err || s->reader.end > s->reader.start + s->reader.pending;
}
