/*
 * lanes.c - layer 1: the lanes of multiplexed workers (see lanes.h and slots.h).
 *
 * Design notes:
 * - A multiplexed slot is IDLE with no lane taken and BUSY with one or more; the first take is
 *   the CHECKOUT event and the last free the CHECKIN (or the BREAK of a draining worker), so
 *   the state table and the reaper see the same states as with exclusive workers.
 * - Lock: every lane field is [mu], except the futex word (atomic) and req_start (the owner's,
 *   written under wmu). Writers of the request pipe hold wmu and may take mu inside it; mu is
 *   never held while waiting for wmu (the reaper only ever tries it).
 * - No barging, as for whole workers: a freed lane goes to the longest waiter that accepts the
 *   slot before anyone else can take it, so waiting threads are served in FIFO order.
 * - A lane whose caller gave up is orphaned, not freed: its request may still be running in
 *   the worker, and the worker's one final Response for it is what frees it. An orphan that
 *   outlives cancel_grace_ms gets its worker killed (timers.c), which frees it too.
 */
#include "lanes.h"

#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "error.h"
#include "proc.h"
#include "state.h"
#include "sync.h"

bool pypool__lanes_init(pypool *p)
{
    unsigned n = p->cfg.max_inflight;
    for (unsigned i = 0; i < p->cfg.size; i++) {
        pypool__slot *s = &p->slots[i];
        pypool__mutex_init(&s->wmu);
        if (n <= 1)
            continue;
        s->lanes = calloc(n, sizeof *s->lanes);
        s->free_lanes = calloc(n, sizeof *s->free_lanes);
        s->refusals = calloc(2 * (size_t)n, sizeof *s->refusals);
        if (!s->lanes || !s->free_lanes || !s->refusals)
            return false;
        for (unsigned k = 0; k < n; k++)
            s->free_lanes[k] = n - 1 - k; /* lane 0 on top */
        s->nfree = n;
    }
    return true;
}

void pypool__lane_wake_locked(pypool__slot *s, pypool__lane *l, pypool__wakes *wk)
{
    /* The word always moves; the system call only when the owner sleeps on it: an owner not
     * marked asleep has yet to look at its queue under mu, or is not waiting at all. */
    atomic_fetch_add_explicit(&l->signal, 1, memory_order_release);
    if (l->reader_asleep) {
        l->reader_asleep = false;
        s->rx_sleepers--;
        pypool__wakes_add(wk, &l->signal);
    }
    if (l->wake_word) {
        atomic_store_explicit(l->wake_word, 1, memory_order_release);
        pypool__wakes_add(wk, l->wake_word);
        l->wake_word = NULL;
        s->rx_sleepthrough--;
    }
}

void pypool__owe_refusal_locked(pypool *p, pypool__slot *s, uint64_t id, uint64_t call_id)
{
    pypool__assert_locked(p);
    if (s->nrefusals < 2 * p->cfg.max_inflight) { /* beyond: the grace kill ends the handler */
        s->refusals[s->nrefusals][0] = id;
        s->refusals[s->nrefusals][1] = call_id;
        s->nrefusals++;
    }
}

/* Frames of an orphaned lane's queue: host calls are owed their refusal, the rest dropped. */
static void drop_queue_owing_locked(pypool *p, pypool__slot *s, pypool__lane *l)
{
    for (pypool__rx *rx = l->head; rx; rx = rx->next)
        if (rx->env->msg_case == PYPOOL__ENVELOPE__MSG_HOST_CALL)
            pypool__owe_refusal_locked(p, s, rx->env->host_call->id, rx->env->host_call->call_id);
}

static void drop_queue(pypool__lane *l)
{
    pypool__rx *rx = l->head;
    while (rx) {
        pypool__rx *next = rx->next;
        pypool__envelope_free(rx->env);
        free(rx);
        rx = next;
    }
    l->head = l->tail = NULL;
    l->queued = 0;
    l->queued_bytes = 0;
}

void pypool__lanes_free(pypool *p)
{
    for (unsigned i = 0; i < p->cfg.size; i++) {
        pypool__slot *s = &p->slots[i];
        pypool__mutex_destroy(&s->wmu);
        pypool__wbuf_free(&s->lane_wbuf);
        if (!s->lanes)
            continue;
        for (unsigned k = 0; k < p->cfg.max_inflight; k++)
            drop_queue(&s->lanes[k]);
        free(s->lanes);
        free(s->free_lanes);
        free(s->refusals);
        s->refusals = NULL;
        s->lanes = NULL;
        s->free_lanes = NULL;
    }
}

