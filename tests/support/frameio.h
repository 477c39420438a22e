/* frameio.h - blocking frame I/O for tests and fuzzers (frameio.c). */
#ifndef PYPOOL_TEST_FRAMEIO_H
#define PYPOOL_TEST_FRAMEIO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "frame.h"

/*
 * Blocks until a whole frame arrived or the deadline (monotonic ns, < 0 none) passed.
 * Returns 1 with the frame, PYPOOL_ETIMEDOUT (not sticky), or the sticky error.
 */
int pypool__frame_read(pypool__reader *r, int64_t deadline_ns, const uint8_t **body, uint32_t *len);

/*
 * Writes a whole frame before the deadline to an O_NONBLOCK fd whose reader may be gone:
 * PYPOOL_EWORKER for EPIPE, never a SIGPIPE left for the process.
 */
int pypool__frame_write(int fd, struct iovec *iov, int iovcnt, int64_t deadline_ns,
                        size_t *written);

#endif
