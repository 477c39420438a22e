/*
 * frame.c - layer 0: the length-prefixed frame reader and writer (see frame.h).
 *
 * Design notes:
 * - The reader keeps one buffer per channel. Small frames share a 64 KiB buffer; a large frame
 *   grows it to exactly header + length (checked against max_frame *before* allocating). The
 *   large buffer is kept while large frames keep coming (page-faulting 16 MiB afresh per call
 *   costs more than the copy itself) and given back after READER_SHRINK_AFTER small frames in a
 *   row, so a worker that once saw a 50 MiB payload does not pin it forever.
 * - Writes go to an O_NONBLOCK pipe so a worker that stops reading cannot block the caller past
 *   its deadline. The pool keeps a read end of every request pipe, so its writes can never fail
 *   with EPIPE or raise SIGPIPE, and no signal mask is touched.
 * - Callers wait for readability themselves (the client's blocking read, the reaper's poll).
 */
#define _GNU_SOURCE
#include "frame.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "pypool.h"

#define READER_DEFAULT_CAP  (64 * 1024)
#define READER_SHRINK_OVER  (1024 * 1024)
#define READER_SHRINK_AFTER 64

void pypool__reader_init(pypool__reader *r, int fd, uint32_t max_frame)
{
    memset(r, 0, sizeof *r);
    r->fd = fd;
    r->max_frame = max_frame;
}

void pypool__reader_free(pypool__reader *r)
{
    free(r->buf);
    r->buf = NULL;
    r->cap = r->start = r->end = r->pending = 0;
}

static uint32_t get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

void pypool__frame_put_header(uint8_t out[PYPOOL__FRAME_HEADER], uint32_t n)
{
    out[0] = (uint8_t)(n >> 24);
    out[1] = (uint8_t)(n >> 16);
    out[2] = (uint8_t)(n >> 8);
    out[3] = (uint8_t)n;
}

/* Drops the frame handed out last; resets the buffer when it runs empty and shrinks a large
 * one after a run of small frames. */
static void drop_pending(pypool__reader *r)
{
    if (r->pending)
        r->small_run = r->pending > READER_DEFAULT_CAP ? 0 : r->small_run + 1;
    r->start += r->pending;
    r->pending = 0;
    if (r->start != r->end)
        return;
    r->start = r->end = 0;
    if (r->cap > READER_SHRINK_OVER && r->small_run >= READER_SHRINK_AFTER) {
        free(r->buf);
        r->buf = NULL;
        r->cap = 0;
    }
}

/* Makes room for `need` contiguous bytes from start (compacting, then growing). */
static int reserve(pypool__reader *r, size_t need)
{
    if (r->start > 0 && r->cap - r->start < need) {
        memmove(r->buf, r->buf + r->start, r->end - r->start);
        r->end -= r->start;
        r->start = 0;
    }
    if (r->cap - r->start >= need)
        return 0;
    size_t cap = need < READER_DEFAULT_CAP ? READER_DEFAULT_CAP : need;
    uint8_t *buf = realloc(r->buf, cap);
    if (!buf)
        return PYPOOL_ENOMEM;
    r->buf = buf;
    r->cap = cap;
    return 0;
}

int pypool__reader_next(pypool__reader *r, const uint8_t **body, uint32_t *len)
{
    if (r->err)
        return r->err;
    drop_pending(r);
    size_t have = r->end - r->start;
    if (have < PYPOOL__FRAME_HEADER)
        return reserve(r, PYPOOL__FRAME_HEADER);
    uint32_t n = get_be32(r->buf + r->start);
    if (n > r->max_frame) {
        r->err = PYPOOL_EPROTO;
        return r->err;
    }
    size_t whole = (size_t)PYPOOL__FRAME_HEADER + n;
    if (have < whole)
        return reserve(r, whole);
    *body = r->buf + r->start + PYPOOL__FRAME_HEADER;
    *len = n;
    r->pending = whole;
    return 1;
}

