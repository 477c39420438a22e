/* mux.h - layer 2, client side: calls on a lane of a multiplexed worker (see mux.c). */
#ifndef PYPOOL_MUX_H
#define PYPOOL_MUX_H

#include "slots.h"

struct pypool__xchg;

/*
 * Sends a request on an owned lane. new_id: give the lane a fresh request id first (every call
 * but the first of a lane taken for it). 0, PYPOOL__ENOTSENT (the worker died without reading
 * it: retry elsewhere), or the caller's error with *reason set.
 */
int pypool__lane_send(pypool *p, pypool__slot *s, unsigned lane, bool new_id,
                      const char *session_id, const char *method, const void *payload, size_t len,
                      int64_t deadline_ns, pypool_result *out, int *reason);

/* An exchange (exchange.h) of the lane's request: frames the reaper routed to the lane. */
void pypool__lane_xchg_init(struct pypool__xchg *x, pypool *p, pypool__slot *s, unsigned lane,
                            const char *method, int64_t deadline_ns);

/*
 * The owner gives up on the lane's request (deadline, closed stream): the lane is orphaned and
 * the worker told to cancel it. False if its final reply is already queued (take it instead).
 */
bool pypool__lane_give_up(pypool *p, pypool__slot *s, unsigned lane);

/*
 * Maps an exchange's channel error to the caller's error: EWORKER (or PYPOOL__ENOTSENT if the
 * worker never read the request), ETIMEDOUT after giving the call up (*orphaned then: the lane
 * is no longer the caller's to release), ESHUTDOWN, ENOMEM.
 */
int pypool__lane_failed(pypool *p, pypool__slot *s, unsigned lane, int rc, const char *method,
                        pypool_result *out, int *reason, bool *orphaned);

/*
 * One request/reply on an owned lane (pypool_call, pypool_worker_call). *orphaned: the call
 * timed out and the lane now belongs to the pool (do not release it). *wait_start as in
 * pypool__slot_call.
 */
int pypool__lane_call(pypool *p, pypool__slot *s, unsigned lane, bool new_id,
                      const char *session_id, const char *method, const void *payload, size_t len,
                      int64_t deadline_ns, int64_t *wait_start, pypool_result *out, int *reason,
                      bool *orphaned);

/* Writes the request of the thread a lane is being handed to (its `pre`) if it is small and
 * the pipe takes it at once (true); pypool__lane_send then does not send it again. */
bool pypool__lane_present(pypool *p, pypool__slot *s, unsigned lane, const pypool__prereq *pre);

/* Sends SessionClose through an owned lane (the worker drops the session's dict). */
void pypool__lane_session_close(pypool *p, pypool__slot *s, const char *session_id, int *reason);

#endif
