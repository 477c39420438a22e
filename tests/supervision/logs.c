/*
 * logs.c - worker output and pool events: a handler printing 10 MB to stdout and 10 MB to
 * stderr completes and every line reaches the log callback; a very long line does not lose the
 * output after it; pool events are logged; without log_fn lines go to the host's stderr with
 * a "[worker N]" prefix (pool events: "[pypool] <level>:").
 */
#define _GNU_SOURCE
#include "pool_test.h"

#include <fcntl.h>
#include <unistd.h>

TestSuite(sup_logs, .init = tu_log_reset, .fini = pt_teardown, .timeout = 60);

typedef struct bytes_arg {
    uint64_t bytes;
} bytes_arg;

static bool logged_bytes(void *arg)
{
    return tu_log_snapshot().bytes >= ((bytes_arg *)arg)->bytes;
}

#define TEN_MB 10000000

Test(sup_logs, handler_printing_10mb_to_stdout_and_stderr_completes_and_logs_it, .timeout = 90)
{
    pypool_config cfg;
    tu_config(&cfg, "echo_mod", 1);
    pypool *p = pt_create(&cfg);

    pypool_result r;
    int64_t t0 = tu_now_ms();
    int rc = pt_call_str(p, "print_lots", "10000000", 60000, &r);
    int64_t took = tu_now_ms() - t0;
    PT_ASSERT_REPLY(rc, &r, "ok", "print_lots 10 MB");
    pypool_result_free(&r);

    /* Lines are ~72 bytes: the callback gets the text without newlines, ~98.6% of 20 MB. */
    bytes_arg want = {(uint64_t)(2.0 * TEN_MB * 0.97)};
    bool all = tu_wait_until(logged_bytes, &want, 30000);
    tu_log snap = tu_log_snapshot();
    cr_assert(all,
              "log callback got %llu bytes in %llu lines of ~20 MB written (call took %lld ms)",
              (unsigned long long)snap.bytes, (unsigned long long)snap.lines, (long long)took);
    uint64_t min_lines = (uint64_t)(2.0 * TEN_MB / 80);
    cr_assert_geq(snap.output_lines, min_lines, "%llu output lines, want >= %llu",
                  (unsigned long long)snap.output_lines, (unsigned long long)min_lines);
    cr_assert(tu_log_contains("err line"), "the stderr lines did not reach the callback");

    rc = pt_call_str(p, "echo", "after", 10000, &r);
    PT_ASSERT_REPLY(rc, &r, "after", "a call after the flood");
    pypool_result_free(&r);
    cr_assert_eq(pt_stats(p).restarts, 0);
    pt_destroy(p);
}

static bool after_long_line(void *arg)
{
    (void)arg;
    return tu_log_contains("AFTER-LONG-LINE");
}

Test(sup_logs, a_one_megabyte_line_is_cut_not_lost_and_output_after_it_arrives, .timeout = 60)
{
    pypool_config cfg;
    tu_config(&cfg, "pool_extra", 1);
    pypool *p = pt_create(&cfg);
    pypool_result r;
    int rc = pt_call_str(p, "long_line", "1000000", 30000, &r);
    PT_ASSERT_REPLY(rc, &r, "ok", "long_line 1 MB");
    pypool_result_free(&r);
    cr_assert(tu_wait_until(after_long_line, NULL, 10000),
              "the line printed after a 1 MB line never reached the callback");
    cr_assert(tu_log_contains("LONGLINE-START"), "the long line's start was lost");
    cr_assert_eq(pt_stats(p).restarts, 0);
    pt_destroy(p);
}

typedef struct events_arg {
    uint64_t more_than;
} events_arg;

static bool events_logged(void *arg)
{
    tu_log s = tu_log_snapshot();
    return s.lines - s.output_lines > ((events_arg *)arg)->more_than;
}

Test(sup_logs, pool_events_are_logged, .timeout = 60)
{
    pypool_config cfg;
    tu_config(&cfg, "echo_mod", 1);
    pypool *p = pt_create(&cfg);
    tu_log s = tu_log_snapshot();
    uint64_t start_events = s.lines - s.output_lines;
    cr_assert_gt(start_events, 0, "starting a worker logged no event");

    int pid;
    pt_slot_pids(p, &pid, 1);
    cr_assert_eq(kill(pid, SIGKILL), 0);
    /* At least an exit and a spawn/ready event for the replacement. */
    events_arg a = {start_events + 1};
    bool logged = tu_wait_until(events_logged, &a, 10000);
    s = tu_log_snapshot();
    cr_assert(logged, "the crash and restart logged %llu events (before: %llu)",
              (unsigned long long)(s.lines - s.output_lines), (unsigned long long)start_events);
    pt_destroy(p);
}

/* Reads a whole small file into buf. */
static void slurp(const char *path, char *buf, size_t len)
{
    FILE *f = fopen(path, "re");
    size_t n = f ? fread(buf, 1, len - 1, f) : 0;
    buf[n] = '\0';
    if (f)
        fclose(f);
}

Test(sup_logs, without_log_fn_worker_lines_go_to_stderr_with_their_own_prefix, .timeout = 60)
{
    char path[] = "/tmp/pypool-stderr-XXXXXX";
    int tmp = mkstemp(path);
    cr_assert_geq(tmp, 0);
    int saved = dup(2);
    fflush(stderr);
    dup2(tmp, 2);

    pypool_config cfg;
    tu_config(&cfg, "pool_extra", 1);
    cfg.log_fn = NULL;
    cfg.log_level = PYPOOL_LOG_WARN; /* the default: start and stop print nothing */
    pypool *p = NULL;
    int rc = pypool_create(&cfg, &p);
    int pid = 0;
    pypool_result r = {0};
    if (rc == PYPOOL_OK) {
        rc = pt_call_str(p, "say", "hello-from-the-worker", 10000, &r);
        pid = r.worker_pid;
        pypool_destroy(p); /* the reaper has written everything once destroy returns */
    }
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    close(tmp);

    static char text[1 << 16];
    slurp(path, text, sizeof text);
    unlink(path);
    PT_ASSERT_RC(rc, PYPOOL_OK, &r, "create + say with log_fn NULL");
    pypool_result_free(&r);
    char want[96];
    snprintf(want, sizeof want, "[worker %d] ", pid);
    cr_assert_not_null(strstr(text, "hello-from-the-worker"),
                       "the worker's line is not on stderr:\n%s", text);
    bool prefixed = false;
    for (char *at = strstr(text, want); at && !prefixed; at = strstr(at + 1, want)) {
        char *eol = strchr(at, '\n');
        if (eol)
            *eol = '\0';
        prefixed = strstr(at, "hello-from-the-worker") != NULL;
        if (eol)
            *eol = '\n';
    }
    cr_assert(prefixed, "no line '%s ... hello-from-the-worker' on stderr:\n%s", want, text);
    cr_assert_null(strstr(text, "[pypool]"), "a default pool's start and stop printed events:\n%s",
                   text);
}
