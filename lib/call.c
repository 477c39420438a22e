/*
 * call.c - one request/reply on a checked-out worker, done by the calling thread itself.
 *
 * Design notes:
 * - The caller owns the slot's channel while BUSY (pool.h), so the success path takes no lock
 *   here and makes two system calls: one writev for the request, one blocking read for the
 *   reply (on these VMs a system call costs ~1.5 us, so a poll() per call would be 7% of a
 *   round trip).
 * - Deadlines are enforced by the reaper, which watches every call's deadline (published at
 *   checkout): when it passes, or when the worker dies, the reaper kills/reaps the worker,
 *   sets slot->call_abort and writes a byte to the reply pipe (the pool keeps a write end of
 *   it, proc.c) to wake the blocked read. The caller checks call_abort before every read, so
 *   whatever the pipe holds after an abort is never taken for a reply.
 * - A reply whose id is not the outstanding request's is logged and dropped, never returned.
 * - A request the worker never read (it died idle, before the reaper noticed) is reported as
 *   PYPOOL__ENOTSENT: the caller may retry it on another worker.
 */
#include "call.h"

#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "error.h"
#include "result.h"
#include "exchange.h"
#include "latency.h"
#include "log.h"
#include "sync.h"

int pypool__worker_died(pypool *p, pypool__slot *s, const char *method, pypool_result *out,
                        int *reason)
{
    char how[128] = "died";
    pypool__lock(&p->mu);
    if (s->reaped)
        pypool__describe_status(s->exit_status, how, sizeof how);
    bool destroyed = p->shutting_down;
    pypool__unlock(&p->mu);
    *reason = PYPOOL__BREAK_CRASH;
    if (destroyed) /* stopped by pypool_destroy after shutdown_grace_ms */
        return pypool__result_fail(out, PYPOOL_ESHUTDOWN,
                                   "the pool was destroyed during the call to '%s'; "
                                   "worker pid %d %s",
                                   method, s->child.pid, how);
    return pypool__result_fail(out, PYPOOL_EWORKER, "worker pid %d %s during call to '%s'",
                               s->child.pid, how, method);
}

static int timed_out(pypool *p, pypool__slot *s, const char *method, pypool_result *out,
                     int *reason)
{
    pypool__slot_kill(p, s); /* the reaper did already, unless the write phase timed out */
    *reason = PYPOOL__BREAK_TIMEOUT;
    s->pend_call_timeouts++;
    pypool__log(p, PYPOOL_LOG_WARN, s->child.pid, "call to '%s' passed its deadline: worker killed",
                method);
    return pypool__result_fail(out, PYPOOL_ETIMEDOUT,
                               "call to '%s' passed its deadline; worker pid %d killed", method,
                               s->child.pid);
}

static int protocol_error(pypool *p, pypool__slot *s, const char *method, const char *what,
                          pypool_result *out, int *reason)
{
    pypool__slot_kill(p, s);
    *reason = PYPOOL__BREAK_PROTO;
    s->pend_proto++;
    pypool__log(p, PYPOOL_LOG_WARN, s->child.pid, "protocol error during call to '%s': %s", method,
                what);
    return pypool__result_fail(out, PYPOOL_EPROTO,
                               "worker pid %d broke the protocol during call to '%s' (%s)",
                               s->child.pid, method, what);
}

/* Maps an abort or channel error to the caller's error. */
static int call_failed(pypool *p, pypool__slot *s, int rc, const char *method, pypool_result *out,
                       int *reason)
{
    switch (rc) {
    case PYPOOL_ETIMEDOUT:
        return timed_out(p, s, method, out, reason);
    case PYPOOL_EWORKER:
        return pypool__worker_died(p, s, method, out, reason);
    case PYPOOL_ENOMEM:
        pypool__slot_kill(p, s);
        *reason = PYPOOL__BREAK_PROTO;
        return pypool__result_fail(out, PYPOOL_ENOMEM, "out of memory reading the reply to '%s'",
                                   method);
    case PYPOOL_ESYS:
        pypool__slot_kill(p, s);
        *reason = PYPOOL__BREAK_PROTO;
        return pypool__result_fail(out, PYPOOL_ESYS, "reading the reply to '%s' failed", method);
    default:
        return protocol_error(p, s, method, "bad frame", out, reason);
    }
}

/* Next whole frame from the reply pipe; an abort by the reaper wins over any data. Blocks,
 * except that with until_ns >= 0 it first waits for data only until then (streams). */
static int read_frame(pypool__slot *s, int64_t until_ns, const uint8_t **body, uint32_t *len)
{
    for (;;) {
        int aborted = atomic_load(&s->call_abort);
        if (aborted)
            return aborted;
        int rc = pypool__reader_next(&s->reader, body, len);
        if (rc != 0)
            return rc;
        if (until_ns >= 0 && !pypool__fd_wait_readable(s->child.resp_fd, until_ns))
            return PYPOOL__EUNTIL;
        rc = pypool__reader_fill(&s->reader); /* blocking read */
        if (rc < 0)
            return rc == PYPOOL_EPROTO ? rc : PYPOOL_EWORKER;
    }
}

