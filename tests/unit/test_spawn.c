/*
 * test_spawn.c - starting workers: the startup handshake against real Python children through
 * the public API (good module, import error, missing or wrong interpreter, no Hello, garbage
 * instead of Hello, output before Hello), and pypool__spawn itself (exactly fds 0-4 in the
 * child, empty signal mask and default dispositions, its own process group, close-on-exec fds
 * in the host, no fd leaks, no pipes leaking into siblings spawned concurrently).
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "proc.h"
#include "pypool.h"
#include "testutil.h"

/*
 * A failed pypool_create destroys what it started and pypool_destroy returns with every
 * child reaped: nothing may be left when either returns, not even a zombie.
 */
static void assert_no_children_left(const char *what)
{
    cr_assert_eq(tu_count_children(), 0, "%s: %d children left behind", what, tu_count_children());
}

TestSuite(handshake, .init = tu_log_reset, .timeout = 60);
TestSuite(spawn, .timeout = 60);

/* ---------------------------------------------------------------------------------------- */
/* handshake through the public API                                                         */
/* ---------------------------------------------------------------------------------------- */

/* pypool_create of a 1-slot eager pool; returns its rc and how long it took. */
static int create_one(pypool_config *cfg, pypool **out, int64_t *took_ms)
{
    cfg->lazy = false;
    int64_t t0 = tu_now_ms();
    int rc = pypool_create(cfg, out);
    *took_ms = tu_now_ms() - t0;
    return rc;
}

#define ASSERT_ERR_HAS(needle)                                                                     \
    cr_assert_not_null(strstr(pypool_last_error(), (needle)),                                      \
                       "pypool_last_error() lacks \"%s\": \"%s\"", (needle), pypool_last_error())

/*
 * A start that fails on its own (import error, missing interpreter, garbage) must be reported as
 * that failure, not as the startup timeout. The tests give the start a timeout far longer than
 * any of these takes even on a loaded machine (STARTUP_TIMEOUT_MS) and check the message says
 * what happened and not "did not say Hello within": the cause, not a race against a clock.
 */
#define STARTUP_TIMEOUT_MS 30000
#define ASSERT_NOT_THE_TIMEOUT()                                                                   \
    cr_assert_null(strstr(pypool_last_error(), "did not say Hello within"),                        \
                   "reported as the startup timeout: \"%s\"", pypool_last_error())

static void assert_spawn_failed(int rc, pypool *p, const char *what)
{
    cr_assert_eq(rc, PYPOOL_ESPAWN, "%s: pypool_create returned %d (%s), error \"%s\"", what, rc,
                 pypool_strerror(rc), pypool_last_error());
    cr_assert_null(p, "%s: a failed create handed out a pool", what);
    cr_assert_neq(pypool_last_error()[0], '\0', "%s: no detail in pypool_last_error()", what);
}

static void echo_once(pypool *p, const char *text)
{
    pypool_result r;
    int rc = pypool_call(p, "echo", text, strlen(text), 10000, &r);
    cr_assert_eq(rc, PYPOOL_OK, "echo: %d (%s) %s", rc, pypool_strerror(rc),
                 r.error_message ? r.error_message : "");
    cr_assert_eq(r.len, strlen(text));
    cr_assert_arr_eq(r.data, text, r.len);
    pypool_result_free(&r);
}

