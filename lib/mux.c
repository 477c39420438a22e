/*
 * mux.c - layer 2, client side: a call on one lane of a multiplexed worker (max_inflight > 1).
 *
 * Design notes:
 * - Many threads write to one worker's request pipe, so writes hold the slot's wmu; a frame is
 *   always written whole or the worker is given up (a torn frame would garble every later
 *   request). A writer blocked on a full pipe also watches the worker's pidfd, so a death ends
 *   the wait at once.
 * - Replies: a caller whose reply is not in reads the pipe for everyone if nobody does (the
 *   reader role, rx.c), routing each frame to the lane its id names; otherwise it sleeps on its
 *   lane's futex word with its deadline until a frame is routed to it.
 * - At the deadline the call is given up, not the worker: the lane is orphaned and the worker
 *   gets a Cancel. The final reply (or the worker's death, or the grace kill) frees the lane.
 * - A worker that dies with calls in flight fails each with EWORKER, except calls whose request
 *   it never took from the pipe (req_start at or past the bytes it consumed): those are retried.
 */
#include "mux.h"

#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "call.h" /* PYPOOL__ENOTSENT */
#include "clock.h"
#include "error.h"
#include "result.h"
#include "exchange.h"
#include "lanes.h"
#include "latency.h"
#include "rx.h"
#include "log.h"
#include "sync.h"

#define NO_PIDFD_TICK_MS 50 /* as the reaper's: how often a reader without a pidfd looks up */

/* The request pipe was left with part of a frame: nothing more can be sent to this worker. */
static int torn(pypool *p, pypool__slot *s, int rc, const char *method, pypool_result *out,
                int *reason)
{
    pypool__slot_kill(p, s);
    *reason = rc == PYPOOL_ETIMEDOUT ? PYPOOL__BREAK_TIMEOUT : PYPOOL__BREAK_PROTO;
    if (rc == PYPOOL_ETIMEDOUT)
        return pypool__result_fail(
            out, rc,
            "call to '%s' passed its deadline while its request was being written; "
            "worker pid %d killed",
            method, s->child.pid);
    return pypool__result_fail(out, PYPOOL_ESYS,
                               "writing the request of '%s' to worker pid %d failed", method,
                               s->child.pid);
}

int pypool__lane_send(pypool *p, pypool__slot *s, unsigned lane, bool new_id,
                      const char *session_id, const char *method, const void *payload, size_t len,
                      int64_t deadline_ns, pypool_result *out, int *reason)
{
    *reason = PYPOOL__BREAK_NONE;
    out->worker_pid = s->child.pid; /* stable while a lane is held: the slot cannot break */
    pypool__lane *l = &s->lanes[lane];
    if (l->presented) { /* the thread that handed us the lane sent it already */
        l->presented = false;
        return 0;
    }
    if (new_id) { /* a lane held between calls (a checkout) may have outlived its worker; a
                     lane just taken finds a death through its reply (ENOTSENT if unread) */
        pypool__lock(&p->mu);
        pypool__lane_new_id_locked(s, lane);
        bool gone = l->err != 0 || s->reaped;
        pypool__unlock(&p->mu);
        if (gone) {
            *reason = PYPOOL__BREAK_CRASH;
            return PYPOOL__ENOTSENT;
        }
    }
    pypool__request_hdr h = {.id = l->id, /* the owner's to read: only it renews it */
                             .method = method,
                             .session_id = session_id,
                             .deadline_ms = pypool__ms_left(deadline_ns, pypool__now_ns()),
                             .payload_len = len};
    /* Another caller's write may hold the pipe (a full one, up to its own deadline): wait for
     * it only until ours. */
    if (!pypool__lock_until(&s->wmu, deadline_ns))
        return pypool__result_fail(
            out, PYPOOL_ETIMEDOUT,
            "call to '%s' passed its deadline while another request was being written", method);
    int rc = pypool__encode_request(&s->lane_wbuf, &h, p->cfg.max_frame_bytes);
    size_t written = 0;
    if (rc == 0) {
        l->req_start = s->req_bytes;
        struct iovec iov[2] = {{s->lane_wbuf.data, s->lane_wbuf.len}, {(void *)payload, len}};
        rc = pypool__lanes_write_wlocked(s, iov, len ? 2 : 1, deadline_ns, &written);
    }
    pypool__lanes_wunlock(p, s); /* with what threads that found wmu taken owe */
    if (rc == PYPOOL_EINVAL)
        return pypool__result_fail(out, rc,
                                   "request of %zu payload bytes exceeds max_frame_bytes (%u)", len,
                                   p->cfg.max_frame_bytes);
    if (rc == 0)
        return 0;
    if (rc == PYPOOL_EWORKER && l->req_start >= pypool__lanes_consumed(s))
        return PYPOOL__ENOTSENT; /* died; what we wrote is still in the pipe, unread */
    if (written == 0 && rc == PYPOOL_ETIMEDOUT)
        return pypool__result_fail(
            out, rc, "call to '%s' passed its deadline before its request could be sent", method);
    if (rc == PYPOOL_ENOMEM)
        return pypool__result_fail(out, rc, "out of memory encoding the request to '%s'", method);
    return torn(p, s, rc, method, out, reason);
}

