/* testutil.c - see testutil.h. */
#define _GNU_SOURCE
#include "testutil.h"

#include <ctype.h>
#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef PYPOOL_TEST_MODULES
#error "PYPOOL_TEST_MODULES must be defined by the build"
#endif

#define TU_LOG_KEEP 4096

static pthread_mutex_t tu_log_mu = PTHREAD_MUTEX_INITIALIZER;
static tu_log tu_log_counts;
static char *tu_log_lines[TU_LOG_KEEP];
static unsigned tu_log_next;

static void tu_log_fn(void *ud, int level, int pid, const char *line)
{
    (void)ud;
    static int verbose = -1;
    if (verbose < 0) {
        const char *v = getenv("PYPOOL_TEST_VERBOSE");
        verbose = v && *v && *v != '0';
    }
    if (verbose)
        fprintf(stderr, "[log %d pid %d] %s\n", level, pid, line);
    pthread_mutex_lock(&tu_log_mu);
    tu_log_counts.lines++;
    tu_log_counts.bytes += strlen(line);
    if (level == PYPOOL_LOG_OUTPUT)
        tu_log_counts.output_lines++;
    /* Keep pool events and the first lines of output; a flood of output must not evict them. */
    unsigned idx = tu_log_next % TU_LOG_KEEP;
    free(tu_log_lines[idx]);
    tu_log_lines[idx] = strdup(line);
    tu_log_next++;
    pthread_mutex_unlock(&tu_log_mu);
}

void tu_config(pypool_config *cfg, const char *module, unsigned size)
{
    pypool_config_init(cfg);
    cfg->module = module;
    cfg->size = size;
    cfg->python_path = PYPOOL_TEST_MODULES;
    cfg->log_fn = tu_log_fn;
    cfg->log_level = PYPOOL_LOG_DEBUG; /* the suites assert on pool events (spawns, exits) */
}

void tu_log_reset(void)
{
    pthread_mutex_lock(&tu_log_mu);
    memset(&tu_log_counts, 0, sizeof tu_log_counts);
    for (unsigned i = 0; i < TU_LOG_KEEP; i++) {
        free(tu_log_lines[i]);
        tu_log_lines[i] = NULL;
    }
    tu_log_next = 0;
    pthread_mutex_unlock(&tu_log_mu);
}

tu_log tu_log_snapshot(void)
{
    pthread_mutex_lock(&tu_log_mu);
    tu_log copy = tu_log_counts;
    pthread_mutex_unlock(&tu_log_mu);
    return copy;
}

bool tu_log_contains(const char *needle)
{
    bool found = false;
    pthread_mutex_lock(&tu_log_mu);
    for (unsigned i = 0; i < TU_LOG_KEEP && !found; i++)
        found = tu_log_lines[i] && strstr(tu_log_lines[i], needle);
    pthread_mutex_unlock(&tu_log_mu);
    return found;
}

int64_t tu_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void tu_sleep_ms(int64_t ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

static int count_dir(const char *path)
{
    DIR *d = opendir(path);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - (strcmp(path, "/proc/self/fd") == 0 ? 1 : 0); /* the DIR's own fd */
}

int tu_count_fds(void)
{
    return count_dir("/proc/self/fd");
}

int tu_count_threads(void)
{
    return count_dir("/proc/self/task");
}

/* Reads "<field>:\t<value>" from /proc/<pid>/status into buf. */
static bool status_field(pid_t pid, const char *field, char *buf, size_t len)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return false;
    bool found = false;
    size_t flen = strlen(field);
    while (!found && fgets(line, sizeof line, f)) {
        if (strncmp(line, field, flen) == 0 && line[flen] == ':') {
            const char *v = line + flen + 1;
            while (*v == ' ' || *v == '\t')
                v++;
            snprintf(buf, len, "%s", v);
            found = true;
        }
    }
    fclose(f);
    return found;
}

int tu_list_children(pid_t *pids, int max)
{
    DIR *d = opendir("/proc");
    if (!d)
        return -1;
    int n = 0;
    pid_t self = getpid();
    struct dirent *e;
    char buf[64];
    while ((e = readdir(d))) {
        if (!isdigit((unsigned char)e->d_name[0]))
            continue;
        pid_t pid = (pid_t)atoi(e->d_name);
        if (status_field(pid, "PPid", buf, sizeof buf) && atoi(buf) == self) {
            if (n < max && pids)
                pids[n] = pid;
            n++;
        }
    }
    closedir(d);
    return n;
}

int tu_count_children(void)
{
    return tu_list_children(NULL, 0);
}

bool tu_pid_exists(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    return access(path, F_OK) == 0;
}

char tu_pid_state(pid_t pid)
{
    char buf[64];
    return status_field(pid, "State", buf, sizeof buf) ? buf[0] : '?';
}

bool tu_pid_zombie(pid_t pid)
{
    return tu_pid_state(pid) == 'Z';
}

bool tu_wait_until(bool (*pred)(void *arg), void *arg, int64_t timeout_ms)
{
    int64_t end = tu_now_ms() + timeout_ms;
    for (;;) {
        if (pred(arg))
            return true;
        if (tu_now_ms() >= end)
            return false;
        tu_sleep_ms(5);
    }
}

static bool thread_sleeping(void *arg)
{
    /* Twice in a row: a thread can sleep for a moment on its way (a page fault, a lock). */
    pid_t tid = *(pid_t *)arg;
    if (tu_pid_state(tid) != 'S')
        return false;
    tu_sleep_ms(2);
    return tu_pid_state(tid) == 'S';
}

bool tu_wait_thread_blocked(pid_t tid, int64_t timeout_ms)
{
    return tu_wait_until(thread_sleeping, &tid, timeout_ms);
}

pid_t tu_gettid(void)
{
    return (pid_t)syscall(SYS_gettid);
}

static bool pid_gone(void *arg)
{
    return !tu_pid_exists(*(pid_t *)arg);
}

bool tu_wait_pid_gone(pid_t pid, int64_t timeout_ms)
{
    return tu_wait_until(pid_gone, &pid, timeout_ms);
}
