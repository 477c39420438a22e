/*
 * frameio.c - blocking frame I/O for tests and fuzzers, built on the library's reader and
 * writer: read a whole frame with a deadline, and write one to a pipe whose reader may be gone
 * (SIGPIPE blocked in the calling thread for the write, and a SIGPIPE it raised consumed).
 */
#define _GNU_SOURCE
#include "frameio.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <time.h>

#include "clock.h"
#include "pypool.h"

int pypool__frame_read(pypool__reader *r, int64_t deadline_ns, const uint8_t **body, uint32_t *len)
{
    for (;;) {
        int rc = pypool__reader_next(r, body, len);
        if (rc != 0)
            return rc;
        struct pollfd pfd = {.fd = r->fd, .events = POLLIN};
        int timeout = pypool__poll_timeout_ms(deadline_ns);
        int ready = poll(&pfd, 1, timeout);
        if (ready < 0 && errno != EINTR)
            return PYPOOL_ESYS;
        if (ready == 0 && pypool__poll_timeout_ms(deadline_ns) == 0)
            return PYPOOL_ETIMEDOUT;
        if (ready > 0) {
            rc = pypool__reader_fill(r);
            if (rc < 0)
                return rc;
        }
    }
}

/* Consumes a SIGPIPE that our own write made pending in this thread. */
static void consume_sigpipe(void)
{
    sigset_t pipe_set;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    struct timespec zero = {0, 0};
    while (sigtimedwait(&pipe_set, NULL, &zero) < 0 && errno == EINTR)
        ;
}

int pypool__frame_write(int fd, struct iovec *iov, int iovcnt, int64_t deadline_ns, size_t *written)
{
    sigset_t pipe_set, old;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
    size_t ignored = 0;
    int rc =
        pypool__frame_write_held(fd, -1, iov, iovcnt, deadline_ns, written ? written : &ignored);
    if (rc == PYPOOL_EWORKER)
        consume_sigpipe();
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}
