/*
 * supervise.c - layer 2, reaper side: the handlers of the reaper's events (a worker's Hello,
 * Pong, output, exit; a broken slot to retire; a slot due to start) and the restart policy
 * (backoff with jitter, crash loops, recycling thresholds). The poll loop that delivers the
 * events is reaper.c; clock timeouts are timers.c; children on their way out are dying.c.
 *
 * Design notes:
 * - Runs on the reaper thread only. Slot state changes happen under the pool mutex through the
 *   slot actions (slots.c); spawning, pipe reads and log callbacks happen with it released.
 * - Counters: an exit the pool did not ask for is a crash; a worker that never said Hello is
 *   a failed start; kills for timeouts and pings are counted where they are decided.
 */
#define _GNU_SOURCE
#include "supervise.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clock.h"
#include "error.h"
#include "lanes.h"
#include "rx.h"
#include "state.h"
#include "sync.h"

/* ---- output ------------------------------------------------------------------------------- */

void pypool__on_slot_log(pypool *p, pypool__slot *s)
{
    pypool__drain_log(p, &s->child.log_fd, &s->log, s->child.pid, false);
}

/* ---- starting ---------------------------------------------------------------------------- */

/*
 * With mu held: no slot can serve. The slots never started (lazy) would fail the same way,
 * so they are marked FAILED too, and every waiter gets PYPOOL_ESPAWN now instead of waiting
 * out its deadline. pypool_warm starts them all again.
 */
static void give_up_locked(pypool *p)
{
    for (unsigned i = 0; i < p->cfg.size; i++)
        if (p->slots[i].state == PYPOOL_SLOT_EMPTY)
            pypool__transition(&p->slots[i], PYPOOL__EV_CRASH_LOOP);
    pypool__fail_waiters_locked(p, -1, PYPOOL_ESPAWN);
}

/* With mu held: the slot's start failed; backoff or give up; tell warm and waiters. */
static void start_failed_locked(pypool *p, pypool__slot *s, const char *msg)
{
    free(p->last_spawn_error);
    p->last_spawn_error = strdup(msg);
    p->start_fail_seq++;
    p->counters.failed_starts++;
    s->start_failures++;
    if (s->child.pid > 0) {
        if (!s->reaped)
            pypool__signal_group(s->child.pid, SIGKILL);
        pypool__release_child_locked(p, s, PYPOOL__BREAK_CRASH, pypool__now_ns());
    }
    if (s->start_failures >= p->cfg.crash_loop_starts) {
        pypool__transition(s, PYPOOL__EV_CRASH_LOOP);
    } else {
        pypool__transition(s, PYPOOL__EV_START_FAIL);
        int64_t delay = s->backoff_ms;
        s->backoff_ms = s->backoff_ms * 2 > p->cfg.restart_backoff_max_ms
                            ? p->cfg.restart_backoff_max_ms
                            : s->backoff_ms * 2;
        s->deadline_ns = pypool__now_ns() + delay * PYPOOL__MS;
    }
    if (pypool__unservable_locked(p))
        give_up_locked(p);
    pypool__cond_broadcast(&p->state_cv);
}

void pypool__slot_start_failed_locked(pypool *p, pypool__slot *s, const char *msg)
{
    start_failed_locked(p, s, msg);
}

void pypool__slot_start_abort_locked(pypool *p, pypool__slot *s)
{
    if (s->child.pid > 0) {
        s->killed = true;
        if (!s->reaped)
            pypool__signal_group(s->child.pid, SIGKILL);
        pypool__release_child_locked(p, s, PYPOOL__BREAK_SHUTDOWN, pypool__now_ns());
    }
    pypool__transition(s, PYPOOL__EV_STOP);
}

static void start_failed(pypool *p, pypool__slot *s, const char *msg)
{
    pypool__log(p, PYPOOL_LOG_ERROR, s->child.pid, "%s", msg);
    pypool__lock(&p->mu);
    start_failed_locked(p, s, msg);
    pypool__unlock(&p->mu);
}

