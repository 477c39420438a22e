/*
 * procstat.c - what the kernel counts for the host and for a pool's workers: resident memory
 * (VmRSS) and context switches (voluntary + nonvoluntary).
 *
 * /proc/<pid>/status reports the switches of one thread only (the thread-group leader), so a
 * worker's are summed over /proc/<pid>/task/<tid>/status (its live threads: async workers run
 * one loop thread, threaded handlers a pool of threads). The host's own come from
 * getrusage(RUSAGE_SELF), which sums every thread, also the client threads that already exited.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "bench.h"

/* Sum of the values of the given "Key:" lines of a status-like file. */
static uint64_t status_sum(const char *path, const char *const *keys, size_t nkeys)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char line[256];
    uint64_t sum = 0;
    while (fgets(line, sizeof line, f))
        for (size_t k = 0; k < nkeys; k++) {
            size_t len = strlen(keys[k]);
            if (!strncmp(line, keys[k], len))
                sum += strtoull(line + len, NULL, 10);
        }
    fclose(f);
    return sum;
}

uint64_t proc_rss_kib(int pid)
{
    static const char *const keys[] = {"VmRSS:"};
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    return pid > 0 ? status_sum(path, keys, 1) : 0;
}

uint64_t proc_ctxsw(int pid)
{
    static const char *const keys[] = {"voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:"};
    char path[96];
    if (pid <= 0)
        return 0;
    snprintf(path, sizeof path, "/proc/%d/task", pid);
    DIR *d = opendir(path);
    if (!d)
        return 0;
    uint64_t sum = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "/proc/%d/task/%.16s/status", pid, e->d_name);
        sum += status_sum(path, keys, 2);
    }
    closedir(d);
    return sum;
}

uint64_t self_ctxsw(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0;
    return (uint64_t)ru.ru_nvcsw + (uint64_t)ru.ru_nivcsw;
}

/* fn over the pid of every slot of the pool (any size). */
static uint64_t pool_sum(pypool *p, uint64_t (*fn)(int pid))
{
    pypool_slot_stats slots[64];
    uint64_t sum = 0;
    for (unsigned first = 0;; first += 64) {
        unsigned n = pypool_stats_slots(p, first, slots, 64);
        for (unsigned i = 0; i < n; i++)
            sum += fn(slots[i].pid);
        if (n < 64)
            return sum;
    }
}

uint64_t pool_workers_rss_kib(pypool *p)
{
    return p ? pool_sum(p, proc_rss_kib) : 0;
}

uint64_t pool_workers_ctxsw(pypool *p)
{
    return p ? pool_sum(p, proc_ctxsw) : 0;
}

uint64_t mem_available_kib(void)
{
    static const char *const keys[] = {"MemAvailable:"};
    return status_sum("/proc/meminfo", keys, 1);
}
