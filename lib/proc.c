/*
 * proc.c - spawning worker children and the process helpers of proc.h.
 *
 * Why the fd shuffle: the host may have closed 0-2, so pipe2() can hand out fds 0..4. If a
 * source fd of one dup2 action equalled the target of an earlier one, the child would get the
 * wrong pipe. Every child-side fd is therefore moved to >= PYPOOL__FD_FLOOR before
 * posix_spawn, and all of them carry O_CLOEXEC, so the child ends up with exactly fds 0-4 and
 * no sibling's pipe (a leaked write end would keep another worker from ever seeing EOF).
 *
 * Why we keep a reader of the request pipe: while we hold a read end, writing to a dead
 * worker can never fail with EPIPE, so it can never raise SIGPIPE in the host, and the hot
 * path needs no signal-mask system calls. A dead worker shows as EOF on its reply pipe, and
 * FIONREAD on our read end then tells whether the request was ever read (if not, it can be
 * retried on another worker).
 *
 * Why we keep a writer of the reply pipe: a client waits for its reply in a plain blocking
 * read (one system call; no poll), and the reaper enforces the deadline. To wake a client
 * whose worker died or ran past its deadline, the reaper writes a byte to this fd; EOF never
 * needs to be relied on, so a grandchild that inherited fd 4 cannot hang a caller either.
 */
#define _GNU_SOURCE
#include "proc.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pypool.h"

#define PYPOOL__FD_FLOOR  10
#define PYPOOL__PIPE_SIZE (1024 * 1024)

void pypool__child_clear(pypool__child *c)
{
    c->pid = 0;
    c->pidfd = c->req_fd = c->req_peek_fd = c->resp_fd = c->resp_poke_fd = c->log_fd = -1;
    c->poke_shared = false;
}

void pypool__close_fd(int *fd)
{
    if (*fd >= 0) {
        int saved = errno;
        close(*fd);
        errno = saved;
        *fd = -1;
    }
}

void pypool__child_close_fds(pypool__child *c)
{
    pypool__close_fd(&c->pidfd);
    pypool__close_fd(&c->req_fd);
    pypool__close_fd(&c->req_peek_fd);
    pypool__close_fd(&c->resp_fd);
    pypool__close_fd(&c->resp_poke_fd);
    pypool__close_fd(&c->log_fd);
}

/* Moves *fd to >= PYPOOL__FD_FLOOR (close-on-exec) if it is lower. */
static int raise_fd(int *fd)
{
    if (*fd >= PYPOOL__FD_FLOOR)
        return 0;
    int high = fcntl(*fd, F_DUPFD_CLOEXEC, PYPOOL__FD_FLOOR);
    if (high < 0)
        return -1;
    close(*fd);
    *fd = high;
    return 0;
}

/* Three pipes; [0] read end, [1] write end; all O_CLOEXEC. */
struct child_pipes {
    int req[2];
    int resp[2];
    int log[2];
};

static void close_pipes(struct child_pipes *cp)
{
    for (int i = 0; i < 2; i++) {
        pypool__close_fd(&cp->req[i]);
        pypool__close_fd(&cp->resp[i]);
        pypool__close_fd(&cp->log[i]);
    }
}

static int open_pipes(struct child_pipes *cp)
{
    cp->req[0] = cp->req[1] = cp->resp[0] = cp->resp[1] = cp->log[0] = cp->log[1] = -1;
    if (pipe2(cp->req, O_CLOEXEC) || pipe2(cp->resp, O_CLOEXEC) || pipe2(cp->log, O_CLOEXEC))
        return -1;
    if (raise_fd(&cp->req[0]) || raise_fd(&cp->resp[1]) || raise_fd(&cp->log[1]))
        return -1;
    /* Large payloads move in fewer wakeups with a bigger pipe; failure only costs speed. */
    (void)fcntl(cp->req[1], F_SETPIPE_SZ, PYPOOL__PIPE_SIZE);
    (void)fcntl(cp->resp[1], F_SETPIPE_SZ, PYPOOL__PIPE_SIZE);
    if (fcntl(cp->req[1], F_SETFL, O_NONBLOCK) || fcntl(cp->log[0], F_SETFL, O_NONBLOCK))
        return -1;
    return 0;
}

/*
 * Our own write end of the reply pipe, non-blocking so a poke never blocks the reaper.
 * O_NONBLOCK belongs to the open file description, which dup2 shares with the child's fd 4,
 * so reopening the pipe through /proc gives us a description of our own.
 */
static int open_poke_fd(int resp_write_fd)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", resp_write_fd);
    int fd = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd >= 0 && fd < PYPOOL__FD_FLOOR && raise_fd(&fd) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int setup_actions(posix_spawn_file_actions_t *fa, const struct child_pipes *cp)
{
    int rc = posix_spawn_file_actions_init(fa);
    if (rc)
        return rc;
    if ((rc = posix_spawn_file_actions_addopen(fa, 0, "/dev/null", O_RDONLY, 0)) ||
        (rc = posix_spawn_file_actions_adddup2(fa, cp->log[1], 1)) ||
        (rc = posix_spawn_file_actions_adddup2(fa, cp->log[1], 2)) ||
        (rc = posix_spawn_file_actions_adddup2(fa, cp->req[0], 3)) ||
        (rc = posix_spawn_file_actions_adddup2(fa, cp->resp[1], 4)) ||
        (rc = posix_spawn_file_actions_addclosefrom_np(fa, 5)))
        posix_spawn_file_actions_destroy(fa);
    return rc;
}

