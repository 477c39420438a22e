/*
 * rx.c - layer 1: reading a multiplexed worker's reply pipe. One pipe carries the replies of
 * many calls, in any order; whoever holds the slot's reader role reads it and routes each frame
 * to the lane its request id names (lanes.c), waking that lane's owner.
 *
 * Design notes:
 * - The role (s->rx_role, [mu]) goes to a caller waiting for its own reply when the pipe has no
 *   reader (leader/follower): it reads for everyone until its own reply is in, then hands the
 *   role to another caller asleep on its lane, so replies reach callers without a third thread
 *   in between. The reaper reads only when no caller is waiting (orphans' final replies, host
 *   calls of callers that sleep through their hand-off, unsolicited frames): a release that
 *   leaves such reading to it kicks it.
 * - Exactly one reader at a time: frames never interleave, and the partial frame in s->reader
 *   passes from holder to holder under mu. A holder drains every complete buffered frame before
 *   it lets go (poll would not wake the next one for bytes already read).
 * - Frames for a lane whose caller gave up are dropped there; the final one frees the lane. A
 *   host call of such a lane is answered with an error (owed until the request pipe is free),
 *   so its handler does not wait for the grace kill. Frames with ids no lane holds are logged
 *   and dropped.
 * - A lane's queue over its window pauses reading (lanes.c): the worker's writes then block, so
 *   a slow stream consumer holds back that worker rather than growing memory.
 */
#include <signal.h>
#include <stdlib.h>

#include "codec.h"
#include "lanes.h"
#include "log.h"
#include "rx.h"
#include "sync.h"

/* A host call for a lane that is gone or orphaned. */
static bool orphan_host_call_locked(pypool *p, pypool__slot *s, uint64_t call_id)
{
    unsigned lane = (unsigned)(call_id & PYPOOL__LANE_MASK);
    if (lane >= p->cfg.max_inflight)
        return true;
    const pypool__lane *l = &s->lanes[lane];
    return l->id != call_id || l->state != PYPOOL__LANE_OWNED;
}

/* The request id a frame answers (0: none). */
static uint64_t frame_call_id(const Pypool__Envelope *env, bool *final)
{
    *final = false;
    if (env->msg_case == PYPOOL__ENVELOPE__MSG_RESPONSE) {
        *final = !env->response->more;
        return env->response->id;
    }
    if (env->msg_case == PYPOOL__ENVELOPE__MSG_HOST_CALL)
        return env->host_call->call_id;
    return 0;
}

/* Routes a batch of decoded frames (takes them); one lock for the batch. */
static void route_batch(pypool *p, pypool__slot *s, Pypool__Envelope **env, const uint32_t *len,
                        unsigned n)
{
    /* One lock for the batch; what needs I/O or a log line waits until it is released. */
    Pypool__Envelope *dropped[PYPOOL__RX_BATCH];
    unsigned nrefused = 0, ndropped = 0;
    pypool__wakes wk = {.n = 0};
    pypool__lock(&p->mu);
    int pid = s->child.pid;
    for (unsigned i = 0; i < n; i++) {
        bool final;
        uint64_t id = frame_call_id(env[i], &final);
        if (env[i]->msg_case == PYPOOL__ENVELOPE__MSG_HOST_CALL &&
            orphan_host_call_locked(p, s, id)) {
            pypool__owe_refusal_locked(p, s, env[i]->host_call->id, id);
            pypool__envelope_free(env[i]);
            nrefused++;
        } else if (id == 0 || !pypool__lane_deliver_locked(p, s, id, env[i], len[i], final, &wk))
            dropped[ndropped++] = env[i];
    }
    pypool__unlock(&p->mu);
    pypool__wakes_flush(&wk);
    if (nrefused)
        pypool__lanes_send_cancels(p, s); /* now if the pipe is free, else its next writer */
    for (unsigned i = 0; i < ndropped; i++) {
        bool final;
        uint64_t id = frame_call_id(dropped[i], &final);
        pypool__log(p, PYPOOL_LOG_WARN, pid,
                    "dropped a message (case %d, id %llu) no call is waiting for",
                    (int)dropped[i]->msg_case, (unsigned long long)id);
        pypool__envelope_free(dropped[i]);
    }
}

bool pypool__rx_readable_locked(const pypool__slot *s)
{
    bool serving = s->state == PYPOOL_SLOT_IDLE || s->state == PYPOOL_SLOT_BUSY;
    return s->lanes && serving && s->reader.err == 0 && !s->rx_paused && !s->reaped &&
           !s->rx_dead && s->child.resp_fd >= 0;
}

bool pypool__rx_claim_locked(pypool__slot *s, int who)
{
    if (s->rx_role != PYPOOL__RX_NONE || !pypool__rx_readable_locked(s))
        return false;
    s->rx_role = who;
    return true;
}

void pypool__rx_release_locked(pypool *p, pypool__slot *s, pypool__wakes *wk)
{
    bool was_reaper = s->rx_role == PYPOOL__RX_REAPER;
    s->rx_role = PYPOOL__RX_NONE;
    if (!pypool__rx_readable_locked(s))
        return;
    /* The next reader: a caller asleep on its lane, else one sleeping through its hand-off
     * (woken early, it reads its own reply); it takes the role when it finds nothing queued. */
    for (unsigned k = 0; (s->rx_sleepers || s->rx_sleepthrough) && k < p->cfg.max_inflight; k++) {
        pypool__lane *l = &s->lanes[k];
        if (l->reader_asleep || (l->wake_word && !s->rx_sleepers)) {
            pypool__lane_wake_locked(s, l, wk);
            return;
        }
    }
    /* No caller is left to read: the final replies of orphaned lanes are the reaper's, whose
     * poll set may have left this pipe out while a caller read. Callers still on their way take
     * the role when they come. */
    if (!was_reaper && s->orphans > 0)
        pypool__kick_locked(p);
}

int pypool__rx_pump(pypool *p, pypool__slot *s, bool fill)
{
    Pypool__Envelope *env[PYPOOL__RX_BATCH];
    uint32_t lens[PYPOOL__RX_BATCH];
    int rc = fill ? pypool__reader_fill(&s->reader) : 0;
    unsigned routed = 0;
    while (rc >= 0) {
        unsigned n = 0;
        const uint8_t *body;
        uint32_t len;
        while (n < PYPOOL__RX_BATCH && (rc = pypool__reader_next(&s->reader, &body, &len)) == 1) {
            if (!(env[n] = pypool__envelope_decode(body, len))) {
                rc = PYPOOL_EPROTO;
                break;
            }
            lens[n++] = len;
        }
        if (n)
            route_batch(p, s, env, lens, n);
        routed += n;
        if (rc != 1)
            break;
    }
    return rc < 0 ? rc : (int)routed;
}

void pypool__rx_broken(pypool *p, pypool__slot *s, int rc)
{
    if (rc == PYPOOL_EWORKER)
        return; /* EOF: the exit event follows and reports the status */
    pypool__lock(&p->mu);
    if (s->child.pid > 0 && !s->reaped) {
        s->killed = true;
        pypool__signal_group(s->child.pid, SIGKILL);
    }
    p->counters.protocol_errors++;
    pypool__slot_break_locked(p, s, PYPOOL__BREAK_PROTO);
    pypool__unlock(&p->mu);
    pypool__log(p, PYPOOL_LOG_WARN, s->child.pid, "worker broke the protocol: replacing it");
}
