/*
 * reaper.c - the pool's reaper thread: one poll() loop over the wakeup eventfd, every child's
 * pidfd and log pipe, and the reply pipes of workers it talks to (STARTING: Hello, PINGING:
 * Pong), with timers for start deadlines, backoff, pings, leak warnings and shutdown.
 *
 * Design notes:
 * - It never calls waitpid(-1), installs no signal handler and runs with every signal blocked,
 *   so the host's signals go to the host's threads.
 * - It takes the pool mutex only to read or change slot state; the poll itself, spawning,
 *   reading pipes and the log callback all run unlocked.
 * - The poll set is rebuilt every iteration from the slot states: with a few dozen fds this is
 *   cheaper and much simpler than keeping an epoll set in sync with state changes.
 * - The worker's PR_SET_PDEATHSIG fires when the thread that spawned it exits; spawning only
 *   here means workers die with the reaper, i.e. with the pool or the host.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "reaper.h"

#include "clock.h"
#include "error.h"
#include "supervise.h"
#include "sync.h"

#define NO_PIDFD_TICK_MS 50

enum fd_kind { FD_WAKE, FD_SLOT_EXIT, FD_SLOT_REPLY, FD_SLOT_LOG, FD_DYING };

typedef struct pollset {
    struct pollfd *fds;
    unsigned char *kind;
    unsigned *index;
    unsigned n;
    unsigned cap;
    bool need_tick; /* some child has no pidfd: poll exits with WNOHANG */
} pollset;

/* Room for every fd this round may watch; false if memory ran out (the set is cut short). */
static bool pollset_reserve(pollset *ps, unsigned need)
{
    if (need <= ps->cap)
        return true;
    struct pollfd *fds = realloc(ps->fds, need * sizeof *fds);
    if (fds)
        ps->fds = fds;
    unsigned char *kind = realloc(ps->kind, need * sizeof *kind);
    if (kind)
        ps->kind = kind;
    unsigned *index = realloc(ps->index, need * sizeof *index);
    if (index)
        ps->index = index;
    if (!fds || !kind || !index)
        return false;
    ps->cap = need;
    return true;
}

static void add_fd(pollset *ps, int fd, enum fd_kind kind, unsigned index)
{
    if (fd < 0 || ps->n == ps->cap) {
        ps->need_tick |= fd >= 0; /* an fd left out: fall back to polling exits by clock */
        return;
    }
    ps->fds[ps->n] = (struct pollfd){.fd = fd, .events = POLLIN};
    ps->kind[ps->n] = (unsigned char)kind;
    ps->index[ps->n] = index;
    ps->n++;
}

static void build_pollset(pypool *p, pollset *ps)
{
    ps->n = 0;
    ps->need_tick = false;
    /* the wake fd, 3 per slot (exit, reply, log), 2 per dying child (exit, log) */
    (void)pollset_reserve(ps, 1 + 3 * p->cfg.size + 2 * p->ndying);
    add_fd(ps, p->wake_fd, FD_WAKE, 0);
    pypool__lock(&p->mu);
    for (unsigned i = 0; i < p->cfg.size; i++) {
        pypool__slot *s = &p->slots[i];
        if (s->child.pid > 0 && !s->reaped) {
            add_fd(ps, s->child.pidfd, FD_SLOT_EXIT, i);
            ps->need_tick |= s->child.pidfd < 0;
        }
        add_fd(ps, s->child.log_fd, FD_SLOT_LOG, i);
        if (pypool__reaper_reads_locked(s))
            add_fd(ps, s->child.resp_fd, FD_SLOT_REPLY, i);
    }
    pypool__unlock(&p->mu);
    for (unsigned i = 0; i < p->ndying; i++) {
        add_fd(ps, p->dying[i].pidfd, FD_DYING, i);
        add_fd(ps, p->dying[i].log_fd, FD_DYING, i);
        ps->need_tick |= p->dying[i].pidfd < 0;
    }
}

static void drain_wake(pypool *p)
{
    uint64_t n;
    while (read(p->wake_fd, &n, sizeof n) > 0)
        ;
}

/* A multiplexed worker's replies only move frames to lanes: the poll set stays valid. */
static bool replies_only(pypool *p, const pypool__slot *s)
{
    pypool__lock(&p->mu);
    bool still = s->lanes && pypool__reaper_reads_locked(s) && s->state != PYPOOL_SLOT_STARTING &&
                 s->state != PYPOOL_SLOT_PINGING;
    pypool__unlock(&p->mu);
    return still;
}