Test(handshake, good_module_starts_and_has_a_pid, .timeout = 60)
{
    pypool_config cfg;
    tu_config(&cfg, "echo_mod", 1);
    pypool *p = NULL;
    int64_t took;
    int rc = create_one(&cfg, &p, &took);
    cr_assert_eq(rc, PYPOOL_OK, "create: %d (%s) %s", rc, pypool_strerror(rc), pypool_last_error());
    cr_assert_not_null(p);

    pypool_stats st;
    pypool_stats_get(p, &st);
    cr_assert_eq(st.size, 1);
    cr_assert_eq(st.slot_count, 1);
    cr_assert_eq(st.slots[0].state, PYPOOL_SLOT_IDLE, "slot is %s after an eager create",
                 pypool_slot_state_name(st.slots[0].state));
    pid_t pid = st.slots[0].pid;
    cr_assert_gt(pid, 0, "no pid after an eager create");
    cr_assert(tu_pid_exists(pid), "worker pid %d does not exist", (int)pid);
    cr_assert_eq(getpgid(pid), pid, "worker %d is not its own process-group leader", (int)pid);

    echo_once(p, "hello worker");
    pypool_destroy(p);
    cr_assert(tu_wait_pid_gone(pid, 5000), "worker %d outlived pypool_destroy", (int)pid);
    assert_no_children_left("after destroy");
}

Test(handshake, module_raising_on_import_is_espawn_with_traceback, .timeout = 60)
{
    pypool_config cfg;
    tu_config(&cfg, "raise_on_import", 1);
    cfg.startup_timeout_ms = STARTUP_TIMEOUT_MS;
    pypool *p = NULL;
    int64_t took;
    int rc = create_one(&cfg, &p, &took);
    assert_spawn_failed(rc, p, "module raising on import");
    ASSERT_ERR_HAS("boom at import");
    ASSERT_ERR_HAS("RuntimeError");
    ASSERT_NOT_THE_TIMEOUT();
    cr_assert_lt(took, cfg.startup_timeout_ms,
                 "an import error took %lld ms: it must not wait for the startup timeout",
                 (long long)took);
    assert_no_children_left("import error");
}

Test(handshake, missing_interpreter_is_espawn_fast, .timeout = 60)
{
    pypool_config cfg;
    tu_config(&cfg, "echo_mod", 1);
    cfg.python = "/nonexistent/python3";
    cfg.startup_timeout_ms = STARTUP_TIMEOUT_MS;
    pypool *p = NULL;
    int64_t took;
    int rc = create_one(&cfg, &p, &took);
    assert_spawn_failed(rc, p, "missing interpreter");
    cr_assert_lt(took, cfg.startup_timeout_ms,
                 "a missing interpreter took %lld ms to report: it must not wait for the startup "
                 "timeout",
                 (long long)took);
    ASSERT_ERR_HAS("/nonexistent/python3");
    ASSERT_ERR_HAS("No such file");
    ASSERT_NOT_THE_TIMEOUT();
    assert_no_children_left("missing interpreter");
}

/* The detected interpreter with google.protobuf hidden (tests/modules/noproto shadows the
 * `google` package): the error must say what is missing and which package brings it. */
Test(handshake, interpreter_without_protobuf_is_espawn, .timeout = 60)
{
    pypool_config cfg;
    tu_config(&cfg, "echo_mod", 1);
    cfg.python_path = PYPOOL_TEST_MODULES "/noproto:" PYPOOL_TEST_MODULES;
    cfg.startup_timeout_ms = STARTUP_TIMEOUT_MS;
    pypool *p = NULL;
    int64_t took;
    int rc = create_one(&cfg, &p, &took);
    assert_spawn_failed(rc, p, "interpreter without protobuf");
    ASSERT_ERR_HAS("google.protobuf");
    ASSERT_ERR_HAS("python3-protobuf");
    ASSERT_NOT_THE_TIMEOUT();
    cr_assert_lt(took, cfg.startup_timeout_ms, "took %lld ms: it must not wait for the timeout",
                 (long long)took);
    assert_no_children_left("wrong interpreter");
}

