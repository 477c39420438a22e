/*
 * orphans.c - no orphans: when the host dies by SIGKILL every worker is SIGKILLed with it (its
 * PR_SET_PDEATHSIG fired by the time the host is reaped: what makes the exit prompt, however
 * loaded the machine) and is gone soon after; a worker's own subprocess (`sleep 1000` from
 * spawn_sleep) dies with the worker when the pool kills it (call timeout), shuts it down (destroy)
 * or reaps it after it was killed.
 */
#define _GNU_SOURCE
#include "pool_test.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef PYPOOL_HOST_HELPER
#error "PYPOOL_HOST_HELPER (path of host_helper) must be defined by the build"
#endif

extern char **environ;

TestSuite(sup_orphans, .init = tu_log_reset, .fini = pt_teardown, .timeout = 60);

typedef struct pid_set {
    const pid_t *pids;
    int n;
} pid_set;

static bool none_alive(void *arg)
{
    pid_set *s = arg;
    for (int i = 0; i < s->n; i++)
        if (pt_alive(s->pids[i]))
            return false;
    return true;
}

/* Reads a hex mask field ("SigPnd:\t0000000000000100") of a /proc status file; 0 if absent. */
static unsigned long long status_hex(const char *path, const char *field)
{
    char line[256];
    unsigned long long v = 0;
    size_t flen = strlen(field);
    FILE *f = fopen(path, "re");
    if (!f)
        return 0;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, field, flen) == 0 && line[flen] == ':') {
            v = strtoull(line + flen + 1, NULL, 16);
            break;
        }
    fclose(f);
    return v;
}

/* The kernel's task flags (/proc/.../stat field 9); 0 if unreadable. */
static unsigned long stat_flags(const char *path)
{
    char buf[1024];
    FILE *f = fopen(path, "re");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *after_comm = strrchr(buf, ')');
    unsigned long flags = 0;
    if (!after_comm || sscanf(after_comm + 1, " %*s %*s %*s %*s %*s %*s %lu", &flags) != 1)
        return 0;
    return flags;
}

#define SIGKILL_BIT (1ULL << (SIGKILL - 1))
#define PF_EXITING  0x00000004UL

/*
 * True if process pid is certainly on its way out, whatever the scheduler does next: gone, a
 * zombie, or one of its threads has SIGKILL pending or is already exiting. A SIGKILL cannot be
 * caught or outlived, so this is "it will die" without waiting to see it die.
 */
static bool dying_for_sure(pid_t pid)
{
    if (!pt_alive(pid))
        return true;
    char dir[64];
    snprintf(dir, sizeof dir, "/proc/%d/task", (int)pid);
    DIR *d = opendir(dir);
    if (!d)
        return !pt_alive(pid);
    bool dying = false;
    struct dirent *e;
    while (!dying && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char path[384];
        snprintf(path, sizeof path, "%s/%s/status", dir, e->d_name);
        dying = ((status_hex(path, "SigPnd") | status_hex(path, "ShdPnd")) & SIGKILL_BIT) != 0;
        snprintf(path, sizeof path, "%s/%s/stat", dir, e->d_name);
        dying = dying || (stat_flags(path) & PF_EXITING) != 0;
    }
    closedir(d);
    return dying || !pt_alive(pid);
}

/* Reads one line from fd into buf within timeout_ms; false on timeout or EOF. */
static bool read_line(int fd, char *buf, size_t len, int64_t timeout_ms)
{
    size_t used = 0;
    int64_t end = tu_now_ms() + timeout_ms;
    while (used + 1 < len) {
        int64_t left = end - tu_now_ms();
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (left <= 0 || poll(&pfd, 1, (int)left) <= 0)
            return false;
        ssize_t n = read(fd, buf + used, 1);
        if (n <= 0)
            return false;
        if (buf[used] == '\n') {
            buf[used] = '\0';
            return true;
        }
        used++;
    }
    return false;
}

