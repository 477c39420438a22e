/* logbuf.c - line splitting and output tail of a worker's log pipe (see logbuf.h). */
#include "logbuf.h"

#include <string.h>

#define CONT_MARK     "... "
#define CONT_MARK_LEN 4

void pypool__logbuf_init(pypool__logbuf *lb)
{
    lb->line_len = 0;
    lb->continued = 0;
    lb->tail_len = 0;
}

static void tail_append(pypool__logbuf *lb, const char *data, size_t n)
{
    if (n >= PYPOOL__LOG_TAIL) {
        memcpy(lb->tail, data + n - PYPOOL__LOG_TAIL, PYPOOL__LOG_TAIL);
        lb->tail_len = PYPOOL__LOG_TAIL;
        return;
    }
    if (lb->tail_len + n > PYPOOL__LOG_TAIL) {
        size_t drop = lb->tail_len + n - PYPOOL__LOG_TAIL;
        memmove(lb->tail, lb->tail + drop, lb->tail_len - drop);
        lb->tail_len -= drop;
    }
    memcpy(lb->tail + lb->tail_len, data, n);
    lb->tail_len += n;
}

static void emit_line(pypool__logbuf *lb, pypool__line_fn emit, void *ud)
{
    if (lb->line_len > 0 && lb->line[lb->line_len - 1] == '\r')
        lb->line_len--;
    lb->line[lb->line_len] = '\0';
    emit(ud, lb->line);
    lb->line_len = 0;
}

void pypool__logbuf_feed(pypool__logbuf *lb, const char *data, size_t n, pypool__line_fn emit,
                         void *ud)
{
    tail_append(lb, data, n);
    for (size_t i = 0; i < n; i++) {
        if (data[i] == '\n') {
            if (lb->line_len > 0 || !lb->continued)
                emit_line(lb, emit, ud);
            lb->continued = 0;
            continue;
        }
        if (lb->line_len == 0 && lb->continued) {
            memcpy(lb->line, CONT_MARK, CONT_MARK_LEN);
            lb->line_len = CONT_MARK_LEN;
            lb->continued = 0;
        }
        lb->line[lb->line_len++] = data[i];
        if (lb->line_len == PYPOOL__LOG_LINE_MAX) {
            emit_line(lb, emit, ud);
            lb->continued = 1;
        }
    }
}

void pypool__logbuf_flush(pypool__logbuf *lb, pypool__line_fn emit, void *ud)
{
    if (lb->line_len > 0)
        emit_line(lb, emit, ud);
    lb->continued = 0;
}

void pypool__logbuf_tail(const pypool__logbuf *lb, char *out, size_t len)
{
    if (len == 0)
        return;
    size_t n = lb->tail_len < len - 1 ? lb->tail_len : len - 1;
    memcpy(out, lb->tail + lb->tail_len - n, n);
    out[n] = '\0';
}