/* The exchange's source on an exclusive worker: the caller reads the pipe itself, dropping
 * frames of other (stale) requests. */
static int direct_next(pypool__xchg *x, int64_t until_ns, Pypool__Envelope **out)
{
    pypool__slot *s = x->s;
    for (;;) {
        const uint8_t *body;
        uint32_t len;
        int rc = read_frame(s, until_ns, &body, &len);
        if (rc < 0)
            return rc;
        Pypool__Envelope *env = pypool__envelope_decode(body, len);
        if (!env)
            return PYPOOL_EPROTO;
        bool ours =
            (env->msg_case == PYPOOL__ENVELOPE__MSG_RESPONSE && env->response->id == x->id) ||
            (env->msg_case == PYPOOL__ENVELOPE__MSG_HOST_CALL && env->host_call->call_id == x->id);
        if (ours) {
            *out = env;
            return 0;
        }
        pypool__log(x->p, PYPOOL_LOG_WARN, s->child.pid,
                    "dropped an unexpected message (case %d, id %llu) while waiting for reply %llu",
                    (int)env->msg_case,
                    env->msg_case == PYPOOL__ENVELOPE__MSG_RESPONSE
                        ? (unsigned long long)env->response->id
                        : 0ull,
                    (unsigned long long)x->id);
        pypool__envelope_free(env);
    }
}

static int direct_send(pypool__xchg *x, const void *frame, size_t len)
{
    struct iovec iov = {(void *)frame, len};
    pypool__slot *s = x->s;
    int rc =
        pypool__frame_write_held(s->child.req_fd, s->child.resp_fd, &iov, 1, x->deadline_ns, NULL);
    if (rc == PYPOOL_EWORKER) {
        int aborted = atomic_load(&s->call_abort);
        rc = aborted ? aborted : PYPOOL_EPROTO;
    }
    return rc;
}

void pypool__direct_xchg_init(pypool__xchg *x, pypool *p, pypool__slot *s, uint64_t id,
                              const char *method, int64_t deadline_ns)
{
    *x = (pypool__xchg){.p = p,
                        .s = s,
                        .id = id,
                        .method = method,
                        .next = direct_next,
                        .send = direct_send,
                        .lane = -1,
                        .deadline_ns = deadline_ns};
}

/* Reads until the reply to the request: its chunks joined, host calls served. */
static int read_reply(pypool *p, pypool__slot *s, uint64_t id, const char *method,
                      int64_t deadline_ns, pypool_result *out, int *reason)
{
    pypool__xchg x;
    pypool__direct_xchg_init(&x, p, s, id, method, deadline_ns);
    int rc = pypool__xchg_collect(&x, out);
    if (rc == PYPOOL_OK || rc == PYPOOL_EREMOTE) {
        s->served++;
        s->pend_remote += rc == PYPOOL_EREMOTE;
        if (!x.over) { /* a joined stream outgrew the frame limit: the worker is still at it */
            pypool__slot_kill(p, s);
            *reason = PYPOOL__BREAK_PROTO;
        }
        return rc;
    }
    return pypool__slot_failed(p, s, rc, method, out, reason);
}

/* The worker died without reading a byte of the request: it never saw it. */
static bool never_read(const pypool__slot *s, size_t written)
{
    return written > 0 && pypool__unread_requests(&s->child) >= written;
}

/* Writes the request; a full pipe is waited on with the deadline, and a poke ends the wait. */
static int send_request(pypool *p, pypool__slot *s, const pypool__request_hdr *h,
                        const void *payload, int64_t deadline_ns, size_t *written)
{
    int rc = pypool__encode_request(&s->wbuf, h, p->cfg.max_frame_bytes);
    if (rc)
        return rc;
    struct iovec iov[2] = {{s->wbuf.data, s->wbuf.len}, {(void *)payload, h->payload_len}};
    rc = pypool__frame_write_held(s->child.req_fd, s->child.resp_fd, iov, h->payload_len ? 2 : 1,
                                  deadline_ns, written);
    if (rc == PYPOOL_EWORKER) {
        /* The reply pipe spoke while we wrote: an abort, or a worker talking out of turn. */
        int aborted = atomic_load(&s->call_abort);
        rc = aborted ? aborted : PYPOOL_EPROTO;
    }
    return rc;
}

