/*
 * regress.c - the defects that outside testing found in version 0.1, one test each (each failed
 * before its fix): a call that gave up while a replacement worker was on its way, racing first
 * calls of one session landing on two workers, the host's working directory on the workers'
 * import path, stats racing destroy, a broken slot whose session waiters were not told, and
 * blocking I/O of the reaper's own.
 */
#define _GNU_SOURCE
#include "pool_test.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include "slots.h" /* white-box: the reaper's own I/O (a full request pipe, the poke) */

TestSuite(pool_regress, .init = tu_log_reset, .fini = pt_teardown, .timeout = 120);

/* --- a call waits for the replacement of a dead worker --------------------------------------- */

/* Kills every worker of the pool (idle, so no call is in flight) and returns how many; the call
 * that follows may reach a worker that is dying but not yet dead, as a user's would. */
static int kill_all_workers(pypool *p, unsigned size, int *pids)
{
    int n = pt_slot_pids(p, pids, size);
    for (unsigned i = 0; i < size; i++)
        if (pids[i] > 0)
            kill(pids[i], SIGKILL);
    return n;
}

/* The worker that served it must be one started after the kill. */
static void expect_served_by_new_worker(pypool *p, const int *old, unsigned size, int round)
{
    pypool_result r;
    int rc = pt_call_str(p, "echo", "x", 15000, &r);
    char what[96];
    snprintf(what, sizeof what, "call right after killing every worker (round %d)", round);
    PT_ASSERT_REPLY(rc, &r, "x", what);
    for (unsigned i = 0; i < size; i++)
        cr_assert_neq(r.worker_pid, old[i], "%s: served by killed pid %d", what, old[i]);
    pypool_result_free(&r);
}

Test(pool_regress, call_after_sigkill_of_the_only_worker_waits_for_its_replacement)
{
    pypool_config cfg;
    tu_config(&cfg, "regress_mod", 1);
    cfg.restart_backoff_min_ms = 1;  /* rounds go fast (crashes in a row double the delay up to */
    cfg.restart_backoff_max_ms = 50; /* the max); the call must wait for it either way */
    pypool *p = pt_create(&cfg);
    for (int round = 0; round < 20; round++) {
        int old[1];
        cr_assert_eq(kill_all_workers(p, 1, old), 1, "round %d: no worker to kill", round);
        expect_served_by_new_worker(p, old, 1, round);
    }
}

Test(pool_regress, call_after_every_worker_died_at_once_waits_for_a_replacement)
{
    enum { SIZE = 3 };
    pypool_config cfg;
    tu_config(&cfg, "regress_mod", SIZE);
    cfg.restart_backoff_min_ms = 1;
    cfg.restart_backoff_max_ms = 50;
    pypool *p = pt_create(&cfg);
    for (int round = 0; round < 6; round++) {
        cr_assert(pt_wait_idle(p, SIZE, 20000), "round %d: workers not all idle", round);
        int old[SIZE];
        cr_assert_eq(kill_all_workers(p, SIZE, old), SIZE, "round %d: missing workers", round);
        expect_served_by_new_worker(p, old, SIZE, round);
    }
}

/* --- racing first calls of one session ------------------------------------------------------- */

enum { RACERS = 8 };

typedef struct racer {
    pypool *p;
    const char *sid;
    pthread_barrier_t *start;
    int rc;
    int pid;
    int count;
} racer;

static void *race_first_call(void *arg)
{
    racer *r = arg;
    pypool_result res;
    pthread_barrier_wait(r->start);
    r->rc = pypool_session_call(r->p, r->sid, "count", "", 0, 15000, &res);
    r->pid = res.worker_pid;
    r->count = r->rc == PYPOOL_OK ? atoi(res.data ? (char *)res.data : "0") : -1;
    pypool_result_free(&res);
    return NULL;
}