Test(handshake, child_that_never_says_hello_hits_startup_timeout, .timeout = 60)
{
    pypool_config cfg;
    tu_config(&cfg, "never_hello", 1);
    cfg.startup_timeout_ms = 500;
    pypool *p = NULL;
    int64_t took;
    int rc = create_one(&cfg, &p, &took);
    assert_spawn_failed(rc, p, "never says Hello");
    cr_assert_geq(took, 450, "gave up after %lld ms, before the 500 ms startup timeout",
                  (long long)took);
    /* The configured 500 ms, not the default (10 s), nor never: any bound below the default
     * tells them apart, so it need not guess how loaded the machine is. */
    pypool_config defaults;
    pypool_config_init(&defaults);
    cr_assert_lt(took, defaults.startup_timeout_ms,
                 "a 500 ms startup timeout took %lld ms (the default is %lld ms)", (long long)took,
                 (long long)defaults.startup_timeout_ms);
    ASSERT_ERR_HAS("did not say Hello within 500 ms");
    assert_no_children_left("never says Hello");
}

Test(handshake, child_writing_garbage_instead_of_hello_is_espawn, .timeout = 60)
{
    char script[4096];
    snprintf(script, sizeof script, "%s/fake_garbage_hello.py", PYPOOL_TEST_MODULES);
    const char *argv[] = {PYPOOL_TEST_PYTHON, script, NULL};
    pypool_config cfg;
    tu_config(&cfg, NULL, 1);
    cfg.worker_argv = argv;
    cfg.startup_timeout_ms = STARTUP_TIMEOUT_MS;
    pypool *p = NULL;
    int64_t took;
    int rc = create_one(&cfg, &p, &took);
    assert_spawn_failed(rc, p, "garbage instead of Hello");
    /* The garbage is a protocol error at once; it must not be mistaken for "no Hello yet". */
    ASSERT_ERR_HAS("garbage instead of Hello");
    ASSERT_NOT_THE_TIMEOUT();
    cr_assert_lt(took, cfg.startup_timeout_ms, "garbage was only noticed after %lld ms",
                 (long long)took);
    assert_no_children_left("garbage instead of Hello");
}

Test(handshake, output_before_hello_goes_to_the_log, .timeout = 60)
{
    pypool_config cfg;
    tu_config(&cfg, "stdout_before_hello", 1);
    pypool *p = NULL;
    int64_t took;
    int rc = create_one(&cfg, &p, &took);
    cr_assert_eq(rc, PYPOOL_OK, "print() at import broke the start: %d (%s) %s", rc,
                 pypool_strerror(rc), pypool_last_error());
    echo_once(p, "still works");
    echo_once(p, "");
    for (int i = 0; i < 3; i++) {
        char line[64];
        snprintf(line, sizeof line, "stdout_before_hello line %d", i);
        cr_assert(tu_log_contains(line), "the log callback never saw \"%s\"", line);
    }
    cr_assert_geq(tu_log_snapshot().output_lines, 3, "output lines not logged as OUTPUT");
    pypool_destroy(p);
    assert_no_children_left("after destroy");
}

/* ---------------------------------------------------------------------------------------- */
/* pypool__spawn                                                                            */
/* ---------------------------------------------------------------------------------------- */

static char *const spawn_envp[] = {"PATH=/usr/bin:/bin", "LC_ALL=C", NULL};

static void spawn_ok(char *const *argv, pypool__child *c)
{
    char err[512] = "";
    int rc = pypool__spawn(argv, spawn_envp, c, err, sizeof err);
    cr_assert_eq(rc, 0, "pypool__spawn(%s): %d (%s) %s", argv[0], rc, pypool_strerror(rc), err);
    cr_assert_gt(c->pid, 0);
}

/* Blocking reap of our own child; returns its wait status. */
static int reap(pid_t pid)
{
    int status = 0;
    pid_t r;
    do {
        r = waitpid(pid, &status, 0);
    } while (r < 0 && errno == EINTR);
    cr_assert_eq(r, pid, "waitpid(%d): %s", (int)pid, strerror(errno));
    return status;
}

static void kill_and_reap(pypool__child *c)
{
    pypool__signal_group(c->pid, SIGKILL);
    reap(c->pid);
    pypool__child_close_fds(c);
}

