/*
 * supervise.h - what the reaper does to slots and children: start workers, accept their
 * Hello, ping them, notice and account for exits, retire broken workers, restart with
 * backoff, and stop everything at shutdown. Called only from the reaper thread (reaper.c).
 */
#ifndef PYPOOL_SUPERVISE_H
#define PYPOOL_SUPERVISE_H

#include "log.h"
#include "slots.h"

#define PYPOOL__BACKOFF_RESET_MS 10000 /* a worker up this long resets its slot's backoff */
#define PYPOOL__RETIRE_GRACE_MS  2000  /* a retired worker gets this long to exit on its own */
#define PYPOOL__TERM_TO_KILL_MS  300   /* SIGTERM, then SIGKILL this much later */

/* Spawns every slot that is due (wanted EMPTY, BACKOFF past its delay). */
void pypool__start_due(pypool *p);
/* Moves the children of BROKEN slots to the dying list and schedules their restart. */
void pypool__retire_broken(pypool *p);

/* dying.c: the dying list, and reading log pipes. */
/* Reads what a log pipe has (bounded unless to_eof); at EOF flushes and closes it. */
void pypool__drain_log(pypool *p, int *fd, pypool__logbuf *lb, int pid, bool to_eof);
/* With mu held: takes the child out of the slot (onto the dying list unless reaped). */
void pypool__release_child_locked(pypool *p, pypool__slot *s, int reason, int64_t term_at);
/* With mu held: counts an exit the pool did not ask for. */
void pypool__count_crash_locked(pypool *p, int status);
/* Makes room in the dying list for everything one round may retire, so that nothing allocates
 * (or waits) under the mutex; false when out of memory (the round then retires nothing). */
bool pypool__dying_reserve(pypool *p);

/* fd events */
void pypool__on_slot_exit(pypool *p, pypool__slot *s);
void pypool__on_slot_reply(pypool *p, pypool__slot *s); /* Hello, Pong, multiplexed replies */
/* With mu held: the reaper reads this slot's reply pipe now (it goes in the poll set). */
bool pypool__reaper_reads_locked(const pypool__slot *s);

void pypool__on_slot_log(pypool *p, pypool__slot *s);
void pypool__on_dying_event(pypool *p, unsigned i);

/* With mu held: a start failed (msg says why); kills the child, backs off or gives up. */
void pypool__slot_start_failed_locked(pypool *p, pypool__slot *s, const char *msg);
/* With mu held, at shutdown: kills a starting worker and stops the slot. */
void pypool__slot_start_abort_locked(pypool *p, pypool__slot *s);

/* timers: returns the next deadline (ns) the loop must wake for, or PYPOOL__NO_DEADLINE */
int64_t pypool__run_timers(pypool *p);

/* shutdown: stops what can stop now; true once no child of the pool is left */
bool pypool__shutdown_step(pypool *p);

/* Without pidfds: reaps exited children with WNOHANG. */
void pypool__poll_exits(pypool *p);

#endif
