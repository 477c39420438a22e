/*
 * timers.c - the reaper's clock-driven work: Hello deadlines, health pings and their
 * deadlines, leak warnings, the signal schedule of dying children, and the shutdown phases
 * (drain until shutdown_grace_ms, then SIGTERM, then SIGKILL).
 *
 * Runs on the reaper thread; slot state is read and changed under the pool mutex, and pipe
 * writes and log callbacks happen after it is released.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "clock.h"
#include "lanes.h"
#include "state.h"
#include "supervise.h"
#include "sync.h"

enum { LATE_HELLO, LATE_CANCEL };

typedef struct timer_events {
    unsigned nping;
    unsigned *ping; /* slots to ping */
    unsigned nleak;
    unsigned *leak; /* slots held too long */
    unsigned nlate;
    int *late_pid;  /* workers that missed their Hello deadline, or a cancel's grace period */
    int *late_kind; /* which of the two */
    unsigned ncancel;
    unsigned *cancel; /* multiplexed slots owing a Cancel */
} timer_events;

static int64_t earliest(int64_t next, int64_t at)
{
    return pypool__deadline_min(next, at);
}

static void hello_overdue_locked(pypool *p, pypool__slot *s, timer_events *ev)
{
    char tail[PYPOOL__LOG_TAIL + 1], msg[PYPOOL__LOG_TAIL + 512];
    pypool__logbuf_tail(&s->log, tail, sizeof tail);
    snprintf(msg, sizeof msg, "worker pid %d did not say Hello within %lld ms%s%s", s->child.pid,
             (long long)p->cfg.startup_timeout_ms,
             tail[0] ? "; its output ended with:\n" : " (no output)", tail);
    ev->late_pid[ev->nlate] = s->child.pid;
    ev->late_kind[ev->nlate++] = LATE_HELLO;
    s->killed = true;
    pypool__slot_start_failed_locked(p, s, msg);
}

static void begin_ping_locked(pypool *p, pypool__slot *s, int64_t now, timer_events *ev)
{
    pypool__idle_remove_locked(p, s);
    pypool__transition(s, PYPOOL__EV_PING);
    s->ping_id = ++s->next_id;
    s->deadline_ns = now + p->cfg.ping_timeout_ms * PYPOOL__MS;
    ev->ping[ev->nping++] = s->index;
}

static void ping_overdue_locked(pypool *p, pypool__slot *s)
{
    s->killed = true;
    pypool__signal_group(s->child.pid, SIGKILL);
    p->counters.ping_failures++;
    pypool__slot_break_locked(p, s, PYPOOL__BREAK_PING);
}

/* A call past its deadline: the worker's state is unknown, so it is killed, and the caller
 * blocked in read() is woken (call.c). */
static int64_t call_deadline_locked(pypool__slot *s, int64_t now)
{
    if (s->deadline_ns <= 0)
        return PYPOOL__NO_DEADLINE;
    if (now < s->deadline_ns)
        return s->deadline_ns;
    if (s->child.pid > 0 && !s->reaped) {
        s->killed = true;
        pypool__signal_group(s->child.pid, SIGKILL);
    }
    pypool__slot_abort_call_locked(s, PYPOOL_ETIMEDOUT);
    return PYPOOL__NO_DEADLINE;
}

/* A multiplexed worker's cancelled calls: one still running past its grace period gets the
 * worker killed (its exit fails the others, or retries those it never read). */
static int64_t grace_deadline_locked(pypool *p, pypool__slot *s, int64_t now, timer_events *ev)
{
    if (s->cancels_unsent > 0 || s->nrefusals > 0)
        ev->cancel[ev->ncancel++] = s->index;
    int64_t at = pypool__lanes_grace_locked(p, s);
    if (at == 0)
        return PYPOOL__NO_DEADLINE;
    if (now < at)
        return at;
    if (s->child.pid > 0 && !s->reaped && !s->killed) {
        s->killed = true;
        pypool__signal_group(s->child.pid, SIGKILL);
        p->counters.call_timeouts++;
        pypool__slot_drain_locked(p, s, PYPOOL__BREAK_TIMEOUT);
        ev->late_pid[ev->nlate] = s->child.pid;
        ev->late_kind[ev->nlate++] = LATE_CANCEL;
    }
    return PYPOOL__NO_DEADLINE;
}