/* Runs RACERS simultaneous first calls of session sid; asserts they all saw one state. */
static void race_one_session(pypool *p, const char *sid)
{
    racer rs[RACERS];
    pthread_t th[RACERS];
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, RACERS);
    for (int i = 0; i < RACERS; i++) {
        rs[i] = (racer){.p = p, .sid = sid, .start = &start};
        cr_assert_eq(pthread_create(&th[i], NULL, race_first_call, &rs[i]), 0);
    }
    bool seen[RACERS + 1] = {false};
    for (int i = 0; i < RACERS; i++) {
        pthread_join(th[i], NULL);
        cr_assert_eq(rs[i].rc, PYPOOL_OK, "session %s: call failed: %s", sid,
                     pypool_strerror(rs[i].rc));
        cr_assert_eq(rs[i].pid, rs[0].pid, "session %s ran on workers %d and %d", sid, rs[0].pid,
                     rs[i].pid);
        cr_assert(rs[i].count >= 1 && rs[i].count <= RACERS && !seen[rs[i].count],
                  "session %s: count %d repeated or out of range (a call lost the state)", sid,
                  rs[i].count);
        seen[rs[i].count] = true;
    }
    pthread_barrier_destroy(&start);
}

Test(pool_regress, racing_first_calls_of_a_session_share_one_worker_and_its_state)
{
    pypool_config cfg;
    tu_config(&cfg, "echo_mod", 4);
    pypool *p = pt_create(&cfg);
    for (int i = 0; i < 300; i++) {
        char sid[32];
        snprintf(sid, sizeof sid, "race-%d", i);
        race_one_session(p, sid);
    }
}

/* --- the host's working directory is not on the workers' import path ------------------------- */

static void write_file(const char *dir, const char *name, const char *text)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "cannot write %s", path);
    fputs(text, f);
    fclose(f);
}

static void expect_not_importable(pypool *p, const char *module, const char *what)
{
    pypool_result r;
    int rc = pt_call_str(p, "try_import", module, 10000, &r);
    PT_ASSERT_REPLY(rc, &r, "ModuleNotFoundError", what);
    pypool_result_free(&r);
}

Test(pool_regress, modules_in_the_hosts_working_directory_are_never_imported)
{
    char dir[] = "/tmp/pypool_cwd_XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    /* Shadows of the runtime and of a stdlib module: a worker importing either fails to start
     * or says so; the probe is importable from nowhere else. */
    write_file(dir, "pypool.py", "raise SystemExit('the cwd pypool.py was imported')\n");
    write_file(dir, "json.py", "raise SystemExit('the cwd json.py was imported')\n");
    write_file(dir, "regress_cwd_probe.py", "X = 1\n");
    char here[PATH_MAX];
    cr_assert_not_null(getcwd(here, sizeof here));
    cr_assert_eq(chdir(dir), 0);

    pypool_config cfg;
    tu_config(&cfg, "regress_mod", 1);
    pypool *p = NULL;
    int rc = pypool_create(&cfg, &p);
    if (rc == PYPOOL_OK) {
        pt_track(p);
        expect_not_importable(p, "regress_cwd_probe", "a module only in the host's cwd");
        pypool_result r;
        rc = pt_call_str(p, "try_import", "json", 10000, &r);
        PT_ASSERT_REPLY(rc, &r, "imported", "json (the stdlib's, not the cwd's)");
        pypool_result_free(&r);
        pt_destroy(p);
    }
    /* An empty PYTHONPATH entry means the working directory to Python: it must not either. */
    setenv("PYTHONPATH", "/nonexistent-pypool-dir:", 1);
    pypool *q = NULL;
    int rc2 = pypool_create(&cfg, &q);
    if (rc2 == PYPOOL_OK) {
        pt_track(q);
        expect_not_importable(q, "regress_cwd_probe", "cwd via an empty PYTHONPATH entry");
        pt_destroy(q);
    }
    unsetenv("PYTHONPATH");
    cr_assert_eq(chdir(here), 0);
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
    cr_assert_eq(rc, PYPOOL_OK, "a pool started from a directory with a stray pypool.py: %s",
                 pypool_last_error());
    cr_assert_eq(rc2, PYPOOL_OK, "a pool with an empty PYTHONPATH entry: %s", pypool_last_error());
}