enum { WAIT_READABLE, WAIT_DEAD, WAIT_TICK, WAIT_TIMEOUT };

/* The reader role's wait: the pipe readable, the worker gone (its pidfd fired), or `limit`
 * passed. Without a pidfd the wait is cut into ticks, so that a reaped worker's lane error is
 * seen between them. */
static int wait_for_replies(pypool__slot *s, int64_t limit)
{
    struct pollfd pfd[2] = {{.fd = s->child.resp_fd, .events = POLLIN},
                            {.fd = s->child.pidfd, .events = POLLIN}};
    int timeout = pypool__poll_timeout_ms(limit);
    bool tick = s->child.pidfd < 0 && (timeout < 0 || timeout > NO_PIDFD_TICK_MS);
    int ready = poll(pfd, s->child.pidfd >= 0 ? 2 : 1, tick ? NO_PIDFD_TICK_MS : timeout);
    if (ready > 0 && s->child.pidfd >= 0 && pfd[1].revents)
        return WAIT_DEAD;
    if (ready > 0 && pfd[0].revents)
        return WAIT_READABLE;
    if (ready == 0 && !tick && limit >= 0)
        return WAIT_TIMEOUT;
    return WAIT_TICK; /* a tick, EINTR: look again */
}

/*
 * The caller holds the reader role (rx.c): it reads the pipe for every lane until something
 * for its own lane is queued, the worker is gone, or `limit` passes; then it hands the role on.
 */
static void read_as_leader(pypool *p, pypool__slot *s, pypool__lane *l, int64_t limit)
{
    int rc = pypool__rx_pump(p, s, false); /* complete frames the last holder left buffered */
    int waited = WAIT_TICK;
    for (;;) {
        pypool__wakes wk = {.n = 0};
        pypool__lock(&p->mu);
        bool done = rc < 0 || l->head || l->err || waited == WAIT_DEAD || waited == WAIT_TIMEOUT ||
                    !pypool__rx_readable_locked(s);
        if (done) {
            s->rx_dead |= waited == WAIT_DEAD; /* the reaper's reaping fails the lanes */
            pypool__rx_release_locked(p, s, &wk);
        }
        pypool__unlock(&p->mu);
        pypool__wakes_flush(&wk);
        if (done)
            break;
        waited = wait_for_replies(s, limit);
        if (waited == WAIT_READABLE)
            rc = pypool__rx_pump(p, s, true);
    }
    if (rc < 0)
        pypool__rx_broken(p, s, rc);
}

/*
 * The exchange's source on a lane: what was routed to it. With nothing queued the caller reads
 * the pipe itself if nobody does (and routes what it reads to everyone); else it sleeps on its
 * lane's futex word until a frame is routed to it.
 */
