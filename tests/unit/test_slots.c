/*
 * test_slots.c - the slot core without a Python process: the state table (every legal
 * transition lands where DESIGN.md says, every other one aborts), FIFO hand-over, the waiters of
 * a broken slot failing at once, and the session map's bindings by worker generation.
 *
 * The pool here is built by hand (slots IDLE, no reaper, no children): only layer 1 and the
 * client-side waiting above it run.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "checkout.h"
#include "clock.h"
#include "session.h"
#include "slots.h"
#include "state.h"
#include "sync.h"
#include "testutil.h"

/* --- a pool without workers ---------------------------------------------------------------- */

static pypool *fake_pool(unsigned size)
{
    pypool *p = calloc(1, sizeof *p);
    cr_assert_not_null(p);
    pypool__mutex_init(&p->mu);
    pypool__cond_init(&p->state_cv);
    p->cfg.size = size;
    p->wake_fd = -1; /* the kick has no reaper to wake */
    p->reaper_wake_at_ns = PYPOOL__NO_DEADLINE;
    p->slots = calloc(size, sizeof *p->slots);
    p->idle = calloc(size, sizeof *p->idle);
    for (unsigned i = 0; i < size; i++) {
        pypool__slot *s = &p->slots[i];
        s->index = i;
        s->state = PYPOOL_SLOT_IDLE;
        pypool__child_clear(&s->child);
        p->idle[p->nidle++] = i;
    }
    return p;
}

static void fake_pool_free(pypool *p)
{
    pypool__sessions_free(p);
    free(p->slots);
    free(p->idle);
    pypool__cond_destroy(&p->state_cv);
    pypool__mutex_destroy(&p->mu);
    free(p);
}

static pypool__slot *checkout_now(pypool *p, int want)
{
    pypool__slot *s = NULL;
    char *why = NULL;
    int rc =
        pypool__checkout(p, want, pypool__deadline_after_ms(10000), true, 0, NULL, &s, NULL, &why);
    free(why);
    cr_assert_eq(rc, 0, "checkout: %s", pypool_strerror(rc));
    return s;
}

/* --- the state table ------------------------------------------------------------------------ */

typedef struct legal {
    int from, event, to;
} legal;

/* DESIGN.md "Slot states", written out independently of lib/state.c. */
static const legal LEGAL[] = {
    {PYPOOL_SLOT_EMPTY, PYPOOL__EV_SPAWN, PYPOOL_SLOT_STARTING},
    {PYPOOL_SLOT_EMPTY, PYPOOL__EV_CRASH_LOOP, PYPOOL_SLOT_FAILED},
    {PYPOOL_SLOT_EMPTY, PYPOOL__EV_WARM, PYPOOL_SLOT_EMPTY},
    {PYPOOL_SLOT_STARTING, PYPOOL__EV_HELLO, PYPOOL_SLOT_IDLE},
    {PYPOOL_SLOT_STARTING, PYPOOL__EV_START_FAIL, PYPOOL_SLOT_BACKOFF},
    {PYPOOL_SLOT_STARTING, PYPOOL__EV_CRASH_LOOP, PYPOOL_SLOT_FAILED},
    {PYPOOL_SLOT_IDLE, PYPOOL__EV_CHECKOUT, PYPOOL_SLOT_BUSY},
    {PYPOOL_SLOT_IDLE, PYPOOL__EV_BREAK, PYPOOL_SLOT_BROKEN},
    {PYPOOL_SLOT_IDLE, PYPOOL__EV_PING, PYPOOL_SLOT_PINGING},
    {PYPOOL_SLOT_BUSY, PYPOOL__EV_CHECKIN, PYPOOL_SLOT_IDLE},
    {PYPOOL_SLOT_BUSY, PYPOOL__EV_BREAK, PYPOOL_SLOT_BROKEN},
    {PYPOOL_SLOT_PINGING, PYPOOL__EV_PONG, PYPOOL_SLOT_IDLE},
    {PYPOOL_SLOT_PINGING, PYPOOL__EV_BREAK, PYPOOL_SLOT_BROKEN},
    {PYPOOL_SLOT_BROKEN, PYPOOL__EV_BACKOFF, PYPOOL_SLOT_BACKOFF},
    {PYPOOL_SLOT_BROKEN, PYPOOL__EV_SPAWN, PYPOOL_SLOT_STARTING},
    {PYPOOL_SLOT_BACKOFF, PYPOOL__EV_SPAWN, PYPOOL_SLOT_STARTING},
    {PYPOOL_SLOT_FAILED, PYPOOL__EV_WARM, PYPOOL_SLOT_EMPTY},
};