Test(sup_orphans, host_killed_with_sigkill_leaves_no_worker_alive_after_1s, .timeout = 60)
{
    int out[2];
    cr_assert_eq(pipe2(out, O_CLOEXEC), 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    pid_t helper;
    char *argv[] = {(char *)PYPOOL_HOST_HELPER, NULL};
    int err = posix_spawn(&helper, PYPOOL_HOST_HELPER, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(out[1]);
    cr_assert_eq(err, 0, "posix_spawn %s: %s", PYPOOL_HOST_HELPER, strerror(err));

    char line[256];
    bool got = read_line(out[0], line, sizeof line, 20000);
    close(out[0]);
    pid_t pids[4] = {0};
    int n = got ? sscanf(line, "PIDS %d %d %d %d", &pids[0], &pids[1], &pids[2], &pids[3]) : 0;
    if (n != 4) {
        kill(helper, SIGKILL);
        waitpid(helper, NULL, 0);
    }
    cr_assert_eq(n, 4, "host_helper printed '%s'", got ? line : "(nothing)");
    for (int i = 0; i < 4; i++)
        cr_assert(pids[i] > 0 && pt_alive(pids[i]), "worker %d of the helper is not alive",
                  pids[i]);

    cr_assert_eq(kill(helper, SIGKILL), 0);
    int64_t t_kill = tu_now_ms();
    int status;
    cr_assert_eq(waitpid(helper, &status, 0), helper);
    /* The host's threads are gone once it is reaped, and with the thread that spawned them
     * each worker's PR_SET_PDEATHSIG has fired: SIGKILL is pending in every worker (or done
     * its work). The event itself, not a guess at how fast a loaded machine lets them die. */
    bool killed[4];
    for (int i = 0; i < 4; i++)
        killed[i] = dying_for_sure(pids[i]);
    pid_set set = {pids, 4};
    bool gone = tu_wait_until(none_alive, &set, 10000); /* a bound for "never" */
    int64_t took = tu_now_ms() - t_kill;
    fprintf(stderr, "workers gone %lld ms after the host was SIGKILLed\n", (long long)took);
    for (int i = 0; i < 4; i++)
        if (pt_alive(pids[i]))
            kill(pids[i], SIGKILL); /* do not leave them to the next test */
    for (int i = 0; i < 4; i++)
        cr_assert(killed[i],
                  "worker %d had no SIGKILL coming when its host was reaped (PR_SET_PDEATHSIG "
                  "did not fire)",
                  pids[i]);
    cr_assert(gone, "workers still alive %lld ms after the host was SIGKILLed: %d %d %d %d",
              (long long)took, pt_alive(pids[0]) ? pids[0] : 0, pt_alive(pids[1]) ? pids[1] : 0,
              pt_alive(pids[2]) ? pids[2] : 0, pt_alive(pids[3]) ? pids[3] : 0);
}

/* Starts `sleep 1000` from a handler; returns its pid (asserting it runs). */
static pid_t spawn_sleep_on(pypool_worker *w, pypool *p)
{
    pypool_result r;
    int rc = w ? pypool_worker_call(w, "spawn_sleep", "", 0, 10000, &r)
               : pt_call_str(p, "spawn_sleep", "", 10000, &r);
    PT_ASSERT_RC(rc, PYPOOL_OK, &r, "spawn_sleep");
    pid_t pid = (pid_t)atoi((const char *)r.data);
    pypool_result_free(&r);
    cr_assert(pid > 0 && pt_alive(pid), "the handler's `sleep` (%d) is not running", pid);
    return pid;
}

static bool gone(void *arg)
{
    return !pt_alive(*(pid_t *)arg);
}

Test(sup_orphans, worker_subprocess_dies_when_the_pool_kills_the_worker_on_timeout, .timeout = 60)
{
    pypool_config cfg;
    tu_config(&cfg, "echo_mod", 1);
    pypool *p = pt_create(&cfg);

    pypool_worker *w = NULL;
    int rc = pypool_checkout(p, 5000, &w);
    PT_ASSERT_RC(rc, PYPOOL_OK, NULL, "checkout");
    int wpid = pypool_worker_pid(w);
    pid_t sleeper = spawn_sleep_on(w, NULL);
    pypool_result r;
    rc = pypool_worker_call(w, "sleep", "10", 2, 300, &r);
    PT_ASSERT_RC(rc, PYPOOL_ETIMEDOUT, &r, "worker_call past its deadline");
    pypool_result_free(&r);
    pypool_checkin(w);

    cr_assert(tu_wait_pid_gone(wpid, 10000), "timed-out worker %d still exists", wpid);
    bool dead = tu_wait_until(gone, &sleeper, 10000);
    if (!dead)
        kill(sleeper, SIGKILL);
    cr_assert(dead, "the worker's `sleep` %d outlived the worker killed for a timeout", sleeper);
    rc = pt_call_str(p, "echo", "after", 15000, &r);
    PT_ASSERT_REPLY(rc, &r, "after", "a call after the timeout");
    pypool_result_free(&r);
    pt_destroy(p);
}

Test(sup_orphans, worker_subprocess_dies_when_the_pool_is_destroyed, .timeout = 60)
{
    pypool_config cfg;
    tu_config(&cfg, "echo_mod", 1);
    pypool *p = pt_create(&cfg);
    pid_t sleeper = spawn_sleep_on(NULL, p);
    pt_destroy(p);
    bool dead = tu_wait_until(gone, &sleeper, 10000);
    if (!dead)
        kill(sleeper, SIGKILL);
    cr_assert(dead, "the worker's `sleep` %d outlived pypool_destroy", sleeper);
}

Test(sup_orphans, worker_subprocess_dies_when_the_worker_is_killed, .timeout = 60)
{
    pypool_config cfg;
    tu_config(&cfg, "echo_mod", 1);
    pypool *p = pt_create(&cfg);
    pypool_result r;
    int rc = pt_call_str(p, "pid", "", 10000, &r);
    PT_ASSERT_RC(rc, PYPOOL_OK, &r, "pid");
    int wpid = r.worker_pid;
    pypool_result_free(&r);
    pid_t sleeper = spawn_sleep_on(NULL, p);

    cr_assert_eq(kill(wpid, SIGKILL), 0);
    bool dead = tu_wait_until(gone, &sleeper, 10000);
    if (!dead)
        kill(sleeper, SIGKILL);
    cr_assert(dead, "the `sleep` %d outlived its worker %d (SIGKILLed, reaped by the pool)",
              sleeper, wpid);
    rc = pt_call_str(p, "echo", "after", 15000, &r);
    PT_ASSERT_REPLY(rc, &r, "after", "a call after the kill");
    pypool_result_free(&r);
    pt_destroy(p);
}