/* --- stats racing destroy -------------------------------------------------------------------- */

typedef struct stats_reader {
    pypool *p;
    atomic_int stop;
    atomic_int reads;
} stats_reader;

static void *read_stats_until_stopped(void *arg)
{
    stats_reader *r = arg;
    while (!atomic_load(&r->stop)) {
        pypool_stats st;
        pypool_stats_get(r->p, &st);
        atomic_fetch_add(&r->reads, 1);
    }
    return NULL;
}

static bool some_reads(void *arg)
{
    return atomic_load(&((stats_reader *)arg)->reads) > 0;
}

/*
 * pypool_stats_get reads while pypool_destroy tears the pool down, and holds a reference while
 * it does (a checked-out worker keeps the pool's memory until its checkin here, so every read
 * the thread starts is a legal one): under ASan any read of released memory fails the test, and
 * the references must balance (the last checkin frees the pool, which LeakSanitizer checks).
 */
Test(pool_regress, stats_get_during_destroy_reads_a_live_pool_and_balances_its_references)
{
    for (int round = 0; round < 10; round++) {
        pypool_config cfg;
        tu_config(&cfg, "regress_mod", 2);
        cfg.shutdown_grace_ms = 50;
        pypool *p = NULL;
        cr_assert_eq(pypool_create(&cfg, &p), PYPOOL_OK, "%s", pypool_last_error());
        pypool_worker *w = NULL;
        cr_assert_eq(pypool_checkout(p, 10000, &w), PYPOOL_OK);
        stats_reader r = {.p = p};
        pthread_t th;
        cr_assert_eq(pthread_create(&th, NULL, read_stats_until_stopped, &r), 0);
        cr_assert(tu_wait_until(some_reads, &r, 10000));
        pypool_destroy(p);
        int reads_at_destroy = atomic_load(&r.reads);
        atomic_store(&r.stop, 1);
        pthread_join(th, NULL);
        cr_assert_geq(atomic_load(&r.reads), reads_at_destroy);
        /* Destroy dropped the owner's reference, every read dropped its own: the worker's is
         * the last one. */
        cr_assert_eq(atomic_load(&p->refs), PYPOOL__REFS_CLOSED | 1u, "references left: %#x",
                     atomic_load(&p->refs));
        pypool_checkin(w); /* frees the pool */
    }
}

/* --- a broken slot fails its session's waiters at once --------------------------------------- */

typedef struct slot_state_arg {
    pypool *p;
    unsigned slot;
    int state;
} slot_state_arg;

static bool slot_in_state(void *arg)
{
    slot_state_arg *a = arg;
    return pt_stats(a->p).slots[a->slot].state == a->state;
}

Test(pool_regress, a_worker_breaking_its_ping_fails_the_sessions_waiting_for_it)
{
    char dir[] = "/tmp/pypool_pong_XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char gate[PATH_MAX], hold[PATH_MAX], hold_env[PATH_MAX + 16];
    snprintf(gate, sizeof gate, "%s/answer", dir);
    snprintf(hold, sizeof hold, "%s/hold", dir);
    snprintf(hold_env, sizeof hold_env, "REGRESS_HOLD=%s", hold);
    const char *env[] = {hold_env, NULL};

    pypool_config cfg;
    tu_config(&cfg, "regress_mod", 1);
    cfg.env = env;
    cfg.idle_ping_ms = 20;
    cfg.ping_timeout_ms = 60000; /* only the wrong Pong breaks it */
    pypool *p = pt_create(&cfg);

    pypool_result r;
    int rc = pypool_session_call(p, "s", "wrong_pong_after", gate, strlen(gate), 10000, &r);
    PT_ASSERT_REPLY(rc, &r, "armed", "arming the wrong Pong");
    pypool_result_free(&r);
    slot_state_arg pinging = {p, 0, PYPOOL_SLOT_PINGING};
    cr_assert(tu_wait_until(slot_in_state, &pinging, 20000), "the idle worker was never pinged");

    /* The replacement cannot get ready while `hold` exists: only the break can end the wait. */
    write_file(dir, "hold", "");
    pt_call_job job;
    pt_call_start(&job, p, "s", "echo", "after", 3000);
    cr_assert(pt_wait_waiters(p, 1, 20000), "the session call did not queue for its worker");
    write_file(dir, "answer", "");
    pt_call_join(&job);
    unlink(hold);
    PT_ASSERT_JOB(&job, PYPOOL_ESESSION, "session call waiting while its worker broke");
    unlink(gate);
    rmdir(dir);
}