static int legal_next(int from, int event)
{
    if (event == PYPOOL__EV_STOP)
        return PYPOOL_SLOT_STOPPED; /* every state can be stopped */
    for (size_t i = 0; i < sizeof LEGAL / sizeof LEGAL[0]; i++)
        if (LEGAL[i].from == from && LEGAL[i].event == event)
            return LEGAL[i].to;
    return -1;
}

Test(slots, every_transition_of_the_table_is_legal_or_aborts)
{
    for (int from = PYPOOL_SLOT_EMPTY; from <= PYPOOL_SLOT_STOPPED; from++) {
        for (int ev = 0; ev < PYPOOL__EV_COUNT; ev++) {
            int want = legal_next(from, ev);
            pid_t child = fork();
            cr_assert_geq(child, 0);
            if (child == 0) {
                close(2); /* the abort's message is expected */
                pypool__slot s = {.index = 0, .state = from};
                pypool__transition(&s, ev);
                _exit(s.state == want ? 0 : 1);
            }
            int status;
            cr_assert_eq(waitpid(child, &status, 0), child);
            if (want >= 0)
                cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                          "%s --event %d--> should give %s", pypool_slot_state_name(from), ev,
                          pypool_slot_state_name(want));
            else
                cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT,
                          "%s --event %d--> is not in DESIGN.md but did not abort",
                          pypool_slot_state_name(from), ev);
        }
    }
}

/* --- FIFO hand-over -------------------------------------------------------------------------- */

typedef struct waiter_thread {
    pypool *p;
    int want;
    atomic_int *order; /* next arrival number */
    int served_as;     /* this thread's place in the hand-over order */
    int rc;
    pthread_t thread;
} waiter_thread;

static void *wait_then_return(void *arg)
{
    waiter_thread *w = arg;
    pypool__slot *s = NULL;
    char *why = NULL;
    w->rc = pypool__checkout(w->p, w->want, pypool__deadline_after_ms(20000), false, 0, NULL, &s,
                             NULL, &why);
    free(why);
    if (w->rc == 0) {
        w->served_as = atomic_fetch_add(w->order, 1);
        pypool__checkin(w->p, s, PYPOOL__BREAK_NONE); /* hands it to the next in line */
    }
    return NULL;
}

static unsigned waiters_now(pypool *p)
{
    pypool__lock(&p->mu);
    unsigned n = p->nwaiters;
    pypool__unlock(&p->mu);
    return n;
}

static void wait_for_waiters(pypool *p, unsigned n)
{
    int64_t until = tu_now_ms() + 10000;
    while (waiters_now(p) != n && tu_now_ms() < until)
        tu_sleep_ms(1);
    cr_assert_eq(waiters_now(p), n, "waiters never reached %u", n);
}

Test(slots, a_released_worker_goes_to_the_waiters_in_arrival_order)
{
    enum { N = 6 };
    pypool *p = fake_pool(1);
    pypool__slot *held = checkout_now(p, -1);
    atomic_int order = 0;
    waiter_thread w[N];
    for (int i = 0; i < N; i++) {
        w[i] = (waiter_thread){.p = p, .want = -1, .order = &order};
        cr_assert_eq(pthread_create(&w[i].thread, NULL, wait_then_return, &w[i]), 0);
        wait_for_waiters(p, (unsigned)i + 1); /* arrival order is creation order */
    }
    pypool__lock(&p->mu);
    cr_assert_eq(p->nidle, 0u, "the idle stack holds a worker while threads wait");
    pypool__unlock(&p->mu);
    pypool__checkin(p, held, PYPOOL__BREAK_NONE);
    for (int i = 0; i < N; i++) {
        pthread_join(w[i].thread, NULL);
        cr_assert_eq(w[i].rc, 0);
        cr_assert_eq(w[i].served_as, i, "thread %d was served as number %d", i, w[i].served_as);
    }
    cr_assert_eq(p->slots[0].state, PYPOOL_SLOT_IDLE);
    cr_assert_eq(p->nidle, 1u);
    fake_pool_free(p);
}