static int lane_next(pypool__xchg *x, int64_t until_ns, Pypool__Envelope **env)
{
    pypool *p = x->p;
    pypool__slot *s = x->s;
    pypool__lane *l = &s->lanes[x->lane];
    bool soft = until_ns >= 0 && (x->deadline_ns < 0 || until_ns < x->deadline_ns);
    int64_t limit = soft ? until_ns : x->deadline_ns;
    for (;;) {
        pypool__lock(&p->mu);
        unsigned seen = atomic_load(&l->signal);
        Pypool__Envelope *e = pypool__lane_pop_locked(p, s, (unsigned)x->lane);
        int err = l->err;
        bool lead = !e && !err && pypool__rx_claim_locked(s, PYPOOL__RX_OWNER);
        if (!e && !err && !lead) {
            l->reader_asleep = true;
            s->rx_sleepers++;
        }
        pypool__unlock(&p->mu);
        if (e) {
            *env = e;
            return 0;
        }
        if (err)
            return err;
        if (lead) {
            read_as_leader(p, s, l, limit);
        } else if (!pypool__seq_wait_until(&l->signal, seen, limit)) {
            pypool__lock(&p->mu);
            if (l->reader_asleep) {
                l->reader_asleep = false;
                s->rx_sleepers--;
            }
            bool queued = l->head || l->err;
            pypool__unlock(&p->mu);
            if (!queued)
                return soft ? PYPOOL__EUNTIL : PYPOOL_ETIMEDOUT;
        }
        if (!lead)
            continue;
        if (limit >= 0 && pypool__now_ns() >= limit) {
            pypool__lock(&p->mu);
            bool queued = l->head || l->err;
            pypool__unlock(&p->mu);
            if (!queued)
                return soft ? PYPOOL__EUNTIL : PYPOOL_ETIMEDOUT;
        }
    }
}

static int lane_send_frame(pypool__xchg *x, const void *frame, size_t len)
{
    pypool__slot *s = x->s;
    struct iovec iov = {(void *)frame, len};
    size_t written;
    if (!pypool__lock_until(&s->wmu, x->deadline_ns))
        return PYPOOL_ETIMEDOUT;
    int rc = pypool__lanes_write_wlocked(s, &iov, 1, x->deadline_ns, &written);
    pypool__lanes_wunlock(x->p, s);
    if (rc && written)
        pypool__slot_kill(x->p, s); /* a torn frame: the worker cannot be talked to any more */
    return rc;
}

void pypool__lane_xchg_init(pypool__xchg *x, pypool *p, pypool__slot *s, unsigned lane,
                            const char *method, int64_t deadline_ns)
{
    *x = (pypool__xchg){.p = p,
                        .s = s,
                        .id = s->lanes[lane].id,
                        .method = method,
                        .next = lane_next,
                        .send = lane_send_frame,
                        .lane = (int)lane,
                        .deadline_ns = deadline_ns};
}

bool pypool__lane_give_up(pypool *p, pypool__slot *s, unsigned lane)
{
    pypool__lock(&p->mu);
    bool orphaned = pypool__lane_orphan_locked(p, s, lane);
    pypool__unlock(&p->mu);
    if (orphaned)
        pypool__lanes_send_cancels(p, s);
    return orphaned;
}

static int worker_gone(pypool *p, pypool__slot *s, unsigned lane, const char *method,
                       pypool_result *out, int *reason)
{
    *reason = PYPOOL__BREAK_CRASH;
    if (s->lanes[lane].req_start >= pypool__lanes_consumed(s))
        return PYPOOL__ENOTSENT;
    return pypool__worker_died(p, s, method, out, reason);
}

int pypool__lane_failed(pypool *p, pypool__slot *s, unsigned lane, int rc, const char *method,
                        pypool_result *out, int *reason, bool *orphaned)
{
    *orphaned = false;
    switch (rc) {
    case PYPOOL_ETIMEDOUT: {
        int pid = s->child.pid; /* stable while we hold the lane; not once it is given up */
        *orphaned = pypool__lane_give_up(p, s, lane);
        if (!*orphaned)
            return rc; /* the reply came in at the last moment: the caller takes it */
        pypool__lock(&p->mu);
        p->counters.timeouts++;
        pypool__unlock(&p->mu);
        pypool__log(p, PYPOOL_LOG_INFO, pid, "call to '%s' passed its deadline: cancelled", method);
        return pypool__result_fail(
            out, rc, "call to '%s' passed its deadline; cancelled (worker pid %d serves on)",
            method, pid);
    }
    case PYPOOL_EWORKER:
        return worker_gone(p, s, lane, method, out, reason);
    case PYPOOL_ENOMEM:
        pypool__slot_kill(p, s);
        *reason = PYPOOL__BREAK_PROTO;
        return pypool__result_fail(out, rc, "out of memory reading the reply to '%s'", method);
    default:
        pypool__slot_kill(p, s);
        *reason = PYPOOL__BREAK_PROTO;
        return pypool__result_fail(out, rc < 0 ? rc : PYPOOL_EPROTO,
                                   "the reply to '%s' could not be read", method);
    }
}

