/* result.h - layer 0: results (pypool_result) and their errors. */
#ifndef PYPOOL_RESULT_H
#define PYPOOL_RESULT_H

#include "pypool.h"

/* Sets out's error message (unless it has one; out may be NULL) and the thread's last error;
 * returns err. msg NULL or "": pypool_strerror(err). */
int pypool__result_error(pypool_result *out, int err, const char *msg);

/* Replaces out's error message with a formatted one (also the thread's last error); returns
 * err. */
int pypool__result_fail(pypool_result *out, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