/* Reads the child's log pipe (O_NONBLOCK) until EOF into buf; returns the length. */
static size_t read_log_to_eof(int fd, char *buf, size_t cap)
{
    size_t len = 0;
    int64_t end = tu_now_ms() + 20000;
    while (tu_now_ms() < end) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        poll(&pfd, 1, 100);
        ssize_t n = read(fd, buf + len, cap - 1 - len);
        if (n == 0)
            break;
        if (n > 0)
            len += (size_t)n;
        else
            cr_assert(errno == EAGAIN || errno == EINTR, "read log: %s", strerror(errno));
        cr_assert_lt(len, cap - 1, "child wrote too much");
    }
    buf[len] = '\0';
    return len;
}

/*
 * Python prints what it has open. It probes fds with fstat instead of listing
 * /proc/self/fd, whose own directory fd would show up in the listing.
 */
static const char fd_probe[] =
    "import os, stat\n"
    "fds = []\n"
    "for fd in range(0, 4096):\n"
    "    try:\n"
    "        os.fstat(fd)\n"
    "        fds.append(fd)\n"
    "    except OSError:\n"
    "        pass\n"
    "s = lambda fd: os.fstat(fd)\n"
    "acc = lambda fd: os.O_ACCMODE & __import__('fcntl').fcntl(fd, __import__('fcntl').F_GETFL)\n"
    "print('fds=' + ','.join(map(str, fds)))\n"
    "print('fd0=' + os.readlink('/proc/self/fd/0'))\n"
    "print('same12=%d' % (s(1).st_ino == s(2).st_ino))\n"
    "print('fifo34=%d%d' % (stat.S_ISFIFO(s(3).st_mode), stat.S_ISFIFO(s(4).st_mode)))\n"
    "print('acc34=%d%d' % (acc(3) == os.O_RDONLY, acc(4) == os.O_WRONLY))\n"
    "print('pgid=%d' % (os.getpgid(0) == os.getpid()))\n"
    "for fd in fds[5:]:\n"
    "    print('extra fd %d -> %s' % (fd, os.readlink('/proc/self/fd/%d' % fd)))\n";

Test(spawn, child_gets_exactly_fds_0_to_4, .timeout = 60)
{
    /*
     * The host's own fds must not reach the worker either: one close-on-exec pipe, and one
     * without O_CLOEXEC (as a host's listening socket or Criterion's arena would be).
     */
    int junk[2], inheritable[2];
    cr_assert_eq(pipe2(junk, O_CLOEXEC), 0);
    cr_assert_eq(pipe(inheritable), 0);

    char *const argv[] = {PYPOOL_TEST_PYTHON, "-c", (char *)fd_probe, NULL};
    pypool__child c;
    spawn_ok(argv, &c);
    char out[8192];
    read_log_to_eof(c.log_fd, out, sizeof out);
    int status = reap(c.pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "probe failed (0x%x): %s", status,
              out);
    cr_expect_not_null(strstr(out, "fds=0,1,2,3,4\n"),
                       "the child has more than fds 0-4 (host fds %d/%d are an inheritable "
                       "pipe, %d/%d a close-on-exec one): %s",
                       inheritable[0], inheritable[1], junk[0], junk[1], out);
    cr_assert_not_null(strstr(out, "fd0=/dev/null\n"), "fd 0 is not /dev/null: %s", out);
    cr_assert_not_null(strstr(out, "same12=1\n"), "fd 1 and 2 are not the same pipe: %s", out);
    cr_assert_not_null(strstr(out, "fifo34=11\n"), "fd 3/4 are not pipes: %s", out);
    cr_assert_not_null(strstr(out, "acc34=11\n"), "fd 3 must be read-only, 4 write-only: %s", out);
    cr_assert_not_null(strstr(out, "pgid=1\n"), "child is not a group leader: %s", out);
    pypool__child_close_fds(&c);
    close(junk[0]);
    close(junk[1]);
    close(inheritable[0]);
    close(inheritable[1]);
}