/* Collects the slots due to start and marks them STARTING (mu held). */
static unsigned collect_due_locked(pypool *p, unsigned *due)
{
    unsigned n = 0;
    int64_t now = pypool__now_ns();
    for (unsigned i = 0; i < p->cfg.size; i++) {
        pypool__slot *s = &p->slots[i];
        bool wanted = s->state == PYPOOL_SLOT_EMPTY && s->want_start;
        bool restart = (s->state == PYPOOL_SLOT_BACKOFF && s->deadline_ns <= now);
        if (!wanted && !restart)
            continue;
        s->want_start = false;
        pypool__transition(s, PYPOOL__EV_SPAWN);
        s->deadline_ns = now + p->cfg.startup_timeout_ms * PYPOOL__MS;
        due[n++] = i;
    }
    return n;
}

/* Recycle threshold for a new worker: max_calls_per_worker +-10%, so workers do not all
 * retire at once. */
static uint64_t call_limit(pypool *p)
{
    uint64_t n = p->cfg.max_calls_per_worker;
    if (n == 0)
        return 0;
    uint64_t spread = n / 10;
    if (spread == 0)
        return n;
    uint64_t r = pypool__rand(&p->rng) % (2 * spread + 1);
    return n - spread + r;
}

static void install_child_locked(pypool *p, pypool__slot *s, const pypool__child *c)
{
    s->child = *c;
    s->reaped = false;
    s->killed = false;
    if (s->generation++ > 0) {
        s->restarts++;
        p->counters.restarts++;
    }
    pypool__reader_free(&s->reader);
    pypool__reader_init(&s->reader, c->resp_fd, p->cfg.max_frame_bytes);
    s->call_limit = call_limit(p);
}

void pypool__start_due(pypool *p)
{
    unsigned *due = p->due;
    pypool__lock(&p->mu);
    unsigned n = collect_due_locked(p, due);
    pypool__unlock(&p->mu);
    /* Spawn them all first, then wait for every Hello together (in the poll loop). */
    for (unsigned k = 0; k < n; k++) {
        pypool__slot *s = &p->slots[due[k]];
        pypool__child c;
        char err[512];
        int rc = pypool__spawn(p->child_argv, p->child_envp, &c, err, sizeof err);
        if (rc != 0) {
            char msg[700];
            snprintf(msg, sizeof msg, "worker could not be started: %s", err);
            start_failed(p, s, msg);
            continue;
        }
        pypool__lock(&p->mu);
        install_child_locked(p, s, &c);
        pypool__unlock(&p->mu);
        pypool__log(p, PYPOOL_LOG_INFO, c.pid, "worker spawned in slot %u", s->index);
    }
}

/* ---- Hello and Pong ---------------------------------------------------------------------- */

static void became_ready(pypool *p, pypool__slot *s, const Pypool__Hello *hello)
{
    pypool__log(p, PYPOOL_LOG_INFO, s->child.pid, "worker ready in slot %u (%zu handlers)",
                s->index, hello->n_handlers);
    pypool__lock(&p->mu);
    pypool__transition(s, PYPOOL__EV_HELLO);
    s->start_failures = 0;
    s->ready_ns = pypool__now_ns();
    pypool__slot_release_locked(p, s);
    pypool__cond_broadcast(&p->state_cv);
    pypool__unlock(&p->mu);
}

/* Handles one frame from a STARTING worker; returns false if the start failed. */
static bool handle_hello_frame(pypool *p, pypool__slot *s, Pypool__Envelope *env)
{
    char msg[256];
    if (env->msg_case != PYPOOL__ENVELOPE__MSG_HELLO) {
        pypool__log(p, PYPOOL_LOG_WARN, s->child.pid, "skipped a message of type %d before Hello",
                    (int)env->msg_case);
        return true;
    }
    if (env->hello->protocol_version != PYPOOL_PROTOCOL_VERSION) {
        snprintf(msg, sizeof msg, "worker pid %d speaks protocol version %u, expected %d",
                 s->child.pid, env->hello->protocol_version, PYPOOL_PROTOCOL_VERSION);
        start_failed(p, s, msg);
        return false;
    }
    became_ready(p, s, env->hello);
    return false; /* done with this worker's handshake */
}