static int setup_attr(posix_spawnattr_t *attr)
{
    int rc = posix_spawnattr_init(attr);
    if (rc)
        return rc;
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    short flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP;
    if ((rc = posix_spawnattr_setflags(attr, flags)) ||
        (rc = posix_spawnattr_setsigmask(attr, &none)) ||
        (rc = posix_spawnattr_setsigdefault(attr, &all)) ||
        (rc = posix_spawnattr_setpgroup(attr, 0)))
        posix_spawnattr_destroy(attr);
    return rc;
}

static int open_pidfd(pid_t pid)
{
#ifdef SYS_pidfd_open
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (fd >= 0) {
        (void)fcntl(fd, F_SETFD, FD_CLOEXEC); /* pidfds are close-on-exec already */
        return fd;
    }
#else
    (void)pid;
#endif
    return -1;
}

static int run_spawn(char *const *argv, char *const *envp, const struct child_pipes *cp, pid_t *pid)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    int rc = setup_actions(&fa, cp);
    if (rc)
        return rc;
    rc = setup_attr(&attr);
    if (rc) {
        posix_spawn_file_actions_destroy(&fa);
        return rc;
    }
    if (strchr(argv[0], '/'))
        rc = posix_spawn(pid, argv[0], &fa, &attr, argv, envp);
    else
        rc = posix_spawnp(pid, argv[0], &fa, &attr, argv, envp);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    return rc;
}

int pypool__spawn(char *const *argv, char *const *envp, pypool__child *out, char *err,
                  size_t errlen)
{
    pypool__child_clear(out);
    struct child_pipes cp;
    if (open_pipes(&cp) != 0) {
        snprintf(err, errlen, "cannot create pipes: %s", strerror(errno));
        close_pipes(&cp);
        return PYPOOL_ESPAWN;
    }
    pid_t pid = 0;
    int rc = run_spawn(argv, envp, &cp, &pid);
    if (rc != 0) {
        snprintf(err, errlen, "cannot execute '%s': %s", argv[0], strerror(rc));
        close_pipes(&cp);
        return rc == ENOMEM ? PYPOOL_ENOMEM : PYPOOL_ESPAWN;
    }
    /* The child holds its ends now; the log write end must go or EOF would never be seen. */
    pypool__close_fd(&cp.log[1]);
    int poke = open_poke_fd(cp.resp[1]);
    out->poke_shared = poke < 0;
    if (poke >= 0)
        pypool__close_fd(&cp.resp[1]);
    else
        poke = cp.resp[1]; /* no /proc: see pypool__child_poke */
    out->pid = pid;
    out->pidfd = open_pidfd(pid);
    out->req_fd = cp.req[1];
    out->req_peek_fd = cp.req[0];
    out->resp_fd = cp.resp[0];
    out->resp_poke_fd = poke;
    out->log_fd = cp.log[0];
    return 0;
}

void pypool__child_poke(const pypool__child *c)
{
    static const char poke = 0;
    if (c->resp_poke_fd < 0)
        return;
    if (c->poke_shared) {
        struct pollfd pfd = {.fd = c->resp_poke_fd, .events = POLLOUT};
        if (poll(&pfd, 1, 0) != 1 || !(pfd.revents & POLLOUT))
            return; /* full: the reader has data to wake it */
    }
    (void)!write(c->resp_poke_fd, &poke, 1);
}

size_t pypool__unread_requests(const pypool__child *c)
{
    int n = 0;
    if (c->req_peek_fd < 0 || ioctl(c->req_peek_fd, FIONREAD, &n) != 0 || n < 0)
        return 0;
    return (size_t)n;
}

bool pypool__has_exited(pid_t pid)
{
    siginfo_t info;
    memset(&info, 0, sizeof info);
    while (waitid(P_PID, (id_t)pid, &info, WEXITED | WNOHANG | WNOWAIT) != 0)
        if (errno != EINTR)
            return errno == ECHILD; /* not ours to wait for any more: treat as gone */
    return info.si_pid != 0;
}

int pypool__try_reap(pid_t pid, int *status)
{
    for (;;) {
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r == pid)
            return 1;
        if (r == 0)
            return 0;
        if (errno != EINTR)
            return -1;
    }
}

void pypool__signal_group(pid_t pid, int sig)
{
    if (pid > 0 && kill(-pid, sig) != 0)
        (void)kill(pid, sig); /* not a group leader (custom worker_argv that called setsid) */
}

void pypool__describe_status(int status, char *buf, size_t len)
{
    if (WIFEXITED(status))
        snprintf(buf, len, "exited with status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(buf, len, "killed by signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    else
        snprintf(buf, len, "ended with wait status 0x%x", status);
}

uint64_t pypool__rss_bytes(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/statm", (int)pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return 0;
    unsigned long size = 0, resident = 0;
    int n = fscanf(f, "%lu %lu", &size, &resident);
    fclose(f);
    return n == 2 ? (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE) : 0;
}
