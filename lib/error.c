/* error.c - error strings and the thread-local last-error detail (see error.h). */
#define _GNU_SOURCE
#include "error.h"

#include <stdio.h>
#include <stdlib.h>

#include "pypool.h"

#define PYPOOL__ERRBUF 4096

static _Thread_local char last_error[PYPOOL__ERRBUF];

const char *pypool_strerror(int err)
{
    switch (err) {
    case PYPOOL_OK:
        return "success";
    case PYPOOL_EINVAL:
        return "invalid argument";
    case PYPOOL_ENOMEM:
        return "out of memory";
    case PYPOOL_ETIMEDOUT:
        return "deadline passed";
    case PYPOOL_EBUSY:
        return "too many waiters";
    case PYPOOL_ESHUTDOWN:
        return "pool is shutting down";
    case PYPOOL_ESPAWN:
        return "worker could not be started";
    case PYPOOL_EWORKER:
        return "worker died during the call";
    case PYPOOL_EPROTO:
        return "protocol error";
    case PYPOOL_EREMOTE:
        return "Python handler raised an exception";
    case PYPOOL_ESESSION:
        return "session lost (its worker died or was recycled)";
    case PYPOOL_ESYS:
        return "system call failed";
    default:
        return "unknown error";
    }
}

const char *pypool_last_error(void)
{
    return last_error;
}

int pypool__set_error(int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return err;
}

void pypool__clear_error(void)
{
    last_error[0] = '\0';
}

char *pypool__strdup_printf(const char *fmt, ...)
{
    char *s = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    return n < 0 ? NULL : s;
}

#ifdef PYPOOL_DEBUG
_Noreturn void pypool__assert_failed(const char *cond, const char *file, int line)
{
    fprintf(stderr, "pypool: %s:%d: invariant broken: %s\n", file, line, cond);
    abort();
}
#endif