static void pong_received(pypool *p, pypool__slot *s, const Pypool__Envelope *env)
{
    pypool__lock(&p->mu);
    if (env->msg_case == PYPOOL__ENVELOPE__MSG_PONG && env->pong->id == s->ping_id) {
        pypool__transition(s, PYPOOL__EV_PONG);
        pypool__slot_release_locked(p, s);
    } else {
        s->killed = true;
        pypool__signal_group(s->child.pid, SIGKILL);
        p->counters.protocol_errors++;
        pypool__slot_break_locked(p, s, PYPOOL__BREAK_PROTO);
    }
    pypool__unlock(&p->mu);
}

/* A bad frame from a worker the reaper talks to. */
static void reply_channel_broken(pypool *p, pypool__slot *s, int rc)
{
    if (rc == PYPOOL_EWORKER)
        return; /* EOF: the exit event follows and reports the status */
    if (s->state == PYPOOL_SLOT_STARTING) {
        char msg[256];
        snprintf(msg, sizeof msg, "worker pid %d wrote garbage instead of Hello", s->child.pid);
        start_failed(p, s, msg);
        return;
    }
    pypool__lock(&p->mu);
    s->killed = true;
    pypool__signal_group(s->child.pid, SIGKILL);
    p->counters.protocol_errors++;
    pypool__slot_break_locked(p, s, PYPOOL__BREAK_PROTO);
    pypool__unlock(&p->mu);
}

/* Is the reaper the reader of this slot's reply pipe now? STARTING and PINGING workers talk
 * to it; a multiplexed worker's replies all come through it while it serves. */
bool pypool__reaper_reads_locked(const pypool__slot *s)
{
    if (s->reader.err != 0)
        return false;
    if (s->state == PYPOOL_SLOT_STARTING || s->state == PYPOOL_SLOT_PINGING)
        return true;
    /* A multiplexed pipe is read by its callers (rx.c); the reaper reads it only for frames
     * no caller will: the final replies of orphaned lanes. */
    return s->rx_role == PYPOOL__RX_NONE && pypool__rx_readable_locked(s) && s->orphans > 0;
}

/* One frame from a worker in its handshake or a ping; false once the frames left are not the
 * reaper's to read (a caller will read the rest). */
static bool handle_frame(pypool *p, pypool__slot *s, int state, Pypool__Envelope *env)
{
    bool more = state == PYPOOL_SLOT_STARTING ? handle_hello_frame(p, s, env)
                                              : (pong_received(p, s, env), false);
    pypool__envelope_free(env);
    return more;
}

/* A multiplexed worker's replies, read while no caller holds the reader role (rx.c). */
static void mux_replies(pypool *p, pypool__slot *s)
{
    int rc = pypool__rx_pump(p, s, true);
    pypool__lock(&p->mu);
    pypool__rx_release_locked(p, s, NULL);
    pypool__unlock(&p->mu);
    if (rc < 0)
        pypool__rx_broken(p, s, rc);
}