/* Handles the events of one poll; returns true if the poll set may have changed (anything but
 * replies routed to lanes), so the loop must rebuild it (and run its timers) before polling. */
static bool dispatch(pypool *p, pollset *ps)
{
    bool changed = false;
    /* Dying entries are handled last and in reverse: handling one may remove it. */
    for (unsigned k = 0; k < ps->n; k++) {
        if (!ps->fds[k].revents)
            continue;
        pypool__slot *s = &p->slots[ps->index[k]];
        switch (ps->kind[k]) {
        case FD_WAKE:
            drain_wake(p);
            changed = true;
            break;
        case FD_SLOT_EXIT:
            pypool__on_slot_exit(p, s);
            changed = true;
            break;
        case FD_SLOT_REPLY:
            pypool__on_slot_reply(p, s);
            changed |= !replies_only(p, s);
            break;
        case FD_SLOT_LOG:
            pypool__on_slot_log(p, s);
            changed = true;
            break;
        default:
            changed = true;
            break;
        }
    }
    for (unsigned k = ps->n; k-- > 0;) {
        if (ps->kind[k] == FD_DYING && ps->fds[k].revents && ps->index[k] < p->ndying)
            pypool__on_dying_event(p, ps->index[k]);
    }
    return changed;
}

static int poll_timeout(int64_t next_ns, bool tick)
{
    int timeout = pypool__poll_timeout_ms(next_ns);
    if (tick && (timeout < 0 || timeout > NO_PIDFD_TICK_MS))
        timeout = NO_PIDFD_TICK_MS;
    return timeout;
}

/* One iteration; returns false when the pool has shut down and no child is left. */
static bool reaper_step(pypool *p, pollset *ps)
{
    pypool__lock(&p->mu);
    bool stopping = p->shutting_down;
    pypool__unlock(&p->mu);
    if (stopping)
        (void)pypool__shutdown_step(p); /* stops idle slots; they are retired just below */
    bool room = pypool__dying_reserve(p);
    if (room)
        pypool__retire_broken(p);
    else
        pypool__log(p, PYPOOL_LOG_ERROR, 0, "reaper: out of memory; retrying on the next tick");
    if (stopping && pypool__shutdown_step(p))
        return false; /* nothing left to wait for: no event would ever wake us again */
    if (!stopping && room)
        pypool__start_due(p);
    int64_t next = pypool__run_timers(p);
    build_pollset(p, ps);
    bool tick = ps->need_tick || stopping || !room;
    /* While only multiplexed replies arrive, poll the same set again: a busy multiplexed pool
     * then costs the reaper one poll and one lock per batch of replies, not a full round. */
    bool changed = false;
    int ready;
    do {
        ready = poll(ps->fds, ps->n, poll_timeout(next, tick));
        if (ready < 0 && errno != EINTR)
            pypool__log(p, PYPOOL_LOG_ERROR, 0, "reaper poll failed: %s", strerror(errno));
        if (ready > 0)
            changed = dispatch(p, ps);
    } while (ready > 0 && !changed && !tick);
    if (ps->need_tick)
        pypool__poll_exits(p);
    return true;
}

static void *reaper_main(void *arg)
{
    pypool *p = arg;
    pollset ps = {0};
    if (!pollset_reserve(&ps, 1 + 3 * p->cfg.size + 2 * (p->cfg.size + 8))) {
        pypool__log(p, PYPOOL_LOG_ERROR, 0, "reaper: out of memory");
        abort(); /* without a reaper nothing would ever be reaped or restarted */
    }
    while (reaper_step(p, &ps))
        ;
    free(ps.fds);
    free(ps.kind);
    free(ps.index);
    return NULL;
}

int pypool__reaper_start(pypool *p)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old); /* the thread inherits it: no signal lands there */
    int rc = pthread_create(&p->reaper, NULL, reaper_main, p);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0)
        return pypool__set_error(PYPOOL_ESYS, "cannot start the reaper thread: %s", strerror(rc));
    p->reaper_started = true;
    return 0;
}

void pypool__reaper_join(pypool *p)
{
    pthread_join(p->reaper, NULL);
}