/* Reads "<field>:\t<hex>" of /proc/<pid>/status. */
static unsigned long long status_mask(pid_t pid, const char *field)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "re");
    cr_assert_not_null(f, "open %s: %s", path, strerror(errno));
    unsigned long long v = 0;
    bool found = false;
    size_t flen = strlen(field);
    while (!found && fgets(line, sizeof line, f)) {
        if (strncmp(line, field, flen) == 0 && line[flen] == ':') {
            v = strtoull(line + flen + 1, NULL, 16);
            found = true;
        }
    }
    fclose(f);
    cr_assert(found, "no %s in %s", field, path);
    return v;
}

#define SIGBIT(sig) (1ULL << ((sig)-1))

Test(spawn, child_has_empty_mask_default_dispositions_own_group, .timeout = 60)
{
    /* The host blocks and ignores signals; none of that may reach the worker. */
    sigset_t block, old_mask;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGUSR1);
    sigaddset(&block, SIGCHLD);
    cr_assert_eq(pthread_sigmask(SIG_BLOCK, &block, &old_mask), 0);
    struct sigaction ign, old_int, old_term, old_hup;
    memset(&ign, 0, sizeof ign);
    ign.sa_handler = SIG_IGN;
    sigemptyset(&ign.sa_mask);
    cr_assert_eq(sigaction(SIGINT, &ign, &old_int), 0);
    cr_assert_eq(sigaction(SIGTERM, &ign, &old_term), 0);
    cr_assert_eq(sigaction(SIGHUP, &ign, &old_hup), 0);
    /* Sanity: the test really set the host up that way. */
    unsigned long long host_ign = status_mask(getpid(), "SigIgn");
    cr_assert(host_ign & SIGBIT(SIGINT), "host SigIgn %llx", host_ign);

    char *const argv[] = {"/bin/sleep", "30", NULL};
    pypool__child c;
    spawn_ok(argv, &c);
    /* posix_spawn returns after the exec: /proc shows sleep's own state now. */
    unsigned long long blk = status_mask(c.pid, "SigBlk");
    unsigned long long ign_mask = status_mask(c.pid, "SigIgn");
    cr_assert_eq(blk, 0, "child SigBlk = %016llx, want an empty mask", blk);
    cr_assert_eq(ign_mask & (SIGBIT(SIGINT) | SIGBIT(SIGTERM) | SIGBIT(SIGHUP)), 0,
                 "child ignores host-ignored signals: SigIgn = %016llx", ign_mask);
    /*
     * Signals 32 and 33 are glibc's internal SIGCANCEL/SIGSETXID: posix_spawn cannot reset
     * them (sigfillset leaves them out) and glibc itself sets them to SIG_IGN in the child
     * when the parent has handlers. Every other signal must be at its default.
     */
    unsigned long long glibc_internal = SIGBIT(32) | SIGBIT(33);
    cr_assert_eq(ign_mask & ~glibc_internal, 0, "child SigIgn = %016llx, want all defaults",
                 ign_mask);
    cr_assert_eq(getpgid(c.pid), c.pid, "child %d is in group %d, not its own", (int)c.pid,
                 (int)getpgid(c.pid));
    cr_assert_neq(getpgid(c.pid), getpgrp(), "child shares the host's process group");

    /* SIGTERM at its default kills it (it would not if it were still ignored). */
    pypool__signal_group(c.pid, SIGTERM);
    int status = reap(c.pid);
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM,
              "SIGTERM did not kill the child: status 0x%x", status);
    pypool__child_close_fds(&c);

    /* The host's own setup is untouched by the spawn. */
    sigset_t now;
    pthread_sigmask(SIG_BLOCK, NULL, &now);
    cr_assert(sigismember(&now, SIGINT) && sigismember(&now, SIGTERM), "host mask changed");
    struct sigaction cur;
    sigaction(SIGINT, NULL, &cur);
    cr_assert(cur.sa_handler == SIG_IGN, "host SIGINT disposition changed");

    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    sigaction(SIGHUP, &old_hup, NULL);
    pthread_sigmask(SIG_SETMASK, &old_mask, NULL);
}

