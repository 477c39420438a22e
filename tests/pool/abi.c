/*
 * abi.c - what a program built against another version of pypool.h relies on: the init/get
 * functions never write past the caller's struct and default what an older caller lacks, every
 * slot of a large pool can be reported, and log_level keeps pool events out of log_fn.
 */
#define _GNU_SOURCE
#include "pool_test.h"

#include <stdatomic.h>
#include <stddef.h>

TestSuite(pool_abi, .init = tu_log_reset, .fini = pt_teardown, .timeout = 60);

#define GUARD 0xA5

/* A config "from an older header": it ends before the newest field, and memory follows it. */
Test(pool_abi, config_init_writes_only_the_callers_struct_and_create_defaults_the_rest)
{
    size_t older = offsetof(pypool_config, log_level);
    unsigned char buf[sizeof(pypool_config) + 64];
    memset(buf, GUARD, sizeof buf);
    pypool_config *cfg = (pypool_config *)buf;
    pypool_config_init_sized(cfg, older);
    for (size_t i = older; i < sizeof buf; i++)
        cr_assert_eq(buf[i], GUARD, "pypool_config_init wrote byte %zu past a %zu-byte struct", i,
                     older);
    cr_assert_eq(cfg->struct_size, older);
    cr_assert_eq(cfg->size, 4u, "defaults are filled in");
    cfg->module = "echo_mod";
    cfg->size = 1;
    cfg->python_path = PYPOOL_TEST_MODULES;
    pypool *p = NULL;
    int rc = pypool_create(cfg, &p); /* log_level is garbage in buf: the default must be used */
    cr_assert_eq(rc, PYPOOL_OK, "%s", pypool_last_error());
    pt_track(p);
    pypool_result r;
    rc = pt_call_str(p, "echo", "old", 10000, &r);
    PT_ASSERT_REPLY(rc, &r, "old", "a call through a pool made from an older config");
    pypool_result_free(&r);
}

Test(pool_abi, a_config_that_was_never_initialised_is_refused)
{
    pypool_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.module = "echo_mod";
    cfg.size = 1;
    pypool *p = NULL;
    cr_assert_eq(pypool_create(&cfg, &p), PYPOOL_EINVAL);
    cr_assert_null(p);
    cr_assert(strstr(pypool_last_error(), "pypool_config_init"), "message: %s",
              pypool_last_error());
}

Test(pool_abi, stats_get_writes_only_the_callers_struct)
{
    pypool_config cfg;
    tu_config(&cfg, "echo_mod", 1);
    pypool *p = pt_create(&cfg);
    size_t older = offsetof(pypool_stats, slots);
    unsigned char buf[sizeof(pypool_stats) + 64];
    memset(buf, GUARD, sizeof buf);
    pypool_stats_get_sized(p, (pypool_stats *)buf, older);
    for (size_t i = older; i < sizeof buf; i++)
        cr_assert_eq(buf[i], GUARD, "pypool_stats_get wrote byte %zu past a %zu-byte struct", i,
                     older);
    cr_assert_eq(((pypool_stats *)buf)->size, 1u);
}

Test(pool_abi, every_slot_of_a_large_pool_can_be_reported)
{
    enum { SIZE = 200 };
    pypool_config cfg;
    tu_config(&cfg, "echo_mod", SIZE);
    cfg.lazy = true;
    pypool *p = pt_create(&cfg);
    pypool_result r;
    int rc = pt_call_str(p, "echo", "x", 20000, &r); /* starts at least one worker */
    PT_ASSERT_REPLY(rc, &r, "x", "first call of a lazy pool");
    pypool_result_free(&r);
    pypool_stats st = pt_stats(p);
    cr_assert_eq(st.slot_count, (unsigned)PYPOOL_STATS_MAX_SLOTS);
    pypool_slot_stats slots[SIZE + 10];
    cr_assert_eq(pypool_stats_slots(p, 0, slots, SIZE + 10), (unsigned)SIZE);
    unsigned live = 0;
    for (unsigned i = 0; i < SIZE; i++)
        live += slots[i].pid > 0;
    cr_assert_geq(live, 1u, "the worker that served is among the slots");
    for (unsigned i = 0; i < PYPOOL_STATS_MAX_SLOTS; i++)
        cr_assert_eq(slots[i].pid, st.slots[i].pid, "slot %u: the two reports disagree", i);
    cr_assert_eq(pypool_stats_slots(p, SIZE - 5, slots, 64), 5u, "the tail of the slots");
    cr_assert_eq(pypool_stats_slots(p, SIZE, slots, 64), 0u, "past the last slot");
    cr_assert_eq(pypool_stats_slots(NULL, 0, slots, 64), 0u);
}

/* --- log_level -------------------------------------------------------------------------------- */

static atomic_int infos_seen, warnings_seen, output_seen;

static void count_levels(void *ud, int level, int pid, const char *line)
{
    (void)ud;
    (void)pid;
    (void)line;
    if (level == PYPOOL_LOG_INFO || level == PYPOOL_LOG_DEBUG)
        atomic_fetch_add(&infos_seen, 1);
    if (level == PYPOOL_LOG_WARN)
        atomic_fetch_add(&warnings_seen, 1);
    if (level == PYPOOL_LOG_OUTPUT)
        atomic_fetch_add(&output_seen, 1);
}

Test(pool_abi, log_level_warn_delivers_no_info_through_create_calls_crash_and_destroy)
{
    pypool_config cfg;
    tu_config(&cfg, "echo_mod", 2);
    cfg.log_level = PYPOOL_LOG_WARN;
    cfg.log_fn = count_levels;
    pypool *p = pt_create(&cfg);
    pypool_result r;
    for (int i = 0; i < 20; i++) {
        int rc = pt_call_str(p, "echo", "x", 10000, &r);
        PT_ASSERT_REPLY(rc, &r, "x", "echo");
        pypool_result_free(&r);
    }
    int rc = pt_call_str(p, "print_lots", "300", 10000, &r); /* worker output still comes */
    pypool_result_free(&r);
    (void)rc;
    rc = pt_call_str(p, "sleep", "5", 50, &r); /* a timeout: a WARN event */
    PT_ASSERT_RC(rc, PYPOOL_ETIMEDOUT, &r, "call past its deadline");
    pypool_result_free(&r);
    pt_destroy(p);
    cr_assert_eq(atomic_load(&infos_seen), 0, "INFO/DEBUG events reached log_fn");
    cr_assert_geq(atomic_load(&warnings_seen), 1, "the WARN event of the timeout was dropped");
    cr_assert_geq(atomic_load(&output_seen), 1, "the worker's own output was dropped");
}

Test(pool_abi, the_default_log_level_keeps_start_and_stop_quiet)
{
    pypool_config cfg;
    pypool_config_init(&cfg);
    cr_assert_eq(cfg.log_level, PYPOOL_LOG_WARN);
    cfg.module = "echo_mod";
    cfg.size = 2;
    cfg.python_path = PYPOOL_TEST_MODULES;
    cfg.log_fn = count_levels;
    pypool *p = pt_create(&cfg);
    pt_destroy(p);
    cr_assert_eq(atomic_load(&infos_seen), 0, "a default pool's start/stop delivered INFO");
}
