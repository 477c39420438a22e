/*
 * proc.h - a worker child process as the pool sees it (pid, pidfd, its three pipes), how to
 * start one (posix_spawn) and the small process helpers around it: reap without blocking,
 * signal its process group, describe an exit status, read its RSS.
 *
 * Pid reuse: a pid (and its process group) is only signalled while the child is not yet
 * reaped. The reaper thread is the only caller of waitpid, always on its own pids.
 */
#ifndef PYPOOL_PROC_H
#define PYPOOL_PROC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct pypool__child {
    pid_t pid;        /* 0: none */
    int pidfd;        /* -1 where pidfd_open is unavailable (the reaper then polls with WNOHANG) */
    int req_fd;       /* our write end of the child's fd 3 (O_NONBLOCK) */
    int req_peek_fd;  /* our copy of the read end of fd 3: see proc.c, "Why we keep a reader" */
    int resp_fd;      /* our read end of the child's fd 4 */
    int resp_poke_fd; /* our copy of the write end of fd 4: the reaper wakes a blocked reader */
    bool poke_shared; /* resp_poke_fd is the child's (blocking) description: no /proc */
    int log_fd;       /* our read end of the child's fds 1 and 2 (O_NONBLOCK) */
} pypool__child;

void pypool__child_clear(pypool__child *c);

/*
 * Starts argv[0] (searched in PATH when it has no '/') with exactly envp, fds 0=/dev/null,
 * 1+2=log pipe, 3=requests, 4=responses, an empty signal mask, default dispositions, in a
 * process group of its own. On failure returns PYPOOL_ESPAWN/ENOMEM with the reason in err.
 */
int pypool__spawn(char *const *argv, char *const *envp, pypool__child *out, char *err,
                  size_t errlen);

/* Closes every fd of the child that is open (sets them to -1). The pid is left alone. */
void pypool__child_close_fds(pypool__child *c);

/*
 * Wakes a thread blocked reading the child's reply pipe by writing one byte into it; never
 * blocks (it runs under the pool mutex). With no /proc the poke fd is the child's own blocking
 * description: then it writes only when poll says there is room, and a pipe with no room holds
 * data, which wakes the reader just as well.
 */
void pypool__child_poke(const pypool__child *c);

/* Bytes written to the child's request pipe that it has not read. */
size_t pypool__unread_requests(const pypool__child *c);

/* The child has exited (a zombie waiting to be reaped); nothing is reaped. */
bool pypool__has_exited(pid_t pid);

/* waitpid(pid, WNOHANG): 1 reaped (*status set), 0 still running, < 0 error (ECHILD...). */
int pypool__try_reap(pid_t pid, int *status);

/* kill(-pid, sig): the worker and every process it started in its group. */
void pypool__signal_group(pid_t pid, int sig);

/* "exited with status 1" / "killed by signal 9 (Killed)". */
void pypool__describe_status(int status, char *buf, size_t len);

/* Resident set size of pid in bytes, 0 if unknown. */
uint64_t pypool__rss_bytes(pid_t pid);

/* close() that keeps errno and sets *fd = -1; no-op for -1. */
void pypool__close_fd(int *fd);

#endif
