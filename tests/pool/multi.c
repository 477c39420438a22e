/*
 * multi.c - many pools in one process: two pools with different modules, used at the same
 * time, never see each other's workers, and destroying one leaves the other intact.
 */
#define _GNU_SOURCE
#include "pool_test.h"

TestSuite(pool_multi, .init = tu_log_reset, .fini = pt_teardown, .timeout = 60);

typedef struct mixed_loop {
    pypool *p;
    const char *method, *payload, *want;
    const int *pids; /* the pool's worker pids (2) */
    unsigned ok;
    char first_problem[512];
    pthread_t thread;
} mixed_loop;

static void *mixed_thread(void *arg)
{
    mixed_loop *m = arg;
    for (int i = 0; i < 100; i++) {
        pypool_result r;
        int rc = pt_call_str(m->p, m->method, m->payload, 15000, &r);
        bool own = r.worker_pid == m->pids[0] || r.worker_pid == m->pids[1];
        if (rc == PYPOOL_OK && own && r.len == strlen(m->want) &&
            memcmp(r.data, m->want, r.len) == 0)
            m->ok++;
        else if (!m->first_problem[0])
            snprintf(m->first_problem, sizeof m->first_problem,
                     "%s: %s (%s) from pid %d, reply '%.*s'", m->method, pypool_strerror(rc),
                     pt_msg(&r), r.worker_pid, (int)r.len, r.data ? (const char *)r.data : "");
        pypool_result_free(&r);
    }
    return NULL;
}

Test(pool_multi, two_pools_with_different_modules_do_not_see_each_other, .timeout = 60)
{
    pypool_config ca, cb;
    tu_config(&ca, "echo_mod", 2);
    tu_config(&cb, "echo_other", 2);
    pypool *a = pt_create(&ca);
    pypool *b = pt_create(&cb);

    int pa[2], pb[2];
    cr_assert_eq(pt_slot_pids(a, pa, 2), 2);
    cr_assert_eq(pt_slot_pids(b, pb, 2), 2);
    for (int i = 0; i < 2; i++)
        for (int k = 0; k < 2; k++)
            cr_assert_neq(pa[i], pb[k], "pools share worker %d", pa[i]);
    cr_assert_eq(tu_count_children(), 4);

    pypool_result r;
    int rc = pt_call_str(a, "whoami", "", 10000, &r);
    PT_ASSERT_RC(rc, PYPOOL_EREMOTE, &r, "whoami on the echo_mod pool");
    cr_assert_str_eq(r.error_type ? r.error_type : "", "NoSuchMethod");
    pypool_result_free(&r);
    rc = pt_call_str(b, "echo", "x", 10000, &r);
    PT_ASSERT_RC(rc, PYPOOL_EREMOTE, &r, "echo on the echo_other pool");
    cr_assert_str_eq(r.error_type ? r.error_type : "", "NoSuchMethod");
    pypool_result_free(&r);

    /* Both pools at once from several threads. */
    mixed_loop loops[4] = {
        {.p = a, .method = "echo", .payload = "from-a", .want = "from-a", .pids = pa},
        {.p = b, .method = "whoami", .payload = "", .want = "other", .pids = pb},
        {.p = a, .method = "echo", .payload = "also-a", .want = "also-a", .pids = pa},
        {.p = b, .method = "whoami", .payload = "", .want = "other", .pids = pb},
    };
    for (int i = 0; i < 4; i++)
        cr_assert_eq(pthread_create(&loops[i].thread, NULL, mixed_thread, &loops[i]), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(loops[i].thread, NULL);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(loops[i].ok, 100, "loop %d: %u/100 ok; first: %s", i, loops[i].ok,
                     loops[i].first_problem);
    cr_assert_eq(pt_stats(a).calls, 201, "pool a counted %llu calls",
                 (unsigned long long)pt_stats(a).calls);
    cr_assert_eq(pt_stats(b).calls, 201, "pool b counted %llu calls",
                 (unsigned long long)pt_stats(b).calls);

    /* Destroying a leaves b's workers and service untouched. */
    pt_destroy(a);
    cr_assert(!tu_pid_exists(pa[0]) && !tu_pid_exists(pa[1]), "pool a's workers survived");
    cr_assert_eq(tu_count_children(), 2, "after destroying a: %d children", tu_count_children());
    int pb_after[2];
    pt_slot_pids(b, pb_after, 2);
    cr_assert(pb_after[0] == pb[0] && pb_after[1] == pb[1], "pool b's workers changed");
    rc = pt_call_str(b, "whoami", "", 10000, &r);
    PT_ASSERT_REPLY(rc, &r, "other", "pool b after pool a was destroyed");
    pypool_result_free(&r);
    pt_destroy(b);
    cr_assert_eq(tu_count_children(), 0);
}
