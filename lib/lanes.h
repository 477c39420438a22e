/*
 * lanes.h - layer 1: the lanes of a multiplexed worker (max_inflight > 1), one per call it
 * holds. Taking and freeing lanes, handing free lanes to waiting threads in FIFO order, the
 * queue of frames the reaper routes to a lane, orphaning a lane whose caller gave up, and
 * failing every lane when the worker dies. Everything *_locked wants the pool mutex.
 */
#ifndef PYPOOL_LANES_H
#define PYPOOL_LANES_H

#include "slots.h"
#include "sync.h"

/* Wakes a lane's owner (its futex word, or a waiter sleeping through its hand-off) and marks
 * it no longer asleep as a would-be reader. The futex system call goes into wk, to be made
 * once mu is released (NULL: now), and only if someone sleeps on the word. */
void pypool__lane_wake_locked(pypool__slot *s, pypool__lane *l, pypool__wakes *wk);

/* Frames (or bytes) queued on one lane beyond which the reaper stops reading that worker's
 * reply pipe until the lane's owner catches up: the worker's writes then block (a slow stream
 * consumer slows its producer) and memory stays bounded. */
#define PYPOOL__LANE_WINDOW_FRAMES 64
#define PYPOOL__LANE_WINDOW_BYTES  (4u << 20)

/* Allocates the lanes of every slot (max_inflight > 1); false when out of memory. */
bool pypool__lanes_init(pypool *p);
void pypool__lanes_free(pypool *p);

/*
 * The owner is done with its lane: frees it and settles the slot (serve waiters, go IDLE, or
 * break a draining worker once its last call is out). reason != NONE starts draining.
 */
void pypool__lane_release_locked(pypool *p, pypool__slot *s, unsigned lane, int reason);
/* Release by an owner that will send the next waiter's request itself (as
 * pypool__slot_handoff_locked): the waiter given this slot's freed lane is returned claimed,
 * not yet woken (NULL if none); the caller posts its `decided` word after the write. */
pypool__waiter *pypool__lane_handoff_locked(pypool *p, pypool__slot *s, unsigned lane, int reason);
/* The owner gives up on its call (deadline, closed stream): the lane waits for the final
 * reply without an owner, for cancel_grace_ms at most. Returns false if the final reply is
 * already queued (the owner should take it instead). */
bool pypool__lane_orphan_locked(pypool *p, pypool__slot *s, unsigned lane);
/* The worker is gone (reaped): owned lanes learn PYPOOL_EWORKER, orphans are freed. */
void pypool__lanes_fail_locked(pypool *p, pypool__slot *s);

/* The reader routes a decoded frame for lane `lane` (request id `id`); takes env. Returns
 * false if no lane waits for that id (the caller drops it). The owner's wake-up goes into wk
 * (pypool__lane_wake_locked). */
bool pypool__lane_deliver_locked(pypool *p, pypool__slot *s, uint64_t id, Pypool__Envelope *env,
                                 size_t bytes, bool final, pypool__wakes *wk);
/* The owner takes the oldest queued frame (NULL if none); resumes a paused reply pipe. */
Pypool__Envelope *pypool__lane_pop_locked(pypool *p, pypool__slot *s, unsigned lane);

/* The earliest grace deadline of the slot's orphans (0: none). */
int64_t pypool__lanes_grace_locked(const pypool *p, const pypool__slot *s);

/* A host call of a lane that is gone or orphaned: its handler still waits for a HostReply, which
 * the next writer (or the reaper) sends. */
void pypool__owe_refusal_locked(pypool *p, pypool__slot *s, uint64_t id, uint64_t call_id);

/* Sends Cancel (and owed host-call refusals) for orphans that have none out yet, if the request
 * pipe is free right now (never waits for it: a writer holding it sends them when it is done).
 * Takes mu itself. */
void pypool__lanes_send_cancels(pypool *p, pypool__slot *s);
/* Same, for a thread that already holds s->wmu (a writer, right before letting go of it). */
void pypool__lanes_send_cancels_wlocked(pypool *p, pypool__slot *s);
/* With wmu held: writes one frame into the request pipe (waiting for room until deadline_ns,
 * or for the worker's death), counting in s->req_bytes the bytes the pipe was given. */
int pypool__lanes_write_wlocked(pypool__slot *s, struct iovec *iov, int iovcnt, int64_t deadline_ns,
                                size_t *written);
/* A writer letting go of s->wmu: sends what is owed first, and again after the unlock if a debt
 * came meanwhile (its thread found wmu taken). */
void pypool__lanes_wunlock(pypool *p, pypool__slot *s);

/* Bytes of requests the worker took from its pipe (after it died: everything it ever read).
 * Takes wmu. */
uint64_t pypool__lanes_consumed(pypool__slot *s);

#endif
