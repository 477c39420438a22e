/*
 * demux.c - layer 2, reaper side: the replies of multiplexed workers. The reaper reads every
 * such worker's reply pipe (it is in the poll set while the worker serves) and hands each
 * frame to the lane its request id names (lanes.c), waking that lane's owner.
 *
 * Design notes:
 * - One reader per pipe, whatever the number of calls in flight: frames never interleave, and
 *   the reaper's poll already watches the pipe for Hello and Pong.
 * - Frames for a lane whose caller gave up are dropped there; the final one frees the lane. A
 *   host call of such a lane is answered with an error (owed until the request pipe is free),
 *   so its handler does not wait for the grace kill. Frames with ids no lane holds are logged and
 * dropped.
 * - A lane's queue over its window pauses reading (lanes.c): the worker's writes then block, so
 *   a slow stream consumer holds back that worker rather than growing memory.
 */
#include <stdlib.h>

#include "codec.h"
#include "lanes.h"
#include "supervise.h"
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

void pypool__demux_batch(pypool *p, pypool__slot *s, Pypool__Envelope **env, const uint32_t *len,
                         unsigned n)
{
    /* One lock for the batch; what needs I/O or a log line waits until it is released. */
    Pypool__Envelope *dropped[PYPOOL__DEMUX_BATCH];
    unsigned nrefused = 0, ndropped = 0;
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
        } else if (id == 0 || !pypool__lane_deliver_locked(p, s, id, env[i], len[i], final))
            dropped[ndropped++] = env[i];
    }
    pypool__unlock(&p->mu);
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
