/*
 * dying.c - layer 2, reaper side: children on their way out. A child leaves its slot as soon as
 * the slot is done with it (broken, retired, failed to start) and moves to the dying list with
 * its pidfd and log pipe, where it is signalled on a schedule (timers.c) and reaped; the slot
 * can start a replacement at once. Also the log pipes' reading, shared by slots and the dying.
 *
 * Design notes:
 * - Reaper thread only. The list is reserved before every round (pypool__dying_reserve), so
 *   moving a child onto it under the mutex never allocates and never waits.
 * - Before a child is reaped its whole process group is SIGKILLed: a handler's subprocess dies
 *   with its worker. The group id cannot be reused while the (zombie) leader is unreaped.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clock.h"
#include "state.h"
#include "supervise.h"
#include "sync.h"

#define LOG_READ_CHUNK  65536
#define LOG_READS_ROUND 16 /* per event: a flooding worker cannot starve the others */

typedef struct line_ctx {
    pypool *p;
    int pid;
} line_ctx;

static void emit_output(void *ud, const char *line)
{
    line_ctx *c = ud;
    pypool__log(c->p, PYPOOL_LOG_OUTPUT, c->pid, "%s", line);
}

/* Reads what the log pipe has (bounded); at EOF flushes and closes it. */
void pypool__drain_log(pypool *p, int *fd, pypool__logbuf *lb, int pid, bool to_eof)
{
    static _Thread_local char buf[LOG_READ_CHUNK];
    line_ctx ctx = {p, pid};
    for (int round = 0; *fd >= 0 && (to_eof || round < LOG_READS_ROUND); round++) {
        ssize_t n = read(*fd, buf, sizeof buf);
        if (n > 0) {
            pypool__logbuf_feed(lb, buf, (size_t)n, emit_output, &ctx);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0 || errno != EAGAIN) {
            pypool__logbuf_flush(lb, emit_output, &ctx);
            pypool__close_fd(fd);
        }
        return;
    }
}

bool pypool__dying_reserve(pypool *p)
{
    /* A round retires at most every slot's child and fails at most every new start. */
    unsigned need = p->ndying + 2 * p->cfg.size;
    if (need <= p->dying_cap)
        return true;
    pypool__dying *d = realloc(p->dying, need * sizeof *d);
    if (!d)
        return false;
    p->dying = d;
    p->dying_cap = need;
    return true;
}

/* Room was reserved before the round (pypool__dying_reserve): this never allocates, so it can
 * run under the mutex. */
static pypool__dying *dying_push(pypool *p)
{
    return p->ndying < p->dying_cap ? &p->dying[p->ndying++] : NULL;
}

static void dying_remove(pypool *p, unsigned i)
{
    p->dying[i] = p->dying[--p->ndying];
}

/* Sends Shutdown (best effort, never blocks: the pipe is O_NONBLOCK) before closing requests. */
static void send_shutdown(pypool__slot *s)
{
    if (s->child.req_fd < 0 || pypool__encode_shutdown(&s->wbuf) != 0)
        return;
    struct iovec iov = {s->wbuf.data, s->wbuf.len};
    (void)pypool__frame_write_held(s->child.req_fd, -1, &iov, 1, 0, NULL);
}

/*
 * With mu held: takes the child out of the slot. Reaped children just lose their fds; live
 * ones go to the dying list, to be signalled on schedule (term_at, then kill) and reaped.
 */
void pypool__release_child_locked(pypool *p, pypool__slot *s, int reason, int64_t term_at)
{
    if (reason == PYPOOL__BREAK_RETIRE || reason == PYPOOL__BREAK_SHUTDOWN)
        send_shutdown(s);
    pypool__close_fd(&s->child.req_fd);
    pypool__close_fd(&s->child.resp_fd);
    pypool__reader_free(&s->reader);
    pypool__reader_init(&s->reader, -1, p->cfg.max_frame_bytes);
    pypool__dying *d = s->reaped ? NULL : dying_push(p);
    if (d) {
        *d = (pypool__dying){.pid = s->child.pid,
                             .pidfd = s->child.pidfd,
                             .log_fd = s->child.log_fd,
                             .reason = reason,
                             .count_crash = reason == PYPOOL__BREAK_CRASH && !s->killed,
                             .term_at_ns = term_at,
                             .kill_at_ns = term_at + PYPOOL__TERM_TO_KILL_MS * PYPOOL__MS};
        d->log = s->log;
        s->child.pidfd = s->child.log_fd = -1;
    } else if (!s->reaped) {
        /* Cannot happen (room is reserved before every round); should it, the child is killed
         * and never waited for under the mutex: a zombie is better than a stalled pool. */
        pypool__signal_group(s->child.pid, SIGKILL);
    }
    pypool__child_close_fds(&s->child);
    pypool__child_clear(&s->child);
    pypool__logbuf_init(&s->log);
    s->reaped = false;
    s->killed = false;
    s->sessions = 0;
    s->calls = s->served = 0;
    /* A multiplexed worker has no call left here (it broke with none in flight), so nobody
     * writes its request pipe: the next worker's byte count starts afresh. */
    s->req_bytes = 0;
    s->rx_paused = false;
    s->rx_dead = false;
    s->rx_role = 0; /* PYPOOL__RX_NONE: a new worker's pipe has no reader yet */
}

void pypool__count_crash_locked(pypool *p, int status)
{
    p->counters.crashes++;
    if (WIFSIGNALED(status))
        p->counters.crashes_signal++;
    else
        p->counters.crashes_exit++;
}

void pypool__on_dying_event(pypool *p, unsigned i)
{
    pypool__dying *d = &p->dying[i];
    pypool__drain_log(p, &d->log_fd, &d->log, d->pid, false);
    if (!pypool__has_exited(d->pid))
        return; /* output, or a clock tick: a retiring worker may still be finishing */
    pypool__signal_group(d->pid, SIGKILL); /* its subprocesses, while the pgid is still held */
    int status = 0;
    int r = pypool__try_reap(d->pid, &status);
    if (r == 0)
        return;
    pypool__drain_log(p, &d->log_fd, &d->log, d->pid, true);
    if (d->count_crash) {
        pypool__lock(&p->mu);
        pypool__count_crash_locked(p, status);
        pypool__unlock(&p->mu);
    }
    char how[128];
    pypool__describe_status(status, how, sizeof how);
    pypool__log(p, PYPOOL_LOG_INFO, d->pid, "worker %s", how);
    pypool__close_fd(&d->pidfd);
    pypool__close_fd(&d->log_fd);
    dying_remove(p, i);
}
