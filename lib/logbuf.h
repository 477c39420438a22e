/*
 * logbuf.h - splits a worker's log pipe output into lines for the log callback and keeps the
 * last bytes (the "stderr tail" quoted when a worker fails to start). Owned by the reaper.
 *
 * A line longer than PYPOOL__LOG_LINE_MAX is emitted in pieces, the later ones marked with a
 * leading "... ", so nothing is lost silently.
 */
#ifndef PYPOOL_LOGBUF_H
#define PYPOOL_LOGBUF_H

#include <stddef.h>

#define PYPOOL__LOG_LINE_MAX 4096
#define PYPOOL__LOG_TAIL     2048

typedef void (*pypool__line_fn)(void *ud, const char *line);

typedef struct pypool__logbuf {
    char line[PYPOOL__LOG_LINE_MAX + 8];
    size_t line_len;
    int continued; /* the current line continues a cut one */
    char tail[PYPOOL__LOG_TAIL];
    size_t tail_len;
} pypool__logbuf;

void pypool__logbuf_init(pypool__logbuf *lb);
/* Feeds raw output; calls emit for every complete (or cut) line. */
void pypool__logbuf_feed(pypool__logbuf *lb, const char *data, size_t n, pypool__line_fn emit,
                         void *ud);
/* Emits a pending partial line (at EOF). */
void pypool__logbuf_flush(pypool__logbuf *lb, pypool__line_fn emit, void *ud);
/* Copies the tail as a NUL-terminated string (at most len-1 bytes, the newest kept). */
void pypool__logbuf_tail(const pypool__logbuf *lb, char *out, size_t len);

#endif