void pypool__on_slot_reply(pypool *p, pypool__slot *s)
{
    /* An earlier event of this round (its exit, say) may have moved the slot on. */
    pypool__lock(&p->mu);
    int state = s->state;
    bool handshake = state == PYPOOL_SLOT_STARTING || state == PYPOOL_SLOT_PINGING;
    bool talking = pypool__reaper_reads_locked(s) &&
                   (handshake || pypool__rx_claim_locked(s, PYPOOL__RX_REAPER));
    pypool__unlock(&p->mu);
    if (!talking)
        return;
    if (!handshake) {
        mux_replies(p, s);
        return;
    }
    int rc = pypool__reader_fill(&s->reader);
    const uint8_t *body;
    uint32_t len;
    while (rc >= 0 && (rc = pypool__reader_next(&s->reader, &body, &len)) == 1) {
        Pypool__Envelope *env = pypool__envelope_decode(body, len);
        if (!env) {
            rc = PYPOOL_EPROTO;
            break;
        }
        if (!handle_frame(p, s, state, env))
            return;
    }
    if (rc < 0)
        reply_channel_broken(p, s, rc);
}

/* ---- exits ------------------------------------------------------------------------------- */

/* The start failed because the child exited: report its status and stderr tail. */
static void exited_while_starting_locked(pypool *p, pypool__slot *s, int status)
{
    char how[128], tail[PYPOOL__LOG_TAIL + 1], msg[PYPOOL__LOG_TAIL + 512];
    pypool__describe_status(status, how, sizeof how);
    pypool__logbuf_tail(&s->log, tail, sizeof tail);
    snprintf(msg, sizeof msg, "worker pid %d %s before saying Hello%s%s", s->child.pid, how,
             tail[0] ? "; its output ended with:\n" : " (no output)", tail);
    start_failed_locked(p, s, msg);
}

/* Crash of a worker that was serving: backoff grows unless it had been up a while. */
static void schedule_crash_restart_locked(pypool *p, pypool__slot *s, int64_t now)
{
    if (now - s->ready_ns > PYPOOL__BACKOFF_RESET_MS * PYPOOL__MS)
        s->backoff_ms = p->cfg.restart_backoff_min_ms;
    int64_t delay = s->backoff_ms;
    /* +-20% jitter so workers that crashed together do not restart in lockstep */
    int64_t spread = delay / 5;
    if (spread > 0)
        delay += (int64_t)(pypool__rand(&p->rng) % (uint64_t)(2 * spread + 1)) - spread;
    s->deadline_ns = now + delay * PYPOOL__MS;
    s->backoff_ms = s->backoff_ms * 2 > p->cfg.restart_backoff_max_ms
                        ? p->cfg.restart_backoff_max_ms
                        : s->backoff_ms * 2;
}

static void slot_child_exited_locked(pypool *p, pypool__slot *s, int status)
{
    s->reaped = true;
    s->exit_status = status;
    /* Not a crash: we killed it, the pool is stopping, it was being retired on purpose, or it
     * never started (a failed start is counted as such). */
    bool expected = s->killed || p->shutting_down || s->state == PYPOOL_SLOT_STARTING ||
                    (s->state == PYPOOL_SLOT_BROKEN && s->break_reason != PYPOOL__BREAK_CRASH);
    if (s->state == PYPOOL_SLOT_STARTING) {
        exited_while_starting_locked(p, s, status);
    } else if (s->state == PYPOOL_SLOT_IDLE || s->state == PYPOOL_SLOT_PINGING) {
        pypool__slot_break_locked(p, s, PYPOOL__BREAK_CRASH);
    }
    if (s->state == PYPOOL_SLOT_BUSY && s->lanes)
        pypool__lanes_fail_locked(p, s); /* each call learns it; unread ones are retried */
    else if (s->state == PYPOOL_SLOT_BUSY)
        pypool__slot_abort_call_locked(s, PYPOOL_EWORKER); /* wakes the holder's read */
    if (!expected)
        pypool__count_crash_locked(p, status);
    pypool__cond_broadcast(&p->state_cv);
}