/* The reaper must wake for the earliest orphan's grace deadline. */
static void watch_orphans_locked(pypool *p, pypool__slot *s)
{
    s->deadline_ns = pypool__lanes_grace_locked(p, s);
    pypool__reaper_due_locked(p, s->deadline_ns);
}

/* With the last call out, a BUSY slot goes back to IDLE, or breaks if it is draining. */
static void settle_locked(pypool *p, pypool__slot *s)
{
    if (s->state != PYPOOL_SLOT_BUSY)
        return;
    if (!s->draining && !p->shutting_down)
        pypool__lanes_serve_waiters_locked(p, s);
    if (s->inflight > 0)
        return;
    p->busy--;
    s->deadline_ns = 0;
    if (s->draining || p->shutting_down) {
        int reason = s->draining ? s->drain_reason : PYPOOL__BREAK_SHUTDOWN;
        s->draining = false;
        pypool__slot_break_locked(p, s, reason);
        if (p->reaper_done)
            pypool__slot_close_locked(p, s);
        pypool__cond_broadcast(&p->state_cv);
        return;
    }
    pypool__transition(s, PYPOOL__EV_CHECKIN);
    pypool__slot_release_locked(p, s);
}

static void free_lane_locked(pypool *p, pypool__slot *s, unsigned lane)
{
    pypool__lane *l = &s->lanes[lane];
    if (l->state == PYPOOL__LANE_ORPHAN) {
        s->orphans--;
        if (!l->cancel_sent)
            s->cancels_unsent--;
    }
    drop_queue(l);
    l->state = PYPOOL__LANE_FREE;
    l->id = 0;
    l->err = 0;
    l->final = false;
    s->free_lanes[s->nfree++] = lane;
    s->inflight--;
    if (s->rx_paused) {
        s->rx_paused = false; /* the queue that held the pipe back may be this one */
        pypool__kick_locked(p);
    }
}

/* The longest waiter a freed lane of s can serve now, given that lane but not yet woken. */
static pypool__waiter *claim_waiter_locked(pypool *p, pypool__slot *s)
{
    if (!pypool__lane_open_locked(p, s) || p->shutting_down)
        return NULL;
    for (pypool__waiter *w = p->wait_head; w; w = w->next) {
        if (w->want < 0 || w->want == (int)s->index) {
            pypool__waiter_unlink_locked(p, w);
            w->granted = (int)s->index;
            w->lane = (int)pypool__lane_take_locked(p, s);
            w->err = 0;
            w->claimed = PYPOOL__CLAIM_POSTING;
            return w;
        }
    }
    return NULL;
}

/* Frees an owner's lane: its counts folded in, draining started if asked or due. */
static void give_back_locked(pypool *p, pypool__slot *s, unsigned lane, int reason)
{
    pypool__lane *l = &s->lanes[lane];
    s->calls += l->served;
    p->counters.calls += l->served;
    p->counters.remote_errors += l->remote;
    l->served = l->remote = 0;
    if (reason != PYPOOL__BREAK_NONE)
        pypool__slot_drain_locked(p, s, reason);
    else if (s->call_limit && s->calls >= s->call_limit)
        pypool__slot_drain_locked(p, s, PYPOOL__BREAK_RETIRE);
    free_lane_locked(p, s, lane);
}

void pypool__lane_release_locked(pypool *p, pypool__slot *s, unsigned lane, int reason)
{
    pypool__assert_locked(p);
    give_back_locked(p, s, lane, reason);
    settle_locked(p, s);
}

pypool__waiter *pypool__lane_handoff_locked(pypool *p, pypool__slot *s, unsigned lane, int reason)
{
    pypool__assert_locked(p);
    give_back_locked(p, s, lane, reason);
    pypool__waiter *w = claim_waiter_locked(p, s);
    settle_locked(p, s);
    return w;
}

