/*
 * procstat.c - what the kernel counts for the host and for a pool's workers: resident memory
 * (VmRSS) and context switches (voluntary + nonvoluntary).
 *
 * /proc/<pid>/status reports the switches of one thread only (the thread-group leader), so a
 * worker's are summed over /proc/<pid>/task/<tid>/status (its live threads: async workers run
 * one loop thread, threaded handlers a pool of threads). The host's own come from
 * getrusage(RUSAGE_SELF), which sums every thread, also the client threads that already exited.
 * CPU time: the host's from getrusage (µs), a worker's from /proc/<pid>/stat (utime + stime of
 * every thread, in clock ticks: 10 ms, so windows of a second or more).
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

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

uint64_t proc_pss_kib(int pid)
{
    static const char *const keys[] = {"Pss:"};
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/smaps_rollup", pid);
    return pid > 0 ? status_sum(path, keys, 1) : 0;
}

uint64_t self_task_ctxsw(int tid)
{
    static const char *const keys[] = {"voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:"};
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%d/status", tid);
    return status_sum(path, keys, 2);
}

unsigned self_other_tids(int *out, unsigned max)
{
    DIR *d = opendir("/proc/self/task");
    unsigned n = 0;
    if (!d)
        return 0;
    int me = (int)gettid();
    struct dirent *e;
    while ((e = readdir(d)) != NULL && n < max) {
        int tid = atoi(e->d_name);
        if (tid > 0 && tid != me)
            out[n++] = tid;
    }
    closedir(d);
    return n;
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

double self_cpu_s(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0;
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static double stat_cpu_s(const char *path);

double proc_cpu_s(int pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    return pid > 0 ? stat_cpu_s(path) : 0;
}

double self_task_cpu_s(int tid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", tid);
    return stat_cpu_s(path);
}

static double stat_cpu_s(const char *path)
{
    char buf[1024];
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* comm may hold spaces; fields 3.. follow the last ')' */
    if (!p)
        return 0;
    unsigned long long utime = 0, stime = 0;
    /* after ")": state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt(12)
     * utime(14) stime(15) */
    if (sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) !=
        2)
        return 0;
    return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
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

uint64_t pool_workers_pss_kib(pypool *p)
{
    return p ? pool_sum(p, proc_pss_kib) : 0;
}

uint64_t pool_workers_ctxsw(pypool *p)
{
    return p ? pool_sum(p, proc_ctxsw) : 0;
}

double pool_workers_cpu_s(pypool *p)
{
    pypool_slot_stats slots[64];
    double sum = 0;
    for (unsigned first = 0; p; first += 64) {
        unsigned n = pypool_stats_slots(p, first, slots, 64);
        for (unsigned i = 0; i < n; i++)
            sum += proc_cpu_s(slots[i].pid);
        if (n < 64)
            break;
    }
    return sum;
}

uint64_t mem_available_kib(void)
{
    static const char *const keys[] = {"MemAvailable:"};
    return status_sum("/proc/meminfo", keys, 1);
}
