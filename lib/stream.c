/*
 * stream.c - layer 2, client side: the public stream API (pypool_stream_open/next/close).
 *
 * Design notes:
 * - A stream is a request whose replies come as chunks (Response{more}) before the final
 *   Response. It holds its worker (or one lane of it) from open until its final Response, and a
 *   pool reference until close, as a checkout does.
 * - The whole stream has one deadline (timeout_ms at open). On an exclusive worker the reaper
 *   enforces it as for any call (the worker is killed); on a lane the stream is cancelled. A
 *   per-chunk timeout only stops waiting: the stream goes on.
 * - Closing an unfinished stream cancels it: on a lane the pool takes the lane over (orphan);
 *   on an exclusive worker the closing thread drains what is left until the final Response,
 *   for cancel_grace_ms at most (the reaper kills a worker that ignores the Cancel), so the
 *   worker goes back to the pool clean and alive.
 * - One stream is used by one thread at a time; different streams are independent.
 */
#include <stdlib.h>
#include <string.h>

#include "call.h"
#include "client.h"
#include "clock.h"
#include "error.h"
#include "exchange.h"
#include "latency.h"
#include "lifecycle.h"
#include "mux.h"
#include "sync.h"

struct pypool_stream {
    pypool *p;
    pypool__acquired a; /* the worker, or lane, it runs on */
    pypool__xchg x;
    char *method; /* x.method points here */
    int64_t sent_at;
    bool over;       /* the stream has ended: the worker is back in the pool */
    int final_rc;    /* what next() keeps returning once over */
    char *final_msg; /* and its message */
};

static int open_attempt(pypool_stream *st, const char *session_id, const void *payload, size_t len,
                        int64_t deadline, int64_t *wait_start, pypool_result *res)
{
    pypool *p = st->p;
    pypool__acquired *a = &st->a;
    int rc = pypool__acquire(p, session_id, deadline, false, NULL, a, res);
    if (rc)
        return rc;
    st->sent_at = pypool__now_ns();
    pypool__latency_wait(p, a->s->index, *wait_start, st->sent_at);
    int reason = PYPOOL__BREAK_NONE;
    if (a->lane >= 0) {
        rc = pypool__lane_send(p, a->s, (unsigned)a->lane, false, session_id, st->method, payload,
                               len, deadline, res, &reason);
        if (rc == 0)
            pypool__lane_xchg_init(&st->x, p, a->s, (unsigned)a->lane, st->method, deadline);
    } else {
        uint64_t id;
        rc = pypool__slot_send(p, a->s, session_id, st->method, payload, len, deadline, &id, res,
                               &reason);
        if (rc == 0)
            pypool__direct_xchg_init(&st->x, p, a->s, id, st->method, deadline);
    }
    if (rc == 0)
        return 0;
    pypool__give_back(p, a->s, a->lane, reason);
    return rc == PYPOOL__ENOTSENT ? pypool__unsent(p, session_id, a, res) : rc;
}

static int open_on_pool(pypool_stream *st, const char *session_id, const void *payload, size_t len,
                        int64_t timeout_ms, pypool_result *res)
{
    pypool *p = st->p;
    int64_t wait_start = pypool__now_ns();
    int64_t deadline =
        pypool__deadline_at_ms(wait_start, timeout_ms < 0 ? p->cfg.call_timeout_ms : timeout_ms);
    int rc;
    while ((rc = open_attempt(st, session_id, payload, len, deadline, &wait_start, res)) ==
           PYPOOL__ERETRY)
        ;
    return rc;
}

int pypool_stream_open(pypool *p, const char *session_id, const char *method, const void *payload,
                       size_t len, int64_t timeout_ms, pypool_stream **out)
{
    pypool__clear_error();
    if (!out)
        return pypool__set_error(PYPOOL_EINVAL, "out is NULL");
    *out = NULL;
    pypool_result res = {0};
    int rc = pypool__check_call_args(p, method, payload, len, &res);
    if (rc == 0 && session_id && !*session_id)
        rc = pypool__result_error(&res, PYPOOL_EINVAL, "session_id is empty");
    pypool_result_free(&res);
    if (rc)
        return rc;
    pypool_stream *st = calloc(1, sizeof *st);
    if (!st || !(st->method = strdup(method))) {
        free(st);
        return pypool__set_error(PYPOOL_ENOMEM, "out of memory");
    }
    st->p = p;
    int cancel = pypool__nocancel_begin();
    rc = pypool__enter(p);
    if (rc == 0) {
        rc = open_on_pool(st, session_id, payload, len, timeout_ms, &res);
        if (rc != 0)
            pypool__leave(p);
    } else {
        pypool__set_error(rc, "the pool is shutting down");
    }
    pypool__nocancel_end(cancel);
    pypool_result_free(&res); /* the error's text stays in pypool_last_error() */
    if (rc != 0) {
        free(st->method);
        free(st);
        return rc;
    }
    *out = st;
    return 0;
}