static int64_t leak_deadline_locked(pypool *p, pypool__slot *s, int64_t now, timer_events *ev)
{
    int64_t warn_ms = p->cfg.leak_warn_ms;
    if (warn_ms <= 0 || s->leak_warned)
        return PYPOOL__NO_DEADLINE;
    if (now >= s->busy_since_ns + warn_ms * PYPOOL__MS) {
        s->leak_warned = true;
        p->counters.leak_warnings++;
        ev->leak[ev->nleak++] = s->index;
        return PYPOOL__NO_DEADLINE;
    }
    return s->busy_since_ns + warn_ms * PYPOOL__MS;
}

/* One slot's timers; returns the slot's next deadline. */
static int64_t slot_timers_locked(pypool *p, pypool__slot *s, int64_t now, timer_events *ev)
{
    const pypool_config *c = &p->cfg;
    switch (s->state) {
    case PYPOOL_SLOT_STARTING:
        if (s->child.pid > 0 && now >= s->deadline_ns) {
            hello_overdue_locked(p, s, ev);
            return PYPOOL__NO_DEADLINE;
        }
        return s->deadline_ns;
    case PYPOOL_SLOT_BACKOFF:
        return s->deadline_ns;
    case PYPOOL_SLOT_IDLE:
        if (c->idle_ping_ms <= 0 || p->shutting_down)
            return PYPOOL__NO_DEADLINE;
        if (now >= s->idle_since_ns + c->idle_ping_ms * PYPOOL__MS) {
            begin_ping_locked(p, s, now, ev);
            return s->deadline_ns;
        }
        return s->idle_since_ns + c->idle_ping_ms * PYPOOL__MS;
    case PYPOOL_SLOT_PINGING:
        if (now >= s->deadline_ns) {
            ping_overdue_locked(p, s);
            return now;
        }
        return s->deadline_ns;
    case PYPOOL_SLOT_BUSY:
        if (s->lanes)
            return grace_deadline_locked(p, s, now, ev);
        return pypool__deadline_min(call_deadline_locked(s, now),
                                    leak_deadline_locked(p, s, now, ev));
    default:
        return PYPOOL__NO_DEADLINE;
    }
}

static void send_pings(pypool *p, const timer_events *ev)
{
    for (unsigned k = 0; k < ev->nping; k++) {
        pypool__slot *s = &p->slots[ev->ping[k]];
        if (pypool__encode_ping(&s->wbuf, s->ping_id) != 0)
            continue; /* the ping deadline replaces the worker */
        struct iovec iov = {s->wbuf.data, s->wbuf.len};
        /* Deadline 0: the reaper never waits on a worker's full request pipe (that would stall
         * every other slot); a ping that does not fit at once goes unanswered, and the ping
         * deadline replaces the worker. */
        (void)pypool__frame_write_held(s->child.req_fd, s->child.resp_fd, &iov, 1, 0, NULL);
    }
}

static void log_leaks(pypool *p, const timer_events *ev)
{
    for (unsigned k = 0; k < ev->nleak; k++) {
        pypool__slot *s = &p->slots[ev->leak[k]];
        pypool__lock(&p->mu);
        int pid = s->child.pid;
        unsigned long holder = (unsigned long)s->holder;
        pypool__unlock(&p->mu);
        pypool__log(p, PYPOOL_LOG_WARN, pid,
                    "worker held for more than %lld ms by thread 0x%lx (missing checkin?)",
                    (long long)p->cfg.leak_warn_ms, holder);
    }
}

static int64_t dying_timers(pypool *p, int64_t now)
{
    int64_t next = PYPOOL__NO_DEADLINE;
    for (unsigned i = 0; i < p->ndying; i++) {
        pypool__dying *d = &p->dying[i];
        if (!d->termed && now >= d->term_at_ns) {
            pypool__signal_group(d->pid, SIGTERM);
            d->termed = true;
        }
        if (now >= d->kill_at_ns)
            pypool__signal_group(d->pid, SIGKILL);
        next = earliest(next, d->termed ? d->kill_at_ns : d->term_at_ns);
    }
    return next;
}

