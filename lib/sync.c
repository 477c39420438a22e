/*
 * sync.c - pthread wrappers that abort on impossible errors, monotonic condition variables,
 * and the cancellation guard every blocking public function runs under.
 *
 * Why disable cancellation: a host thread cancelled inside pypool_call would otherwise leave
 * the pool mutex locked or a worker checked out forever. Library calls are bounded by their
 * deadlines, so deferring a cancel to the next cancellation point after we return is safe.
 */
#define _GNU_SOURCE
#include "sync.h"

#include <errno.h>
#include <linux/futex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static void check(int rc, const char *what)
{
    if (rc != 0) {
        fprintf(stderr, "pypool: %s failed: %s\n", what, strerror(rc));
        abort();
    }
}

void pypool__mutex_init(pthread_mutex_t *mu)
{
    pthread_mutexattr_t attr;
    check(pthread_mutexattr_init(&attr), "pthread_mutexattr_init");
#ifdef PYPOOL_DEBUG
    check(pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ERRORCHECK), "mutexattr_settype");
#endif
    check(pthread_mutex_init(mu, &attr), "pthread_mutex_init");
    pthread_mutexattr_destroy(&attr);
}

void pypool__mutex_destroy(pthread_mutex_t *mu)
{
    check(pthread_mutex_destroy(mu), "pthread_mutex_destroy");
}

void pypool__lock(pthread_mutex_t *mu)
{
    check(pthread_mutex_lock(mu), "pthread_mutex_lock");
}

bool pypool__lock_until(pthread_mutex_t *mu, int64_t deadline_ns)
{
    if (deadline_ns < 0) {
        pypool__lock(mu);
        return true;
    }
    struct timespec ts = {.tv_sec = deadline_ns / 1000000000, .tv_nsec = deadline_ns % 1000000000};
    int rc = pthread_mutex_clocklock(mu, CLOCK_MONOTONIC, &ts);
    if (rc == ETIMEDOUT)
        return false;
    check(rc, "pthread_mutex_clocklock");
    return true;
}

void pypool__unlock(pthread_mutex_t *mu)
{
    check(pthread_mutex_unlock(mu), "pthread_mutex_unlock");
}

void pypool__cond_init(pthread_cond_t *cv)
{
    pthread_condattr_t attr;
    check(pthread_condattr_init(&attr), "pthread_condattr_init");
    check(pthread_condattr_setclock(&attr, CLOCK_MONOTONIC), "pthread_condattr_setclock");
    check(pthread_cond_init(cv, &attr), "pthread_cond_init");
    pthread_condattr_destroy(&attr);
}

void pypool__cond_destroy(pthread_cond_t *cv)
{
    check(pthread_cond_destroy(cv), "pthread_cond_destroy");
}

void pypool__cond_broadcast(pthread_cond_t *cv)
{
    check(pthread_cond_broadcast(cv), "pthread_cond_broadcast");
}

bool pypool__cond_wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t deadline_ns)
{
    if (deadline_ns < 0) {
        check(pthread_cond_wait(cv, mu), "pthread_cond_wait");
        return true;
    }
    struct timespec ts = {.tv_sec = deadline_ns / 1000000000, .tv_nsec = deadline_ns % 1000000000};
    int rc = pthread_cond_timedwait(cv, mu, &ts);
    if (rc == ETIMEDOUT)
        return false;
    check(rc, "pthread_cond_timedwait");
    return true;
}

int pypool__nocancel_begin(void)
{
    int old = PTHREAD_CANCEL_ENABLE;
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
    return old;
}

void pypool__nocancel_end(int old_state)
{
    int ignored;
    pthread_setcancelstate(old_state, &ignored);
}

bool pypool__wake_wait_until(atomic_uint *word, int64_t deadline_ns)
{
    struct timespec ts = {.tv_sec = deadline_ns / 1000000000, .tv_nsec = deadline_ns % 1000000000};
    while (atomic_load_explicit(word, memory_order_acquire) == 0) {
        /* FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC deadline. */
        long rc = syscall(SYS_futex, (unsigned *)word, FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG, 0u,
                          deadline_ns < 0 ? NULL : &ts, NULL, FUTEX_BITSET_MATCH_ANY);
        if (rc != 0 && errno == ETIMEDOUT)
            return atomic_load_explicit(word, memory_order_acquire) != 0;
    }
    return true;
}

void pypool__futex_wake(atomic_uint *word)
{
    syscall(SYS_futex, (unsigned *)word, FUTEX_WAKE | FUTEX_PRIVATE_FLAG, 1, NULL, NULL, 0);
}

void pypool__wake_post(atomic_uint *word)
{
    atomic_store_explicit(word, 1, memory_order_release);
    pypool__futex_wake(word);
}

bool pypool__seq_wait_until(atomic_uint *word, unsigned seen, int64_t deadline_ns)
{
    struct timespec ts = {.tv_sec = deadline_ns / 1000000000, .tv_nsec = deadline_ns % 1000000000};
    while (atomic_load_explicit(word, memory_order_acquire) == seen) {
        long rc = syscall(SYS_futex, (unsigned *)word, FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG, seen,
                          deadline_ns < 0 ? NULL : &ts, NULL, FUTEX_BITSET_MATCH_ANY);
        if (rc != 0 && errno == ETIMEDOUT)
            return atomic_load_explicit(word, memory_order_acquire) != seen;
    }
    return true;
}

void pypool__seq_bump(atomic_uint *word)
{
    atomic_fetch_add_explicit(word, 1, memory_order_release);
    pypool__futex_wake(word);
}

void pypool__wakes_add(pypool__wakes *wk, atomic_uint *word)
{
    if (wk && wk->n < PYPOOL__WAKES_MAX)
        wk->word[wk->n++] = word;
    else
        pypool__futex_wake(word);
}

void pypool__wakes_flush(pypool__wakes *wk)
{
    /* A word whose waiter already left is harmless to wake (pypool__wake_post). */
    for (unsigned i = 0; i < wk->n; i++)
        pypool__futex_wake(wk->word[i]);
    wk->n = 0;
}