/* The stream ended (rc says how): the worker goes back to the pool. */
static int finish(pypool_stream *st, int rc, int reason, bool orphaned, pypool_result *chunk)
{
    st->over = true;
    st->final_rc = rc;
    if (rc != PYPOOL_DONE && chunk->error_message)
        st->final_msg = strdup(chunk->error_message);
    pypool__slot *s = st->a.s;
    if (rc == PYPOOL_DONE || rc == PYPOOL_EREMOTE) {
        pypool__latency_call(st->p, s->index, st->sent_at, pypool__now_ns());
        if (st->a.lane >= 0) {
            s->lanes[st->a.lane].served++;
            s->lanes[st->a.lane].remote += rc == PYPOOL_EREMOTE;
        } else {
            s->served++;
            s->pend_remote += rc == PYPOOL_EREMOTE;
        }
    }
    if (!orphaned)
        pypool__give_back(st->p, s, st->a.lane, reason);
    return rc;
}

/* A channel error of the stream's worker, mapped as a call's would be. */
static int stream_failed(pypool_stream *st, int rc, pypool_result *chunk)
{
    int reason = PYPOOL__BREAK_NONE;
    bool orphaned = false;
    pypool__slot *s = st->a.s;
    if (st->a.lane >= 0)
        rc = pypool__lane_failed(st->p, s, (unsigned)st->a.lane, rc, st->method, chunk, &reason,
                                 &orphaned);
    else
        rc = pypool__slot_failed(st->p, s, rc, st->method, chunk, &reason);
    if (rc == PYPOOL__ENOTSENT) { /* a stream is not retried once open */
        rc = PYPOOL_EWORKER;
        pypool__result_error(chunk, rc, "the stream's worker died before it read the request");
    }
    return finish(st, rc, reason, orphaned, chunk);
}

int pypool_stream_next(pypool_stream *st, int64_t timeout_ms, pypool_result *chunk)
{
    if (chunk)
        memset(chunk, 0, sizeof *chunk);
    pypool__clear_error();
    if (!st || !chunk)
        return pypool__set_error(PYPOOL_EINVAL, "stream and chunk are required");
    if (st->over) {
        if (st->final_rc != PYPOOL_DONE)
            pypool__result_error(chunk, st->final_rc, st->final_msg);
        return st->final_rc;
    }
    int cancel = pypool__nocancel_begin();
    chunk->worker_pid = st->a.s->child.pid;
    int64_t until = timeout_ms < 0 ? -1 : pypool__deadline_after_ms(timeout_ms);
    int rc = pypool__xchg_chunk(&st->x, until, chunk);
    if (rc == PYPOOL__EUNTIL)
        rc = pypool__result_error(chunk, PYPOOL_ETIMEDOUT, "no chunk within timeout_ms");
    else if (rc == PYPOOL_DONE || (rc == PYPOOL_EREMOTE && st->x.over))
        rc = finish(st, rc, PYPOOL__BREAK_NONE, false, chunk);
    else if (rc < 0 && rc != PYPOOL_EREMOTE && rc != PYPOOL_ENOMEM)
        rc = stream_failed(st, rc, chunk);
    else if (rc == PYPOOL_OK && st->x.over) /* a plain value: one chunk, then DONE */
        finish(st, PYPOOL_DONE, PYPOOL__BREAK_NONE, false, chunk);
    pypool__nocancel_end(cancel);
    return rc;
}

/* Closing an unfinished stream on an exclusive worker: Cancel, then drain to the final
 * Response within cancel_grace_ms (the reaper kills the worker past it). */
static void cancel_direct(pypool_stream *st)
{
    pypool *p = st->p;
    pypool__slot *s = st->a.s;
    int64_t grace = pypool__deadline_after_ms(p->cfg.cancel_grace_ms);
    pypool__lock(&p->mu);
    p->counters.cancels++;
    if (s->deadline_ns <= 0 || grace < s->deadline_ns)
        pypool__watch_deadline_locked(p, s, grace);
    pypool__unlock(&p->mu);
    st->x.deadline_ns = grace;
    int reason = PYPOOL__BREAK_NONE;
    int rc = pypool__slot_cancel(s, st->x.id, grace);
    if (rc == 0)
        rc = pypool__xchg_drain(&st->x);
    if (rc != 0) {
        pypool_result ignored = {0};
        pypool__slot_failed(p, s, rc, st->method, &ignored, &reason);
        pypool_result_free(&ignored);
        if (reason == PYPOOL__BREAK_NONE)
            reason = PYPOOL__BREAK_TIMEOUT;
    }
    pypool__give_back(p, s, -1, reason);
}

void pypool_stream_close(pypool_stream *st)
{
    if (!st)
        return;
    int cancel = pypool__nocancel_begin();
    if (!st->over && st->a.lane >= 0) {
        if (!pypool__lane_give_up(st->p, st->a.s, (unsigned)st->a.lane)) {
            (void)pypool__xchg_drain(&st->x); /* its end was already in: take it, no cancel */
            pypool__give_back(st->p, st->a.s, st->a.lane, PYPOOL__BREAK_NONE);
        }
    } else if (!st->over) {
        cancel_direct(st);
    }
    pypool__leave(st->p);
    pypool__nocancel_end(cancel);
    free(st->final_msg);
    free(st->method);
    free(st);
}