/* Runs the exchange to its end; a deadline that raced with the final reply still gets it. */
static int collect(pypool *p, pypool__slot *s, unsigned lane, pypool__xchg *x, pypool_result *out,
                   int *reason, bool *orphaned)
{
    for (;;) {
        int rc = pypool__xchg_collect(x, out);
        if (rc == PYPOOL_OK || rc == PYPOOL_EREMOTE) {
            s->lanes[lane].served++;
            s->lanes[lane].remote += rc == PYPOOL_EREMOTE;
            if (!x->over) /* a joined stream outgrew the frame limit: stop the rest */
                *orphaned = pypool__lane_give_up(p, s, lane);
            return rc;
        }
        rc = pypool__lane_failed(p, s, lane, rc, x->method, out, reason, orphaned);
        if (!(rc == PYPOOL_ETIMEDOUT && !*orphaned))
            return rc;
    }
}

int pypool__lane_call(pypool *p, pypool__slot *s, unsigned lane, bool new_id,
                      const char *session_id, const char *method, const void *payload, size_t len,
                      int64_t deadline_ns, int64_t *wait_start, pypool_result *out, int *reason,
                      bool *orphaned)
{
    *orphaned = false;
    /* One clock read: the end of the wait and call_us's start (when the request went out). */
    pypool__lane *l = &s->lanes[lane];
    int64_t sent_at = l->presented ? l->presented_ns : pypool__now_ns();
    if (*wait_start) {
        pypool__latency_wait(p, s->index, *wait_start, sent_at);
        *wait_start = 0;
    }
    int rc = pypool__lane_send(p, s, lane, new_id, session_id, method, payload, len, deadline_ns,
                               out, reason);
    if (rc)
        return rc;
    pypool__xchg x;
    pypool__lane_xchg_init(&x, p, s, lane, method, deadline_ns);
    rc = collect(p, s, lane, &x, out, reason, orphaned);
    if (rc == PYPOOL_OK || rc == PYPOOL_EREMOTE)
        pypool__latency_call(p, s->index, sent_at, pypool__now_ns());
    return rc;
}

void pypool__lane_session_close(pypool *p, pypool__slot *s, const char *session_id, int *reason)
{
    *reason = PYPOOL__BREAK_NONE;
    int64_t deadline = pypool__deadline_after_ms(p->cfg.call_timeout_ms);
    if (!pypool__lock_until(&s->wmu, deadline))
        return; /* the pipe stayed busy: the session's dict stays until its worker goes */
    int rc = pypool__encode_session_close(&s->lane_wbuf, session_id);
    size_t written = 0;
    if (rc == 0) {
        struct iovec iov = {s->lane_wbuf.data, s->lane_wbuf.len};
        rc = pypool__lanes_write_wlocked(s, &iov, 1, deadline, &written);
    }
    pypool__lanes_wunlock(p, s);
    if (rc != 0 && written > 0) { /* torn: the worker cannot be talked to any more */
        pypool__slot_kill(p, s);
        *reason = PYPOOL__BREAK_TIMEOUT;
    }
}

bool pypool__lane_present(pypool *p, pypool__slot *s, unsigned lane, const pypool__prereq *pre)
{
    if (pre->session_id || pre->len > PIPE_BUF)
        return false; /* a session's call checks its binding first */
    pypool__lane *l = &s->lanes[lane];
    pypool__request_hdr h = {.id = l->id, /* given at take, under mu */
                             .method = pre->method,
                             .deadline_ms = pypool__ms_left(pre->deadline_ns, pypool__now_ns()),
                             .payload_len = pre->len};
    if (pthread_mutex_trylock(&s->wmu) != 0)
        return false; /* another writer is at work: the new owner sends it itself */
    size_t written = 0;
    if (pypool__encode_request(&s->lane_wbuf, &h, p->cfg.max_frame_bytes) == 0 &&
        s->lane_wbuf.len + pre->len <= PIPE_BUF) {
        l->req_start = s->req_bytes;
        struct iovec iov[2] = {{s->lane_wbuf.data, s->lane_wbuf.len},
                               {(void *)pre->payload, pre->len}};
        /* At most PIPE_BUF bytes: the pipe takes them whole or not at all, without waiting. */
        (void)pypool__lanes_write_wlocked(s, iov, pre->len ? 2 : 1, 0, &written);
        l->presented_ns = pypool__now_ns();
    }
    pypool__lanes_wunlock(p, s);
    l->presented = written > 0;
    return l->presented;
}
