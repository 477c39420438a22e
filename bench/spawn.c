/*
 * spawn.c - shell-free child processes for the baselines: posix_spawn with the child's fds laid
 * out like pypool's workers (0 = /dev/null, 3 = requests in, 4 = replies out; the relay's
 * children have more reply pipes, 4, 5, ...), an explicit envp (never setenv) and a default
 * signal mask and dispositions. Every fd created here is O_CLOEXEC so that children started in
 * parallel never inherit each other's pipes.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"

#define BENCH_PIPE_SIZE (1024 * 1024)

extern char **environ;

const char *bench_pythonpath(void)
{
    return BENCH_PY_DIR ":" BENCH_PB2_DIR;
}

/* A pipe whose ends are O_CLOEXEC and numbered above every fd the child's layout uses, so that
 * dup2 onto 3, 4, ... in the child never meets one of its own source fds. */
static int pipe_high(int fds[2])
{
    int raw[2];
    if (pipe2(raw, O_CLOEXEC) != 0)
        return -1;
    for (int i = 0; i < 2; i++) {
        fds[i] = fcntl(raw[i], F_DUPFD_CLOEXEC, 8 + BENCH_MAX_REPLY_PIPES);
        close(raw[i]);
    }
    if (fds[0] < 0 || fds[1] < 0) {
        if (fds[0] >= 0)
            close(fds[0]);
        if (fds[1] >= 0)
            close(fds[1]);
        return -1;
    }
    return 0;
}

/* environ without PYTHONPATH, plus PYTHONPATH=pythonpath. Free with free_envp. */
static char **build_envp(const char *pythonpath)
{
    size_t n = 0;
    while (environ[n])
        n++;
    char **envp = calloc(n + 2, sizeof *envp);
    if (!envp)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], "PYTHONPATH=", 11) != 0)
            envp[k++] = environ[i];
    size_t len = strlen(pythonpath) + sizeof "PYTHONPATH=";
    envp[k] = malloc(len);
    if (!envp[k]) {
        free(envp);
        return NULL;
    }
    snprintf(envp[k], len, "PYTHONPATH=%s", pythonpath);
    return envp;
}

static void free_envp(char **envp)
{
    if (!envp)
        return;
    size_t k = 0;
    while (envp[k + 1])
        k++;
    free(envp[k]); /* only the PYTHONPATH entry is ours */
    free(envp);
}

static int spawn_with_fds(const char *const *argv, char **envp, int req_r, const int *resp_w,
                          unsigned nresp, int stdout_fd, pid_t *pid)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    sigdelset(&all, SIGKILL);
    sigdelset(&all, SIGSTOP);
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    if (stdout_fd >= 0)
        posix_spawn_file_actions_adddup2(&fa, stdout_fd, 1);
    posix_spawn_file_actions_adddup2(&fa, req_r, 3);
    for (unsigned i = 0; i < nresp; i++) /* the sources are all above 4 + nresp (pipe_high) */
        posix_spawn_file_actions_adddup2(&fa, resp_w[i], 4 + (int)i);
    posix_spawnattr_init(&attr);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    int rc = posix_spawn(pid, argv[0], &fa, &attr, (char *const *)argv, envp);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    return rc;
}

/* Closes what is open of n pipes. */
static void close_pipes(int (*fds)[2], unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        for (int k = 0; k < 2; k++)
            if (fds[i][k] >= 0)
                close(fds[i][k]);
}

int bench_spawn_replies(const char *const *argv, const char *pythonpath, int stdout_fd,
                        unsigned nreply, bench_proc *out, int *reply_r)
{
    int req[2] = {-1, -1}, resp[BENCH_MAX_REPLY_PIPES][2];
    out->pid = -1;
    out->to_child = out->from_child = -1;
    if (nreply == 0 || nreply > BENCH_MAX_REPLY_PIPES)
        return -EINVAL;
    for (unsigned i = 0; i < nreply; i++)
        resp[i][0] = resp[i][1] = -1;
    int rc = pipe_high(req) != 0 ? errno : 0;
    for (unsigned i = 0; rc == 0 && i < nreply; i++)
        rc = pipe_high(resp[i]) != 0 ? errno : 0;
    int resp_w[BENCH_MAX_REPLY_PIPES];
    for (unsigned i = 0; rc == 0 && i < nreply; i++) {
        /* The same pipe capacity as pypool's (1 MiB): a 64 KiB frame then fits in one write. */
        (void)fcntl(resp[i][1], F_SETPIPE_SZ, BENCH_PIPE_SIZE);
        resp_w[i] = resp[i][1];
    }
    char **envp = NULL;
    if (rc == 0) {
        (void)fcntl(req[1], F_SETPIPE_SZ, BENCH_PIPE_SIZE);
        envp = build_envp(pythonpath);
        rc = envp ? spawn_with_fds(argv, envp, req[0], resp_w, nreply, stdout_fd, &out->pid)
                  : ENOMEM;
        free_envp(envp);
    }
    if (rc != 0) {
        close_pipes(&req, 1);
        close_pipes(resp, nreply);
        return -rc;
    }
    close(req[0]);
    out->to_child = req[1];
    for (unsigned i = 0; i < nreply; i++) {
        close(resp[i][1]);
        reply_r[i] = resp[i][0];
    }
    out->from_child = reply_r[0];
    return 0;
}

int bench_spawn(const char *const *argv, const char *pythonpath, int stdout_fd, bench_proc *out)
{
    int reply_r;
    return bench_spawn_replies(argv, pythonpath, stdout_fd, 1, out, &reply_r);
}

int bench_proc_finish(bench_proc *p)
{
    int status = -1;
    if (p->to_child >= 0)
        close(p->to_child);
    if (p->from_child >= 0)
        close(p->from_child);
    p->to_child = p->from_child = -1;
    if (p->pid > 0) {
        while (waitpid(p->pid, &status, 0) < 0 && errno == EINTR) {
        }
    }
    p->pid = -1;
    return status;
}

static char *read_all(int fd)
{
    size_t len = 0, cap = 4096;
    char *buf = malloc(cap);
    while (buf) {
        if (len + 1 >= cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb)
                break;
            buf = nb;
            cap *= 2;
        }
        ssize_t n = read(fd, buf + len, cap - len - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            buf[len] = '\0';
            return buf;
        }
        len += (size_t)n;
    }
    free(buf);
    return NULL;
}

char *bench_run_capture(const char *const *argv, const char *pythonpath, int *status)
{
    int out[2];
    *status = -1;
    if (pipe_high(out) != 0)
        return NULL;
    bench_proc p;
    int rc = bench_spawn(argv, pythonpath, out[1], &p);
    close(out[1]);
    if (rc != 0) {
        close(out[0]);
        return NULL;
    }
    close(p.to_child); /* the helper reads nothing: EOF on its fd 3 */
    p.to_child = -1;
    char *text = read_all(out[0]);
    close(out[0]);
    *status = bench_proc_finish(&p);
    return text;
}