Test(slots, breaking_a_slot_fails_its_own_waiters_at_once_and_no_one_else)
{
    pypool *p = fake_pool(2);
    pypool__slot *a = checkout_now(p, 0);
    pypool__slot *b = checkout_now(p, 1);
    atomic_int order = 0;
    waiter_thread mine = {.p = p, .want = 0, .order = &order};
    waiter_thread any = {.p = p, .want = -1, .order = &order};
    cr_assert_eq(pthread_create(&mine.thread, NULL, wait_then_return, &mine), 0);
    wait_for_waiters(p, 1);
    cr_assert_eq(pthread_create(&any.thread, NULL, wait_then_return, &any), 0);
    wait_for_waiters(p, 2);

    pypool__lock(&p->mu);
    p->reaper_done = true; /* no reaper: checkin closes the broken slot itself */
    pypool__unlock(&p->mu);
    int64_t t0 = tu_now_ms();
    pypool__checkin(p, a, PYPOOL__BREAK_CRASH);
    pthread_join(mine.thread, NULL);
    cr_assert_eq(mine.rc, PYPOOL_ESESSION, "the slot's own waiter got %s",
                 pypool_strerror(mine.rc));
    /* ESESSION (not ETIMEDOUT at its 20 s deadline) says it was failed by the break; the bound
     * only gives a late failure a message. */
    cr_assert_lt(tu_now_ms() - t0, 15000, "the waiter was not failed at the break");
    cr_assert_eq(waiters_now(p), 1u, "the waiter for any worker must stay");
    pypool__checkin(p, b, PYPOOL__BREAK_NONE);
    pthread_join(any.thread, NULL);
    cr_assert_eq(any.rc, 0, "the waiter for any worker got %s", pypool_strerror(any.rc));
    fake_pool_free(p);
}

/* --- sessions ----------------------------------------------------------------------------------
 */

Test(slots, sessions_bind_to_a_worker_generation)
{
    pypool *p = fake_pool(3);
    p->slots[2].generation = 5;
    pypool__lock(&p->mu);
    cr_assert_eq(pypool__session_bind_locked(p, "alice", 2, 5), 0);
    cr_assert_eq(pypool__session_bind_locked(p, "bob", 2, 4), 0); /* an older worker's */
    unsigned slot = 99;
    uint64_t gen = 0;
    cr_assert(pypool__session_lookup_locked(p, "alice", &slot, &gen));
    cr_assert(slot == 2 && gen == 5);
    cr_assert_eq(p->slots[2].sessions, 1u, "only the current worker's sessions count");
    cr_assert_not(pypool__session_lookup_locked(p, "carol", &slot, &gen));
    for (int i = 0; i < 1000; i++) { /* the map grows and keeps every binding */
        char id[32];
        snprintf(id, sizeof id, "s%d", i);
        cr_assert_eq(pypool__session_bind_locked(p, id, (unsigned)i % 3, 0), 0);
    }
    for (int i = 0; i < 1000; i++) {
        char id[32];
        snprintf(id, sizeof id, "s%d", i);
        cr_assert(pypool__session_lookup_locked(p, id, &slot, &gen) && slot == (unsigned)i % 3);
    }
    pypool__session_remove_locked(p, "alice");
    cr_assert_eq(p->slots[2].sessions, 0u);
    cr_assert_not(pypool__session_lookup_locked(p, "alice", &slot, &gen));
    cr_assert_eq(p->nsessions, 1001u);
    pypool__unlock(&p->mu);
    fake_pool_free(p);
}
