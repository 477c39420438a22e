/*
 * startup.c - lazy, eager and warm pools: a lazy pool used serially starts exactly one worker
 * and never more than `size` under load; an eager pool has every pid before the first call;
 * pypool_warm starts every empty slot; workers start concurrently, not one after another.
 *
 * Load is made by callers that hold their workers until released, and concurrency is read from
 * the pool's start events: nothing depends on a call or a start taking long enough.
 */
#define _GNU_SOURCE
#include "pool_test.h"

#include <stdatomic.h>

TestSuite(pool_startup, .init = tu_log_reset, .fini = pt_teardown, .timeout = 60);

static bool is_child(pid_t pid)
{
    pid_t kids[64];
    int n = tu_list_children(kids, 64);
    for (int i = 0; i < n && i < 64; i++)
        if (kids[i] == pid)
            return true;
    return false;
}

Test(pool_startup, lazy_pool_used_serially_starts_exactly_one_worker, .timeout = 60)
{
    pypool_config cfg;
    tu_config(&cfg, "echo_mod", 4);
    cfg.lazy = true;
    pypool *p = pt_create(&cfg);

    pypool_stats s = pt_stats(p);
    cr_assert_eq(tu_count_children(), 0, "a lazy pool started %d workers at create",
                 tu_count_children());
    cr_assert_eq(s.idle + s.busy + s.starting, 0, "lazy pool: idle %u busy %u starting %u", s.idle,
                 s.busy, s.starting);
    for (unsigned i = 0; i < s.slot_count; i++)
        cr_assert_eq(s.slots[i].state, PYPOOL_SLOT_EMPTY, "slot %u is %s before any call", i,
                     pypool_slot_state_name(s.slots[i].state));

    int first_pid = 0;
    for (int i = 0; i < 20; i++) {
        pypool_result r;
        int rc = pt_call_str(p, "pid", "", 15000, &r);
        PT_ASSERT_RC(rc, PYPOOL_OK, &r, "serial call on a lazy pool");
        if (i == 0)
            first_pid = r.worker_pid;
        cr_assert_eq(r.worker_pid, first_pid, "call %d served by %d, first by %d", i, r.worker_pid,
                     first_pid);
        pypool_result_free(&r);
    }
    cr_assert_eq(tu_count_children(), 1, "serial use started %d workers", tu_count_children());
    s = pt_stats(p);
    unsigned empty = 0;
    for (unsigned i = 0; i < s.slot_count; i++)
        empty += s.slots[i].state == PYPOOL_SLOT_EMPTY;
    cr_assert_eq(s.idle, 1, "idle %u", s.idle);
    cr_assert_eq(empty, 3, "%u empty slots, want 3", empty);
    pt_destroy(p);
}

typedef struct child_watch {
    atomic_bool stop;
    int max_children;
} child_watch;

static void *watch_children(void *arg)
{
    child_watch *cw = arg;
    while (!atomic_load(&cw->stop)) {
        int n = tu_count_children();
        if (n > cw->max_children)
            cw->max_children = n;
        tu_sleep_ms(2);
    }
    return NULL;
}

/* A caller that checks a worker out, calls it, and holds it until released. */
typedef struct holder {
    pypool *p;
    atomic_int *release;
    int rc;
    int pid;
    pthread_t thread;
} holder;

static void *holder_main(void *arg)
{
    holder *h = arg;
    pypool_worker *w = NULL;
    h->rc = pypool_checkout(h->p, 30000, &w);
    if (h->rc != PYPOOL_OK)
        return NULL;
    pypool_result r;
    h->rc = pypool_worker_call(w, "pid", "", 0, 30000, &r);
    h->pid = r.worker_pid;
    pypool_result_free(&r);
    while (!atomic_load(h->release))
        tu_sleep_ms(1);
    pypool_checkin(w);
    return NULL;
}

typedef struct demand_arg {
    pypool *p;
    unsigned busy, waiters;
} demand_arg;

static bool demand_reached(void *arg)
{
    demand_arg *a = arg;
    pypool_stats s = pt_stats(a->p);
    return s.busy == a->busy && s.waiters == a->waiters;
}

