/*
 * sync.h - pthread wrappers that abort on an impossible error code (nng style), and monotonic
 * condition variables. A mutex error here means memory corruption or a lock-order bug: there
 * is nothing sensible to return to the caller.
 */
#ifndef PYPOOL_SYNC_H
#define PYPOOL_SYNC_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

void pypool__mutex_init(pthread_mutex_t *mu);
void pypool__mutex_destroy(pthread_mutex_t *mu);
void pypool__lock(pthread_mutex_t *mu);
void pypool__unlock(pthread_mutex_t *mu);
/* Locks mu unless the absolute monotonic deadline (ns; < 0: none) passes first (false). */
bool pypool__lock_until(pthread_mutex_t *mu, int64_t deadline_ns);

/* Condition variables on CLOCK_MONOTONIC. */
void pypool__cond_init(pthread_cond_t *cv);
void pypool__cond_destroy(pthread_cond_t *cv);
void pypool__cond_broadcast(pthread_cond_t *cv);
/* Waits until signalled or the absolute monotonic deadline (ns; < 0 = none). False on timeout. */
bool pypool__cond_wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t deadline_ns);

/*
 * A one-shot wake-up word for handing a worker to a waiting thread (futex): the waiter sleeps
 * while *word == 0 until the deadline (false on timeout); the waker stores 1 then wakes it.
 * Waking a word whose waiter already left is harmless, which is what lets the waker skip any
 * lock: the woken thread never has to fight for the pool mutex on its way out.
 */
bool pypool__wake_wait_until(atomic_uint *word, int64_t deadline_ns);
void pypool__wake_post(atomic_uint *word);

/*
 * A sequence word for a thread that is woken many times (a multiplexed call's lane): the
 * waiter reads the word, checks its condition under the lock, and sleeps while the word still
 * equals what it read; every waker adds 1 and wakes it. False on timeout.
 */
bool pypool__seq_wait_until(atomic_uint *word, unsigned seen, int64_t deadline_ns);
void pypool__seq_bump(atomic_uint *word);

/*
 * The system call half of the two above: wakes one thread asleep on word. A waker that changed
 * the word under a lock calls it after the unlock (see pypool__wakes), so the woken thread does
 * not at once block on that lock.
 */
void pypool__futex_wake(atomic_uint *word);

/* Wake-ups decided under a lock and made after it (pypool__wakes_flush). When full, a wake-up
 * is made at once (correct, only slower). */
#define PYPOOL__WAKES_MAX 64
typedef struct pypool__wakes {
    atomic_uint *word[PYPOOL__WAKES_MAX];
    unsigned n;
} pypool__wakes;
void pypool__wakes_add(pypool__wakes *wk, atomic_uint *word); /* wk NULL: wake now */
void pypool__wakes_flush(pypool__wakes *wk);

/* Disables thread cancellation for the duration of a library call (restored by the pair). */
int pypool__nocancel_begin(void);
void pypool__nocancel_end(int old_state);

#endif