static void assert_cloexec(int fd, const char *name)
{
    cr_assert_geq(fd, 0, "%s is not open", name);
    int flags = fcntl(fd, F_GETFD);
    cr_assert_geq(flags, 0, "F_GETFD %s: %s", name, strerror(errno));
    cr_assert(flags & FD_CLOEXEC, "%s (fd %d) lacks FD_CLOEXEC", name, fd);
}

static void assert_nonblock(int fd, const char *name)
{
    int flags = fcntl(fd, F_GETFL);
    cr_assert(flags >= 0 && (flags & O_NONBLOCK), "%s (fd %d) is not O_NONBLOCK", name, fd);
}

/* What /proc/self/fd/<fd> points to ("pipe:[123]"), for messages. */
static void fd_target(int fd, char *out, size_t len)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(path, out, len - 1);
    out[n > 0 ? n : 0] = '\0';
}

/* Fills have[fd] for the open fds of this process (< max). */
static void open_fds(bool *have, int max)
{
    memset(have, 0, (size_t)max * sizeof *have);
    DIR *d = opendir("/proc/self/fd");
    cr_assert_not_null(d);
    int self = dirfd(d);
    struct dirent *e;
    while ((e = readdir(d))) {
        int fd = atoi(e->d_name);
        if (e->d_name[0] != '.' && fd != self && fd < max)
            have[fd] = true;
    }
    closedir(d);
}

Test(spawn, host_side_fds_are_cloexec_and_nothing_else_opens, .timeout = 60)
{
    enum { MAXFD = 1024 };
    static bool before[MAXFD], after[MAXFD];
    open_fds(before, MAXFD);

    char *const argv[] = {"/bin/sleep", "30", NULL};
    pypool__child c;
    spawn_ok(argv, &c);
    assert_cloexec(c.req_fd, "req_fd");
    assert_cloexec(c.resp_fd, "resp_fd");
    assert_cloexec(c.log_fd, "log_fd");
    if (c.req_peek_fd >= 0) {
        assert_cloexec(c.req_peek_fd, "req_peek_fd");
        cr_assert_eq(fcntl(c.req_peek_fd, F_GETFL) & O_ACCMODE, O_RDONLY, "req_peek_fd reads");
    }
    if (c.pidfd >= 0)
        assert_cloexec(c.pidfd, "pidfd");
    assert_cloexec(c.resp_poke_fd, "resp_poke_fd");
    assert_nonblock(c.resp_poke_fd, "resp_poke_fd");
    cr_assert_eq(fcntl(c.resp_poke_fd, F_GETFL) & O_ACCMODE, O_WRONLY, "resp_poke_fd writes");
    /* our non-blocking poke end must not make the child's fd 4 non-blocking */
    cr_assert_eq(fcntl(c.resp_fd, F_GETFL) & O_NONBLOCK, 0, "resp_fd blocks");
    assert_nonblock(c.req_fd, "req_fd");
    assert_nonblock(c.log_fd, "log_fd");
    cr_assert_eq(fcntl(c.req_fd, F_GETFL) & O_ACCMODE, O_WRONLY, "req_fd is our write end");
    cr_assert_eq(fcntl(c.resp_fd, F_GETFL) & O_ACCMODE, O_RDONLY, "resp_fd is our read end");
    cr_assert_eq(fcntl(c.log_fd, F_GETFL) & O_ACCMODE, O_RDONLY, "log_fd is our read end");

    /* The child's ends are closed here: only our own fds are new, all close-on-exec. */
    open_fds(after, MAXFD);
    for (int fd = 0; fd < MAXFD; fd++) {
        if (!after[fd] || before[fd])
            continue;
        char what[256];
        fd_target(fd, what, sizeof what);
        cr_assert(fd == c.req_fd || fd == c.req_peek_fd || fd == c.resp_fd || fd == c.log_fd ||
                      fd == c.pidfd || fd == c.resp_poke_fd,
                  "spawn left fd %d (%s) open in the host; the child's are %d %d %d %d %d %d", fd,
                  what, c.req_fd, c.req_peek_fd, c.resp_fd, c.resp_poke_fd, c.log_fd, c.pidfd);
        assert_cloexec(fd, "new fd");
    }
    kill_and_reap(&c);
}

