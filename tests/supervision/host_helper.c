/*
 * host_helper.c - a host process for the "host killed with SIGKILL" test: creates a pool of 4
 * echo_mod workers, prints "PIDS <pid> <pid> <pid> <pid>" on stdout, then sleeps until killed.
 * Exit status 2 if the pool cannot be created.
 */
#include <stdio.h>
#include <unistd.h>

#include "pypool.h"

#ifndef PYPOOL_TEST_MODULES
#error "PYPOOL_TEST_MODULES must be defined by the build"
#endif

static void quiet_log(void *ud, int level, int worker_pid, const char *line)
{
    (void)ud;
    (void)worker_pid;
    if (level <= PYPOOL_LOG_WARN)
        fprintf(stderr, "host_helper: %s\n", line);
}

int main(void)
{
    pypool_config cfg;
    pypool_config_init(&cfg);
    cfg.module = "echo_mod";
    cfg.size = 4;
    cfg.python_path = PYPOOL_TEST_MODULES;
    cfg.log_fn = quiet_log;
    pypool *p = NULL;
    int rc = pypool_create(&cfg, &p);
    if (rc != PYPOOL_OK) {
        fprintf(stderr, "host_helper: pypool_create: %s: %s\n", pypool_strerror(rc),
                pypool_last_error());
        return 2;
    }
    pypool_stats s;
    pypool_stats_get(p, &s);
    printf("PIDS");
    for (unsigned i = 0; i < s.slot_count; i++)
        printf(" %d", s.slots[i].pid);
    printf("\n");
    fflush(stdout);
    for (;;)
        pause();
}
