/*
 * spawn.c - shell-free child processes for the baselines: posix_spawn with the child's fds laid
 * out like pypool's workers (0 = /dev/null, 3 = requests in, 4 = replies out), an explicit envp
 * (never setenv) and a default signal mask and dispositions. Every fd created here is O_CLOEXEC
 * so that children started in parallel never inherit each other's pipes.
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

/* A pipe whose ends are O_CLOEXEC and numbered >= 10, so that dup2 onto 3 and 4 in the child
 * never meets one of its own source fds. */
static int pipe_high(int fds[2])
{
    int raw[2];
    if (pipe2(raw, O_CLOEXEC) != 0)
        return -1;
    for (int i = 0; i < 2; i++) {
        fds[i] = fcntl(raw[i], F_DUPFD_CLOEXEC, 10);
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

static int spawn_with_fds(const char *const *argv, char **envp, int req_r, int resp_w,
                          int stdout_fd, pid_t *pid)
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
    posix_spawn_file_actions_adddup2(&fa, resp_w, 4);
    posix_spawnattr_init(&attr);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    int rc = posix_spawn(pid, argv[0], &fa, &attr, (char *const *)argv, envp);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    return rc;
}

int bench_spawn(const char *const *argv, const char *pythonpath, int stdout_fd, bench_proc *out)
{
    int req[2], resp[2];
    out->pid = -1;
    out->to_child = out->from_child = -1;
    if (pipe_high(req) != 0)
        return -errno;
    if (pipe_high(resp) != 0) {
        int e = errno;
        close(req[0]);
        close(req[1]);
        return -e;
    }
    /* The same pipe capacity as pypool's (1 MiB): a 64 KiB frame then fits in one write. */
    (void)fcntl(req[1], F_SETPIPE_SZ, BENCH_PIPE_SIZE);
    (void)fcntl(resp[1], F_SETPIPE_SZ, BENCH_PIPE_SIZE);
    char **envp = build_envp(pythonpath);
    int rc = envp ? spawn_with_fds(argv, envp, req[0], resp[1], stdout_fd, &out->pid) : ENOMEM;
    free_envp(envp);
    close(req[0]);
    close(resp[1]);
    if (rc != 0) {
        close(req[1]);
        close(resp[0]);
        return -rc;
    }
    out->to_child = req[1];
    out->from_child = resp[0];
    return 0;
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