int pypool__slot_call(pypool *p, pypool__slot *s, const char *session_id, const char *method,
                      const void *payload, size_t len, int64_t deadline_ns, int64_t *wait_start,
                      pypool_result *out, int *reason)
{
    *reason = PYPOOL__BREAK_NONE;
    out->worker_pid = s->child.pid;
    /* One clock read: the end of the wait, the deadline sent along and call_us's start. */
    int64_t sent_at = s->presented_id ? s->presented_ns : pypool__now_ns();
    if (*wait_start) {
        pypool__latency_wait(p, s->index, *wait_start, sent_at);
        *wait_start = 0;
    }
    pypool__request_hdr h = {.id = ++s->next_id,
                             .method = method,
                             .session_id = session_id,
                             .deadline_ms = pypool__ms_left(deadline_ns, sent_at),
                             .payload_len = len};
    size_t written = 0;
    int rc;
    if (s->presented_id) { /* the thread that handed us the worker sent it already */
        h.id = s->presented_id;
        s->next_id = h.id;
        written = s->presented_bytes;
        s->presented_id = 0;
        rc = 0;
    } else {
        rc = send_request(p, s, &h, payload, deadline_ns, &written);
    }
    if (rc == PYPOOL_EINVAL)
        return pypool__result_fail(out, rc,
                                   "request of %zu payload bytes exceeds max_frame_bytes (%u)", len,
                                   p->cfg.max_frame_bytes);
    if (rc == 0) {
        rc = read_reply(p, s, h.id, method, deadline_ns, out, reason);
        if (rc == PYPOOL_OK || rc == PYPOOL_EREMOTE)
            pypool__latency_call(p, s->index, sent_at, pypool__now_ns());
    } else if (!(rc == PYPOOL_EWORKER && never_read(s, written)))
        rc = call_failed(p, s, rc, method, out, reason);
    if (rc == PYPOOL_EWORKER && never_read(s, written))
        rc = PYPOOL__ENOTSENT;
    if (rc == PYPOOL__ENOTSENT) {
        *reason = PYPOOL__BREAK_CRASH;
        free(out->error_message);
        out->error_message = NULL;
    }
    return rc;
}

int pypool__slot_send(pypool *p, pypool__slot *s, const char *session_id, const char *method,
                      const void *payload, size_t len, int64_t deadline_ns, uint64_t *id,
                      pypool_result *out, int *reason)
{
    *reason = PYPOOL__BREAK_NONE;
    out->worker_pid = s->child.pid;
    pypool__request_hdr h = {.id = ++s->next_id,
                             .method = method,
                             .session_id = session_id,
                             .deadline_ms = pypool__ms_left(deadline_ns, pypool__now_ns()),
                             .payload_len = len};
    *id = h.id;
    size_t written = 0;
    int rc = send_request(p, s, &h, payload, deadline_ns, &written);
    if (rc == PYPOOL_EINVAL)
        return pypool__result_fail(out, rc,
                                   "request of %zu payload bytes exceeds max_frame_bytes (%u)", len,
                                   p->cfg.max_frame_bytes);
    if (rc == PYPOOL_EWORKER && never_read(s, written)) {
        *reason = PYPOOL__BREAK_CRASH;
        return PYPOOL__ENOTSENT;
    }
    return rc ? call_failed(p, s, rc, method, out, reason) : 0;
}

int pypool__slot_cancel(pypool__slot *s, uint64_t id, int64_t deadline_ns)
{
    if (pypool__encode_cancel(&s->wbuf, id) != 0)
        return PYPOOL_ENOMEM;
    struct iovec iov = {s->wbuf.data, s->wbuf.len};
    return pypool__frame_write_held(s->child.req_fd, -1, &iov, 1, deadline_ns, NULL);
}

int pypool__slot_failed(pypool *p, pypool__slot *s, int rc, const char *method, pypool_result *out,
                        int *reason)
{
    if (rc == PYPOOL_EPROTO && atomic_load(&s->call_abort) == 0 && s->reader.err == 0)
        return protocol_error(p, s, method, "undecodable reply", out, reason);
    return call_failed(p, s, rc, method, out, reason);
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
     * the window before it, by the abort/never_read path (the request is retried). */
    return s->reader.err || s->reader.end > s->reader.start + s->reader.pending;
}

void pypool__slot_present(pypool *p, pypool__slot *s, const pypool__prereq *pre)
{
    if (pre->session_id || pypool__slot_channel_dirty(s))
        return; /* a session's call checks its binding first; a dirty channel is replaced */
    pypool__request_hdr h = {.id = s->next_id + 1,
                             .method = pre->method,
                             .deadline_ms = pypool__ms_left(pre->deadline_ns, pypool__now_ns()),
                             .payload_len = pre->len};
    if (pre->len > PIPE_BUF || pypool__encode_request(&s->wbuf, &h, p->cfg.max_frame_bytes) != 0 ||
        s->wbuf.len + pre->len > PIPE_BUF)
        return;
    /* At most PIPE_BUF bytes: the pipe takes them whole or not at all, without waiting. */
    struct iovec iov[2] = {{s->wbuf.data, s->wbuf.len}, {(void *)pre->payload, pre->len}};
    size_t written = 0;
    (void)pypool__frame_write_held(s->child.req_fd, -1, iov, pre->len ? 2 : 1, 0, &written);
    if (written == 0)
        return; /* full: the new holder sends it itself */
    s->next_id = h.id;
    s->presented_id = h.id;
    s->presented_bytes = written;
    s->presented_ns = pypool__now_ns();
}
