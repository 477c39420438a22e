/* call.h - layer 2, client side: request/reply on a checked-out slot (see call.c). */
#ifndef PYPOOL_CALL_H
#define PYPOOL_CALL_H

#include <stdarg.h>
#include <stdio.h>

#include "slots.h"

/* Internal: the request never reached the worker (EPIPE before any byte); safe to retry. */
#define PYPOOL__ENOTSENT (-100)
/* Internal: route the call again (client.c); never returned to a user. */
#define PYPOOL__ERETRY (-101)

/*
 * True if an idle worker's reply channel is not clean: it hung up (died) or wrote something
 * nobody asked for. Such a worker must not be given a request.
 */
bool pypool__slot_channel_dirty(const pypool__slot *s);

/* One request/reply on a checked-out slot. *reason tells checkin how the slot ended up. A
 * non-zero *wait_start (when the call began) is recorded in wait_us, ending as the request
 * goes out (one clock read serves both histograms), and zeroed. */
int pypool__slot_call(pypool *p, pypool__slot *s, const char *session_id, const char *method,
                      const void *payload, size_t len, int64_t deadline_ns, int64_t *wait_start,
                      pypool_result *out, int *reason);
/* An exchange (exchange.h) read by the calling thread from an exclusive worker's pipe. */
struct pypool__xchg;
void pypool__direct_xchg_init(struct pypool__xchg *x, pypool *p, pypool__slot *s, uint64_t id,
                              const char *method, int64_t deadline_ns);
/* Sends a request on a checked-out exclusive slot (streams): its id in *id. 0, ENOTSENT when
 * the worker died without reading it, or the caller's error (with *reason set). */
int pypool__slot_send(pypool *p, pypool__slot *s, const char *session_id, const char *method,
                      const void *payload, size_t len, int64_t deadline_ns, uint64_t *id,
                      pypool_result *out, int *reason);
/* Sends Cancel for request id on a checked-out exclusive slot, waiting until deadline_ns. */
int pypool__slot_cancel(pypool__slot *s, uint64_t id, int64_t deadline_ns);
/* Maps a channel error of an exclusive slot's exchange to the caller's error (kills and sets
 * *reason as the call path does). */
int pypool__slot_failed(pypool *p, pypool__slot *s, int rc, const char *method, pypool_result *out,
                        int *reason);

/* Writes the request of the thread a worker is being handed to (its `pre`), if it is small
 * enough to go in one non-blocking write: the worker starts on it while that thread wakes.
 * Sets s->presented_id on success; pypool__slot_call then does not send it again. */
void pypool__slot_present(pypool *p, pypool__slot *s, const pypool__prereq *pre);

/* The worker died during a call (its exit status is in once reaped): EWORKER naming how, or
 * ESHUTDOWN if pypool_destroy stopped it. *reason = CRASH. */
int pypool__worker_died(pypool *p, pypool__slot *s, const char *method, pypool_result *out,
                        int *reason);

/* Sends SessionClose on a checked-out slot. */
int pypool__slot_session_close(pypool *p, pypool__slot *s, const char *session_id, int *reason);

#endif
