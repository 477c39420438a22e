/* checkout.h - layer 2, client side: waiting for a worker, and giving it back. */
#ifndef PYPOOL_CHECKOUT_H
#define PYPOOL_CHECKOUT_H

#include "slots.h"

/*
 * Checks out any worker, or slot `want` (>= 0). deadline_ns < 0: none; nowait: only idle.
 * call_deadline_ns (> 0) is published for the reaper's deadline watch (0: no call yet).
 * Multiplexed pools (max_inflight > 1) check out one lane of a worker: *lane (may be NULL for
 * exclusive pools) gets it, -1 for exclusive workers. pre (may be NULL): the request the
 * caller will send, which the thread handing it an exclusive worker may send for it
 * (slot->presented_id says so).
 */
int pypool__checkout(pypool *p, int want, int64_t deadline_ns, bool nowait,
                     int64_t call_deadline_ns, const pypool__prereq *pre, pypool__slot **out,
                     int *lane, char **why);
/* Returns a slot. reason != NONE hands it to the reaper to replace its worker. */
void pypool__checkin(pypool *p, pypool__slot *s, int reason);
/* Returns a lane of a multiplexed worker (reason != NONE: the worker is to be replaced). */
void pypool__checkin_lane(pypool *p, pypool__slot *s, unsigned lane, int reason);

#endif