/*
 * Eight callers at once on a lazy pool of two, each holding its worker until released: the
 * demand outlasts the starts by construction (no call has to be slow enough), both workers
 * must start, and never more than two (a watcher samples the children; a sample it misses can
 * only hide an excess, never invent one).
 */
Test(pool_startup, lazy_pool_under_load_never_exceeds_size, .timeout = 60)
{
    pypool_config cfg;
    tu_config(&cfg, "echo_mod", 2);
    cfg.lazy = true;
    pypool *p = pt_create(&cfg);

    child_watch cw = {0};
    pthread_t watcher;
    cr_assert_eq(pthread_create(&watcher, NULL, watch_children, &cw), 0);
    atomic_int release = 0;
    holder hs[8];
    for (int i = 0; i < 8; i++) {
        hs[i] = (holder){.p = p, .release = &release, .rc = 1};
        cr_assert_eq(pthread_create(&hs[i].thread, NULL, holder_main, &hs[i]), 0);
    }
    /* Both workers started and held, six callers queued behind them. */
    demand_arg d = {p, 2, 6};
    bool both = tu_wait_until(demand_reached, &d, 30000);
    int children = tu_count_children();
    atomic_store(&release, 1);
    for (int i = 0; i < 8; i++)
        pthread_join(hs[i].thread, NULL);
    cw.stop = true;
    pthread_join(watcher, NULL);

    cr_assert(both, "8 concurrent callers never had both workers with 6 waiting");
    cr_assert_eq(children, 2, "with both workers held, %d children", children);
    for (int i = 0; i < 8; i++)
        cr_assert_eq(hs[i].rc, PYPOOL_OK, "caller %d on a lazy pool under load: %s", i,
                     pypool_strerror(hs[i].rc));
    cr_assert_leq(cw.max_children, 2, "a lazy pool of 2 had %d children", cw.max_children);
    cr_assert_eq(tu_count_children(), 2, "8 concurrent callers should start both workers");
    pt_destroy(p);
}

Test(pool_startup, eager_pool_of_four_has_four_pids_before_the_first_call, .timeout = 60)
{
    pypool_config cfg;
    tu_config(&cfg, "echo_mod", 4);
    pypool *p = pt_create(&cfg);

    pypool_stats s = pt_stats(p);
    cr_assert_eq(s.size, 4);
    cr_assert_eq(s.slot_count, 4);
    cr_assert_eq(s.idle, 4, "idle %u right after an eager create", s.idle);
    for (unsigned i = 0; i < 4; i++) {
        int pid = s.slots[i].pid;
        cr_assert_gt(pid, 0, "slot %u has no pid", i);
        cr_assert_eq(s.slots[i].state, PYPOOL_SLOT_IDLE, "slot %u is %s", i,
                     pypool_slot_state_name(s.slots[i].state));
        cr_assert(pt_alive(pid) && is_child(pid), "slot %u pid %d is not a live child", i, pid);
        for (unsigned k = 0; k < i; k++)
            cr_assert_neq(pid, s.slots[k].pid, "slots %u and %u share pid %d", k, i, pid);
    }
    cr_assert_eq(tu_count_children(), 4);
    cr_assert_eq(s.calls, 0);
    pt_destroy(p);
}

Test(pool_startup, warm_starts_every_empty_slot_and_waits, .timeout = 60)
{
    pypool_config cfg;
    tu_config(&cfg, "echo_mod", 3);
    cfg.lazy = true;
    pypool *p = pt_create(&cfg);
    cr_assert_eq(tu_count_children(), 0);

    int rc = pypool_warm(p, 15000);
    PT_ASSERT_RC(rc, PYPOOL_OK, NULL, "pypool_warm");
    pypool_stats s = pt_stats(p);
    cr_assert_eq(s.idle, 3, "idle %u right after warm", s.idle);
    cr_assert_eq(tu_count_children(), 3);
    int pids[3];
    cr_assert_eq(pt_slot_pids(p, pids, 3), 3);

    /* Warming a warm pool changes nothing and returns at once. */
    int64_t t0 = tu_now_ms();
    rc = pypool_warm(p, 15000);
    int64_t took = tu_now_ms() - t0;
    PT_ASSERT_RC(rc, PYPOOL_OK, NULL, "second pypool_warm");
    cr_assert_lt(took, 5000, "warming a warm pool took %lld ms", (long long)took);
    int again[3];
    pt_slot_pids(p, again, 3);
    cr_assert(memcmp(pids, again, sizeof pids) == 0, "warm replaced running workers");
    pt_destroy(p);
}