/* Shutdown: a worker still busy at the end of the grace period gets SIGTERM, then SIGKILL. */
static int64_t busy_shutdown_timers_locked(pypool *p, int64_t now)
{
    int64_t term_at = p->shutdown_started_ns + p->cfg.shutdown_grace_ms * PYPOOL__MS;
    int64_t kill_at = term_at + PYPOOL__TERM_TO_KILL_MS * PYPOOL__MS;
    bool any = false;
    for (unsigned i = 0; i < p->cfg.size; i++) {
        pypool__slot *s = &p->slots[i];
        if (s->state != PYPOOL_SLOT_BUSY || s->child.pid <= 0 || s->reaped)
            continue;
        any = true;
        if (now >= kill_at)
            pypool__signal_group(s->child.pid, SIGKILL);
        else if (now >= term_at)
            pypool__signal_group(s->child.pid, SIGTERM);
    }
    if (!any)
        return PYPOOL__NO_DEADLINE;
    return now < term_at ? term_at : (now < kill_at ? kill_at : now + 50 * PYPOOL__MS);
}

int64_t pypool__run_timers(pypool *p)
{
    /* The lists live in the pool (reaper only); retire_broken is done with event_pid by now. */
    timer_events ev = {.ping = p->ping,
                       .leak = p->leak,
                       .late_pid = p->event_pid,
                       .late_kind = p->event_reason,
                       .cancel = p->cancel_due};
    int64_t now = pypool__now_ns();
    int64_t next = PYPOOL__NO_DEADLINE;
    pypool__lock(&p->mu);
    for (unsigned i = 0; i < p->cfg.size; i++)
        next = earliest(next, slot_timers_locked(p, &p->slots[i], now, &ev));
    if (p->shutting_down)
        next = earliest(next, busy_shutdown_timers_locked(p, now));
    p->reaper_wake_at_ns = next; /* callers with an earlier deadline wake us (checkout.c) */
    pypool__unlock(&p->mu);
    send_pings(p, &ev);
    log_leaks(p, &ev);
    for (unsigned k = 0; k < ev.ncancel; k++)
        pypool__lanes_send_cancels(p, &p->slots[ev.cancel[k]]);
    for (unsigned k = 0; k < ev.nlate; k++) {
        if (ev.late_kind[k] == LATE_HELLO)
            pypool__log(p, PYPOOL_LOG_ERROR, ev.late_pid[k], "worker did not say Hello in time");
        else
            pypool__log(p, PYPOOL_LOG_WARN, ev.late_pid[k],
                        "a cancelled call ran past cancel_grace_ms (%lld ms): worker killed",
                        (long long)p->cfg.cancel_grace_ms);
    }
    return earliest(next, dying_timers(p, now));
}

/* Stops every slot that is not serving a call; true once no child is left anywhere. */
bool pypool__shutdown_step(pypool *p)
{
    bool done = p->ndying == 0;
    pypool__lock(&p->mu);
    for (unsigned i = 0; i < p->cfg.size; i++) {
        pypool__slot *s = &p->slots[i];
        switch (s->state) {
        case PYPOOL_SLOT_IDLE:
        case PYPOOL_SLOT_PINGING:
            pypool__slot_break_locked(p, s, PYPOOL__BREAK_SHUTDOWN);
            done = false;
            break;
        case PYPOOL_SLOT_STARTING:
            pypool__slot_start_abort_locked(p, s);
            break;
        case PYPOOL_SLOT_EMPTY:
        case PYPOOL_SLOT_BACKOFF:
        case PYPOOL_SLOT_FAILED:
            pypool__transition(s, PYPOOL__EV_STOP);
            break;
        case PYPOOL_SLOT_BROKEN:
            done = false;
            break;
        case PYPOOL_SLOT_BUSY:
            done = done && (s->child.pid <= 0 || s->reaped);
            break;
        default:
            break;
        }
    }
    pypool__unlock(&p->mu);
    return done && p->ndying == 0;
}