bool pypool__lane_orphan_locked(pypool *p, pypool__slot *s, unsigned lane)
{
    pypool__assert_locked(p);
    pypool__lane *l = &s->lanes[lane];
    if (l->final || l->err)
        return false;
    s->calls += l->served;
    p->counters.calls += l->served;
    p->counters.remote_errors += l->remote;
    l->served = l->remote = 0;
    drop_queue_owing_locked(p, s, l);
    drop_queue(l); /* chunks nobody will read; the final reply frees the lane */
    if (s->rx_paused) {
        s->rx_paused = false; /* the queue that held the pipe back may have been this one */
        pypool__kick_locked(p);
    }
    l->state = PYPOOL__LANE_ORPHAN;
    l->cancel_sent = false;
    l->grace_ns = pypool__now_ns() + p->cfg.cancel_grace_ms * PYPOOL__MS;
    s->orphans++;
    s->cancels_unsent++;
    if (s->rx_role == 0) /* PYPOOL__RX_NONE: the reaper reads its final reply (rx.c) */
        pypool__kick_locked(p);
    p->counters.cancels++;
    watch_orphans_locked(p, s);
    return true;
}

void pypool__lanes_fail_locked(pypool *p, pypool__slot *s)
{
    pypool__assert_locked(p);
    pypool__slot_drain_locked(p, s, PYPOOL__BREAK_CRASH);
    for (unsigned k = 0; k < p->cfg.max_inflight; k++) {
        pypool__lane *l = &s->lanes[k];
        if (l->state == PYPOOL__LANE_ORPHAN) {
            free_lane_locked(p, s, k);
        } else if (l->state == PYPOOL__LANE_OWNED && !l->final) {
            l->err = PYPOOL_EWORKER;
            pypool__lane_wake_locked(s, l, NULL);
        }
    }
    s->deadline_ns = 0;
    settle_locked(p, s);
}

bool pypool__lane_deliver_locked(pypool *p, pypool__slot *s, uint64_t id, Pypool__Envelope *env,
                                 size_t bytes, bool final, pypool__wakes *wk)
{
    pypool__assert_locked(p);
    unsigned lane = (unsigned)(id & PYPOOL__LANE_MASK);
    if (lane >= p->cfg.max_inflight)
        return false;
    pypool__lane *l = &s->lanes[lane];
    if (l->state == PYPOOL__LANE_FREE || l->id != id || l->final)
        return false;
    if (l->state == PYPOOL__LANE_ORPHAN) {
        pypool__envelope_free(env); /* the caller left: only the end of the call matters */
        if (final) {
            free_lane_locked(p, s, lane);
            watch_orphans_locked(p, s);
            settle_locked(p, s);
        }
        return true;
    }
    pypool__rx *rx = malloc(sizeof *rx);
    if (!rx) {
        pypool__envelope_free(env);
        l->err = PYPOOL_ENOMEM;
        pypool__lane_wake_locked(s, l, wk);
        return true;
    }
    *rx = (pypool__rx){.env = env, .bytes = bytes};
    if (l->tail)
        l->tail->next = rx;
    else
        l->head = rx;
    l->tail = rx;
    l->queued++;
    l->queued_bytes += bytes;
    l->final = final;
    if (l->queued >= PYPOOL__LANE_WINDOW_FRAMES || l->queued_bytes >= PYPOOL__LANE_WINDOW_BYTES)
        s->rx_paused = true;
    pypool__lane_wake_locked(s, l, wk);
    return true;
}

Pypool__Envelope *pypool__lane_pop_locked(pypool *p, pypool__slot *s, unsigned lane)
{
    pypool__assert_locked(p);
    pypool__lane *l = &s->lanes[lane];
    pypool__rx *rx = l->head;
    if (!rx)
        return NULL;
    l->head = rx->next;
    if (!l->head)
        l->tail = NULL;
    l->queued--;
    l->queued_bytes -= rx->bytes;
    Pypool__Envelope *env = rx->env;
    free(rx);
    if (s->rx_paused && l->queued < PYPOOL__LANE_WINDOW_FRAMES / 2 &&
        l->queued_bytes < PYPOOL__LANE_WINDOW_BYTES / 2) {
        s->rx_paused = false;
        pypool__kick_locked(p); /* the reaper polls the reply pipe again */
    }
    return env;
}

int64_t pypool__lanes_grace_locked(const pypool *p, const pypool__slot *s)
{
    if (!s->lanes || s->orphans == 0)
        return 0;
    int64_t at = 0;
    for (unsigned k = 0; k < p->cfg.max_inflight; k++) {
        const pypool__lane *l = &s->lanes[k];
        if (l->state == PYPOOL__LANE_ORPHAN && (at == 0 || l->grace_ns < at))
            at = l->grace_ns;
    }
    return at;
}

int pypool__lanes_write_wlocked(pypool__slot *s, struct iovec *iov, int iovcnt, int64_t deadline_ns,
                                size_t *written)
{
    *written = 0;
    int rc = pypool__frame_write_held(s->child.req_fd, s->child.pidfd, iov, iovcnt, deadline_ns,
                                      written);
    s->req_bytes += *written;
    return rc;
}