/*
 * Whether workers start one after another or together is read from the pool's own events, in
 * order: "worker spawned in slot N" and "worker ready in slot N". The most workers between
 * spawn and ready at one moment is 1 for serial starts and 8 for concurrent ones.
 * pool_slow_start sleeps 1 s at import, which only keeps every start open long enough for the
 * other seven to be spawned (posix_spawn calls, milliseconds each).
 */
static struct {
    pthread_mutex_t mu;
    int spawned, ready, most_starting;
} starts = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void starts_log(void *ud, int level, int pid, const char *line)
{
    (void)ud;
    (void)level;
    (void)pid;
    pthread_mutex_lock(&starts.mu);
    if (strncmp(line, "worker spawned in slot", 22) == 0)
        starts.spawned++;
    else if (strncmp(line, "worker ready in slot", 20) == 0)
        starts.ready++;
    if (starts.spawned - starts.ready > starts.most_starting)
        starts.most_starting = starts.spawned - starts.ready;
    pthread_mutex_unlock(&starts.mu);
}

static void starts_reset(void)
{
    pthread_mutex_lock(&starts.mu);
    starts.spawned = starts.ready = starts.most_starting = 0;
    pthread_mutex_unlock(&starts.mu);
}

static int starts_most(int *spawned, int *ready)
{
    pthread_mutex_lock(&starts.mu);
    int most = starts.most_starting;
    *spawned = starts.spawned;
    *ready = starts.ready;
    pthread_mutex_unlock(&starts.mu);
    return most;
}

Test(pool_startup, eight_workers_start_concurrently, .timeout = 90)
{
    static const char *const env[] = {"POOL_SLOW_START_S=1.0", NULL};
    pypool_config cfg;
    tu_config(&cfg, "pool_slow_start", 8);
    cfg.env = env;
    cfg.log_fn = starts_log;
    cfg.startup_timeout_ms = 60000; /* the machine may be loaded */

    starts_reset();
    int64_t t0 = tu_now_ms();
    pypool *p = pt_create(&cfg);
    int64_t eager_ms = tu_now_ms() - t0;
    int spawned, ready;
    int eager_most = starts_most(&spawned, &ready);
    pt_destroy(p);
    cr_assert_geq(eager_ms, 950, "create returned after %lld ms, before the imports could end",
                  (long long)eager_ms);
    cr_assert_eq(spawned, 8, "eager create: %d spawn events", spawned);
    cr_assert_eq(ready, 8, "eager create: %d ready events", ready);
    cr_assert_eq(eager_most, 8,
                 "eager create: at most %d of 8 workers were starting at once (serial starts?)",
                 eager_most);

    cfg.lazy = true;
    p = pt_create(&cfg);
    starts_reset();
    t0 = tu_now_ms();
    int rc = pypool_warm(p, 60000);
    int64_t warm_ms = tu_now_ms() - t0;
    char warm_detail[512];
    snprintf(warm_detail, sizeof warm_detail, "%s", pypool_last_error());
    unsigned idle = pt_stats(p).idle;
    int warm_most = starts_most(&spawned, &ready);
    pt_destroy(p);

    fprintf(stderr, "eager create %lld ms, warm %lld ms; most starting at once: %d, %d\n",
            (long long)eager_ms, (long long)warm_ms, eager_most, warm_most);
    cr_assert_eq(rc, PYPOOL_OK, "pypool_warm of 8 slow workers: %s: %s", pypool_strerror(rc),
                 warm_detail);
    cr_assert_eq(idle, 8);
    cr_assert_eq(warm_most, 8,
                 "warm: at most %d of 8 workers were starting at once (serial starts?)", warm_most);
}