Test(spawn, missing_program_is_espawn_with_reason, .timeout = 60)
{
    int fds0 = tu_count_fds();
    char *const argv[] = {"/nonexistent/python3", "-c", "pass", NULL};
    pypool__child c;
    char err[512] = "";
    int64_t t0 = tu_now_ms();
    int rc = pypool__spawn(argv, spawn_envp, &c, err, sizeof err);
    cr_assert_eq(rc, PYPOOL_ESPAWN, "spawning a missing program: %d (%s)", rc, pypool_strerror(rc));
    /* posix_spawn reports the failed exec itself: nothing to wait for (a generous bound only
     * gives a hang a message). */
    cr_assert_lt(tu_now_ms() - t0, 10000);
    cr_assert_not_null(strstr(err, "/nonexistent/python3"), "err lacks the path: %s", err);
    cr_assert_not_null(strstr(err, "No such file"), "err lacks the reason: %s", err);
    cr_assert_eq(c.pid, 0, "a pid for a failed spawn");
    cr_assert(c.req_fd == -1 && c.req_peek_fd == -1 && c.resp_fd == -1 && c.log_fd == -1 &&
                  c.pidfd == -1,
              "a failed spawn handed out fds");
    cr_assert_eq(tu_count_fds(), fds0, "a failed spawn leaked %d fds", tu_count_fds() - fds0);
    cr_assert_eq(tu_count_children(), 0, "a failed spawn left a child");
}

Test(spawn, no_fd_leak_over_50_spawn_and_reap_cycles, .timeout = 60)
{
    char *const ok_argv[] = {"/bin/true", NULL};
    char *const bad_argv[] = {"/nonexistent/program", NULL};
    /* One warm-up cycle, so lazily opened library fds (if any) are not counted as leaks. */
    pypool__child c;
    spawn_ok(ok_argv, &c);
    reap(c.pid);
    pypool__child_close_fds(&c);

    int fds0 = tu_count_fds();
    for (int i = 0; i < 50; i++) {
        spawn_ok(ok_argv, &c);
        int status = reap(c.pid);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "cycle %d: status 0x%x", i,
                  status);
        pypool__child_close_fds(&c);
        cr_assert(c.req_fd == -1 && c.req_peek_fd == -1 && c.resp_fd == -1 && c.log_fd == -1 &&
                      c.pidfd == -1,
                  "child_close_fds left an fd set");
        if (i % 10 == 0) {
            char err[256];
            int rc = pypool__spawn(bad_argv, spawn_envp, &c, err, sizeof err);
            cr_assert_eq(rc, PYPOOL_ESPAWN);
        }
    }
    int fds1 = tu_count_fds();
    cr_assert_eq(fds1, fds0, "50 spawn+reap cycles: %d fds before, %d after", fds0, fds1);
    cr_assert_eq(tu_count_children(), 0);
}

/* Lists /proc/<pid>/fd of a child into a "0,1,2,..." string. */
static void child_fd_list(pid_t pid, char *out, size_t len)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    bool have[256] = {false};
    DIR *d = opendir(path);
    cr_assert_not_null(d, "open %s: %s", path, strerror(errno));
    struct dirent *e;
    while ((e = readdir(d))) {
        int fd = atoi(e->d_name);
        if (e->d_name[0] != '.' && fd >= 0 && fd < 256)
            have[fd] = true;
    }
    closedir(d);
    size_t off = 0;
    out[0] = '\0';
    for (int fd = 0; fd < 256 && off < len; fd++)
        if (have[fd])
            off += (size_t)snprintf(out + off, len - off, "%s%d", off ? "," : "", fd);
}