/* Writes the frame encoded in lane_wbuf without waiting (wmu held); true if the pipe took it
 * whole. Owed frames are a few bytes, under PIPE_BUF: a write takes them whole or not at all
 * (then they stay owed). */
static bool write_owed_wlocked(pypool__slot *s)
{
    struct iovec iov = {s->lane_wbuf.data, s->lane_wbuf.len};
    size_t written;
    (void)pypool__lanes_write_wlocked(s, &iov, 1, 0, &written);
    return written == iov.iov_len;
}

/* Writes the owed HostReply refusals; wmu held. */
static void send_refusals_wlocked(pypool *p, pypool__slot *s)
{
    for (;;) {
        uint64_t id = 0, call_id = 0;
        pypool__lock(&p->mu);
        if (s->nrefusals > 0 && s->child.req_fd >= 0) {
            id = s->refusals[0][0];
            call_id = s->refusals[0][1];
        }
        pypool__unlock(&p->mu);
        if (id == 0 || pypool__encode_host_reply(&s->lane_wbuf, id, call_id, NULL, 0,
                                                 PYPOOL__HOST_ERR_CANCELED,
                                                 "the call was cancelled", 1u << 20) != 0)
            return;
        if (!write_owed_wlocked(s))
            return; /* full: the next writer, or the reaper's next round, takes over */
        pypool__lock(&p->mu);
        memmove(&s->refusals[0], &s->refusals[1], (s->nrefusals - 1) * sizeof s->refusals[0]);
        s->nrefusals--;
        pypool__unlock(&p->mu);
    }
}

/* Anything owed to the worker (Cancels, HostReply refusals)? Without mu: a writer looks after
 * every request, and almost always nothing is. */
static bool owed(pypool__slot *s)
{
    return atomic_load(&s->nrefusals) != 0 || atomic_load(&s->cancels_unsent) != 0;
}

/* Writes one Cancel per orphan still owed one (and the refusals first); wmu held. */
void pypool__lanes_send_cancels_wlocked(pypool *p, pypool__slot *s)
{
    if (!owed(s))
        return;
    send_refusals_wlocked(p, s);
    for (;;) {
        uint64_t id = 0;
        unsigned lane = 0;
        pypool__lock(&p->mu);
        if (s->cancels_unsent > 0 && s->child.req_fd >= 0) {
            for (unsigned k = 0; k < p->cfg.max_inflight; k++) {
                pypool__lane *l = &s->lanes[k];
                if (l->state == PYPOOL__LANE_ORPHAN && !l->cancel_sent) {
                    id = l->id;
                    lane = k;
                    break;
                }
            }
        }
        pypool__unlock(&p->mu);
        if (id == 0 || pypool__encode_cancel(&s->lane_wbuf, id) != 0)
            return;
        if (!write_owed_wlocked(s))
            return; /* the pipe is full: the next writer, or the grace deadline, takes over */
        pypool__lock(&p->mu);
        pypool__lane *l = &s->lanes[lane];
        if (l->state == PYPOOL__LANE_ORPHAN && l->id == id && !l->cancel_sent) {
            l->cancel_sent = true;
            s->cancels_unsent--;
        }
        pypool__unlock(&p->mu);
    }
}

void pypool__lanes_send_cancels(pypool *p, pypool__slot *s)
{
    if (pthread_mutex_trylock(&s->wmu) != 0)
        return; /* a writer is at work: it sends them when it lets go (pypool__lanes_wunlock) */
    pypool__lanes_send_cancels_wlocked(p, s);
    pypool__unlock(&s->wmu);
}

void pypool__lanes_wunlock(pypool *p, pypool__slot *s)
{
    pypool__lanes_send_cancels_wlocked(p, s);
    pypool__unlock(&s->wmu);
    /* A debt added after that look found wmu taken and left it to us: one more try now that it
     * is free (the reaper's grace timer is the backstop if this one loses a race too). */
    if (owed(s))
        pypool__lanes_send_cancels(p, s);
}

uint64_t pypool__lanes_consumed(pypool__slot *s)
{
    pypool__lock(&s->wmu);
    uint64_t unread = pypool__unread_requests(&s->child);
    uint64_t consumed = s->req_bytes > unread ? s->req_bytes - unread : 0;
    pypool__unlock(&s->wmu);
    return consumed;
}