int pypool__reader_fill(pypool__reader *r)
{
    if (r->err)
        return r->err;
    if (r->end == r->cap) {
        int rc = reserve(r, r->end - r->start + READER_DEFAULT_CAP);
        if (rc)
            return rc;
    }
    ssize_t n = read(r->fd, r->buf + r->end, r->cap - r->end);
    if (n > 0) {
        r->end += (size_t)n;
        return (int)(n > 0x7fffffff ? 0x7fffffff : n);
    }
    if (n == 0) {
        /* EOF between frames is a clean close; inside one the peer died mid-write. */
        r->err = (r->end - r->start - r->pending) == 0 ? PYPOOL_EWORKER : PYPOOL_EPROTO;
        return r->err;
    }
    if (errno == EAGAIN || errno == EINTR)
        return 0;
    r->err = PYPOOL_EWORKER;
    return r->err;
}

int pypool__reader_feed(pypool__reader *r, const void *data, size_t len)
{
    drop_pending(r);
    if (reserve(r, r->end - r->start + len) != 0)
        return PYPOOL_ENOMEM;
    if (len)
        memcpy(r->buf + r->end, data, len);
    r->end += len;
    return 0;
}

/* Advances iov past n written bytes. */
static void iov_advance(struct iovec **iov, int *iovcnt, size_t n)
{
    while (*iovcnt > 0 && n >= (*iov)->iov_len) {
        n -= (*iov)->iov_len;
        (*iov)++;
        (*iovcnt)--;
    }
    if (*iovcnt > 0) {
        (*iov)->iov_base = (uint8_t *)(*iov)->iov_base + n;
        (*iov)->iov_len -= n;
    }
}

/* Waits until fd is writable; data or a hangup on hup_fd (if >= 0) ends the wait early. */
static int wait_writable(int fd, int hup_fd, int64_t deadline_ns)
{
    struct pollfd pfd[2] = {{.fd = fd, .events = POLLOUT}, {.fd = hup_fd, .events = POLLIN}};
    int timeout = pypool__poll_timeout_ms(deadline_ns);
    if (timeout == 0)
        return PYPOOL_ETIMEDOUT;
    int ready = poll(pfd, hup_fd >= 0 ? 2 : 1, timeout);
    if (ready < 0 && errno != EINTR)
        return PYPOOL_ESYS;
    if (ready > 0 && hup_fd >= 0 && pfd[1].revents)
        return PYPOOL_EWORKER;
    return 0; /* writable, EINTR or timeout: the caller retries and rechecks the deadline */
}

static int write_loop(int fd, int hup_fd, struct iovec *iov, int iovcnt, int64_t deadline_ns,
                      size_t *written)
{
    while (iovcnt > 0) {
        ssize_t n = writev(fd, iov, iovcnt > IOV_MAX ? IOV_MAX : iovcnt);
        if (n > 0) {
            *written += (size_t)n;
            iov_advance(&iov, &iovcnt, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EPIPE)
            return PYPOOL_EWORKER;
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno != EAGAIN)
            return PYPOOL_ESYS;
        int rc = wait_writable(fd, hup_fd, deadline_ns);
        if (rc)
            return rc;
    }
    return 0;
}

int pypool__frame_write_held(int fd, int hup_fd, struct iovec *iov, int iovcnt, int64_t deadline_ns,
                             size_t *written)
{
    size_t ignored = 0;
    return write_loop(fd, hup_fd, iov, iovcnt, deadline_ns, written ? written : &ignored);
}

bool pypool__fd_wait_readable(int fd, int64_t deadline_ns)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    for (;;) {
        int ready = poll(&pfd, 1, pypool__poll_timeout_ms(deadline_ns));
        if (ready > 0 || (ready < 0 && errno != EINTR))
            return true; /* readable, hung up or broken: the read that follows says which */
        if (ready == 0)
            return false;
    }
}