/*
 * The child's fd list once it settled. posix_spawn returns when the child's exec replaced its
 * memory, a moment before the kernel closes its close-on-exec fds (and while ld.so still has
 * libc open), so a list taken at once can show every fd of this process. A leaked pipe stays;
 * the transient ones go: poll until the list is the expected one or 10 s passed (a bound for
 * "never", not a guess at how long the kernel takes).
 */
static void settled_child_fd_list(pid_t pid, const char *expected, char *out, size_t len)
{
    int64_t end = tu_now_ms() + 10000;
    for (;;) {
        child_fd_list(pid, out, len);
        if (strcmp(out, expected) == 0 || tu_now_ms() >= end)
            return;
        tu_sleep_ms(5);
    }
}

/* "exe=/bin/sleep fd 5 -> pipe:[1]; ..." for the child's fds >= 5 (at most 4): messages. */
static void child_fd_detail(pid_t pid, char *out, size_t len)
{
    char path[64], target[256];
    snprintf(path, sizeof path, "/proc/%d/exe", (int)pid);
    ssize_t n = readlink(path, target, sizeof target - 1);
    target[n > 0 ? n : 0] = '\0';
    size_t off = (size_t)snprintf(out, len, "exe=%s", target);
    int shown = 0;
    for (int fd = 5; fd < 1024 && shown < 4 && off < len; fd++) {
        snprintf(path, sizeof path, "/proc/%d/fd/%d", (int)pid, fd);
        n = readlink(path, target, sizeof target - 1);
        if (n <= 0)
            continue;
        target[n] = '\0';
        off += (size_t)snprintf(out + off, len - off, "; fd %d -> %s", fd, target);
        shown++;
    }
}

#define SPAWNERS    4
#define PER_SPAWNER 8

typedef struct spawner {
    pypool__child kids[PER_SPAWNER];
    int n;
    int rc;
    char err[256];
    pthread_t thread;
} spawner;

static void *spawner_main(void *arg)
{
    spawner *s = arg;
    char *const argv[] = {"/bin/sleep", "30", NULL};
    for (int i = 0; i < PER_SPAWNER; i++) {
        s->rc = pypool__spawn(argv, spawn_envp, &s->kids[i], s->err, sizeof s->err);
        if (s->rc != 0)
            break;
        s->n++;
    }
    return NULL;
}

Test(spawn, concurrent_spawns_do_not_leak_pipes_into_siblings, .timeout = 60)
{
    /* Two threads spawning at once: a pipe without O_CLOEXEC would show up in a sibling. */
    static spawner sp[SPAWNERS];
    memset(sp, 0, sizeof sp);
    /* The spawn closes every fd >= 5 in the child, the host's inheritable ones included. */
    const char *expected = "0,1,2,3,4";
    for (int t = 0; t < SPAWNERS; t++)
        cr_assert_eq(pthread_create(&sp[t].thread, NULL, spawner_main, &sp[t]), 0);
    for (int t = 0; t < SPAWNERS; t++)
        pthread_join(sp[t].thread, NULL);
    for (int t = 0; t < SPAWNERS; t++) {
        cr_assert_eq(sp[t].rc, 0, "spawner %d: %d %s", t, sp[t].rc, sp[t].err);
        for (int i = 0; i < sp[t].n; i++) {
            char fds[1024];
            settled_child_fd_list(sp[t].kids[i].pid, expected, fds, sizeof fds);
            if (strcmp(fds, expected) == 0)
                continue;
            char detail[1024];
            child_fd_detail(sp[t].kids[i].pid, detail, sizeof detail);
            cr_expect_str_eq(fds, expected,
                             "child %d (spawner %d #%d) has fds %s, want %s: a sibling's pipe "
                             "leaked into it (%s)",
                             (int)sp[t].kids[i].pid, t, i, fds, expected, detail);
        }
    }
    for (int t = 0; t < SPAWNERS; t++)
        for (int i = 0; i < sp[t].n; i++)
            kill_and_reap(&sp[t].kids[i]);
    cr_assert_eq(tu_count_children(), 0);
}
