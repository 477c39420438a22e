/*
 * frame.h - length-prefixed frames over pipes: 4-byte big-endian length N, then N bytes.
 *
 * The reader is incremental so that one thread can block on it with a deadline (a client
 * waiting for its reply) while another can feed it from poll() without blocking (the reaper
 * waiting for Hello or Pong). Any short read inside a frame, oversize length or EOF inside a
 * frame makes the reader's error sticky: a channel out of sync is never reused.
 *
 * Not thread-safe: a reader belongs to whoever owns the slot at that moment.
 */
#ifndef PYPOOL_FRAME_H
#define PYPOOL_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#define PYPOOL__FRAME_HEADER 4

typedef struct pypool__reader {
    int fd;
    uint32_t max_frame;
    int err;      /* sticky: 0, PYPOOL_EPROTO (bad frame), PYPOOL_EWORKER (EOF between frames) */
    uint8_t *buf; /* buffered bytes are buf[start, end) */
    size_t cap;
    size_t start;
    size_t end;
    size_t pending;     /* bytes of the frame last returned, dropped at the next call */
    unsigned small_run; /* small frames in a row since the buffer grew large (lazy shrink) */
} pypool__reader;

void pypool__reader_init(pypool__reader *r, int fd, uint32_t max_frame);
void pypool__reader_free(pypool__reader *r);

/*
 * Returns 1 and the next complete frame's body (valid until the next reader call) if one is
 * buffered, 0 if more bytes are needed, or the sticky error (< 0).
 */
int pypool__reader_next(pypool__reader *r, const uint8_t **body, uint32_t *len);

/*
 * One read() of whatever the fd has (call when poll said readable). Returns > 0 bytes read,
 * 0 if nothing was available (EAGAIN/EINTR), or the sticky error (< 0; EOF sets it).
 */
int pypool__reader_fill(pypool__reader *r);

/* Appends bytes as if read from the fd (fuzzing, tests). Returns 0 or PYPOOL_ENOMEM. */
int pypool__reader_feed(pypool__reader *r, const void *data, size_t len);

/*
 * Writes the iovecs (the first must start with the 4-byte header) completely before the
 * deadline, to an O_NONBLOCK pipe of which the caller holds a read end itself (proc.c): no
 * write can fail with EPIPE, so no signal mask is touched (two system calls fewer per call).
 * Returns 0, PYPOOL_ETIMEDOUT (frame partially written: the channel is unusable),
 * PYPOOL_EWORKER, or PYPOOL_ESYS; *written (may be NULL) reports the bytes sent. While the
 * pipe is full, hup_fd (the worker's reply pipe) is watched: anything arriving there (the
 * reaper's wake-up poke, or a worker talking out of turn) ends the write with PYPOOL_EWORKER.
 */
int pypool__frame_write_held(int fd, int hup_fd, struct iovec *iov, int iovcnt, int64_t deadline_ns,
                             size_t *written);

/* Waits until fd is readable (or hung up) or the deadline passes (false). */
bool pypool__fd_wait_readable(int fd, int64_t deadline_ns);

/* Stores n as the 4-byte big-endian header. */
void pypool__frame_put_header(uint8_t out[PYPOOL__FRAME_HEADER], uint32_t n);

#endif