void pypool__on_slot_exit(pypool *p, pypool__slot *s)
{
    pypool__lock(&p->mu);
    pid_t pid = s->child.pid;
    bool live = pid > 0 && !s->reaped;
    pypool__unlock(&p->mu);
    if (!live || !pypool__has_exited(pid))
        return; /* a clock tick (no pidfd) on a worker that is still running */
    /* All the child wrote is in the pipe now: read it before reporting (stderr tail). */
    pypool__drain_log(p, &s->child.log_fd, &s->log, pid, false);
    pypool__lock(&p->mu);
    pypool__signal_group(pid, SIGKILL);
    int status = 0;
    int r = pypool__try_reap(pid, &status);
    if (r != 0) {
        char how[128];
        pypool__describe_status(status, how, sizeof how);
        bool quiet = s->killed || p->shutting_down || s->state == PYPOOL_SLOT_BROKEN;
        slot_child_exited_locked(p, s, r < 0 ? 0 : status);
        pypool__unlock(&p->mu);
        pypool__log(p, quiet ? PYPOOL_LOG_INFO : PYPOOL_LOG_WARN, pid, "worker %s", how);
        return;
    }
    pypool__unlock(&p->mu);
}

void pypool__poll_exits(pypool *p)
{
    for (unsigned i = 0; i < p->cfg.size; i++) {
        pypool__slot *s = &p->slots[i];
        if (s->child.pid > 0 && s->child.pidfd < 0)
            pypool__on_slot_exit(p, s);
    }
    /* All dying children, not only those without a pidfd: this also runs when the poll set
     * could not hold every fd (out of memory); a WNOHANG on a live child costs little. */
    for (unsigned i = p->ndying; i-- > 0;)
        pypool__on_dying_event(p, i);
}

/* ---- broken slots ------------------------------------------------------------------------ */

static void log_break(pypool *p, int pid, int reason)
{
    static const char *const what[] = {
        [PYPOOL__BREAK_CRASH] = "died",
        [PYPOOL__BREAK_PROTO] = "broke the protocol",
        [PYPOOL__BREAK_TIMEOUT] = "was killed after a call timed out",
        [PYPOOL__BREAK_PING] = "did not answer a ping",
        [PYPOOL__BREAK_RETIRE] = "is recycled",
        [PYPOOL__BREAK_SHUTDOWN] = "is stopped (shutdown)",
    };
    if (reason > 0 && reason <= PYPOOL__BREAK_SHUTDOWN && pid > 0)
        pypool__log(p, PYPOOL_LOG_INFO, pid, "worker %s%s", what[reason],
                    reason == PYPOOL__BREAK_SHUTDOWN ? "" : "; replacing it");
}

void pypool__retire_broken(pypool *p)
{
    int *pids = p->event_pid, *reasons = p->event_reason;
    unsigned n = 0;
    pypool__lock(&p->mu);
    int64_t now = pypool__now_ns();
    for (unsigned i = 0; i < p->cfg.size; i++) {
        pypool__slot *s = &p->slots[i];
        if (s->state != PYPOOL_SLOT_BROKEN)
            continue;
        int reason = s->break_reason;
        pids[n] = s->child.pid;
        reasons[n++] = reason;
        int64_t term_at = now;
        if (reason == PYPOOL__BREAK_RETIRE)
            term_at = now + PYPOOL__RETIRE_GRACE_MS * PYPOOL__MS;
        if (reason == PYPOOL__BREAK_SHUTDOWN)
            term_at = p->shutdown_started_ns + p->cfg.shutdown_grace_ms * PYPOOL__MS;
        if (reason == PYPOOL__BREAK_RETIRE)
            p->counters.recycles++;
        pypool__release_child_locked(p, s, reason, term_at);
        if (p->shutting_down) {
            pypool__transition(s, PYPOOL__EV_STOP);
            continue;
        }
        pypool__transition(s, PYPOOL__EV_BACKOFF);
        if (reason == PYPOOL__BREAK_CRASH)
            schedule_crash_restart_locked(p, s, now);
        else
            s->deadline_ns = now; /* we chose to replace it: no reason to wait */
    }
    pypool__unlock(&p->mu);
    for (unsigned k = 0; k < n; k++)
        log_break(p, pids[k], reasons[k]);
}