/* --- the reaper's own I/O never blocks ------------------------------------------------------- */

/* Fills a pipe through its (non-blocking) write end until it takes no more. */
static void fill_pipe(int fd)
{
    static const char junk[4096];
    while (write(fd, junk, sizeof junk) > 0 || errno == EINTR)
        ;
    cr_assert_eq(errno, EAGAIN, "filling the pipe: %s", strerror(errno));
    while (write(fd, junk, 1) > 0)
        ;
}

typedef struct replaced_arg {
    pypool *p;
    unsigned slot;
    int old;
} replaced_arg;

static bool slot_replaced_and_idle(void *arg)
{
    replaced_arg *a = arg;
    pypool_stats st = pt_stats(a->p);
    return st.slots[a->slot].state == PYPOOL_SLOT_IDLE && st.slots[a->slot].pid > 0 &&
           st.slots[a->slot].pid != a->old;
}

Test(pool_regress, a_ping_into_a_full_request_pipe_does_not_stall_the_reaper)
{
    pypool_config cfg;
    tu_config(&cfg, "regress_mod", 2);
    cfg.idle_ping_ms = 20;
    cfg.ping_timeout_ms = 120000; /* a reaper waiting on the ping would be stuck this long */
    cfg.restart_backoff_min_ms = 1;
    pypool *p = pt_create(&cfg);

    /* While it is checked out (no pings), one worker stops reading and its request pipe fills;
     * back in the pool it is pinged, and the ping cannot fit. */
    pypool_worker *held;
    int rc = pypool_checkout(p, 10000, &held);
    PT_ASSERT_RC(rc, PYPOOL_OK, NULL, "checkout");
    unsigned stuck = held->slot->index, other = 1 - stuck;
    int stuck_pid = pypool_worker_pid(held);
    cr_assert_eq(kill(stuck_pid, SIGSTOP), 0);
    fill_pipe(held->slot->child.req_fd);
    pypool_checkin(held);
    slot_state_arg pinging = {p, stuck, PYPOOL_SLOT_PINGING};
    bool pinged = tu_wait_until(slot_in_state, &pinging, 20000);

    /* The reaper must still serve the other slot: kill its worker, see it replaced long before
     * the stuck ping's deadline. */
    int other_pid = pt_stats(p).slots[other].pid;
    kill(other_pid, SIGKILL);
    replaced_arg ra = {p, other, other_pid};
    bool replaced = tu_wait_until(slot_replaced_and_idle, &ra, 30000);
    kill(stuck_pid, SIGKILL);
    cr_assert(pinged, "the stopped idle worker was never pinged");
    cr_assert(replaced, "the reaper did not replace a dead worker while a ping was stuck");
}

Test(pool_regress, a_poke_into_a_full_shared_reply_pipe_returns_at_once)
{
    int fds[2];
    cr_assert_eq(pipe2(fds, O_NONBLOCK), 0);
    fill_pipe(fds[1]);
    cr_assert_eq(fcntl(fds[1], F_SETFL, 0), 0); /* the child's blocking description */
    pypool__child c;
    pypool__child_clear(&c);
    c.resp_poke_fd = fds[1];
    c.poke_shared = true;
    pypool__child_poke(&c); /* a blocking write here would hang the test (and the pool) */
    char buf[1];
    cr_assert_eq(read(fds[0], buf, 1), 1, "the full pipe still wakes a reader");
    pypool__child_poke(&c); /* room now: the byte goes in */
    close(fds[0]);
    close(fds[1]);
}
