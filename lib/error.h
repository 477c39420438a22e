/*
 * error.h - the calling thread's last-error detail (pypool_last_error) and helpers that build
 * error messages. The detail is thread-local, so concurrent failures never mix their texts.
 */
#ifndef PYPOOL_ERROR_H
#define PYPOOL_ERROR_H

#include <stdarg.h>

/* Sets the thread's detail to a formatted message and returns err (for `return seterr(...)`). */
int pypool__set_error(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void pypool__clear_error(void);
/* malloc'd printf; NULL on OOM. */
char *pypool__strdup_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Invariants, checked in debug builds (-DPYPOOL_ASSERTIONS=ON or a Debug build): a broken one is
 * a bug, reported with its place, never something to limp on from. */
#ifdef PYPOOL_DEBUG
#define PYPOOL__ASSERT(cond) ((cond) ? (void)0 : pypool__assert_failed(#cond, __FILE__, __LINE__))
_Noreturn void pypool__assert_failed(const char *cond, const char *file, int line);
#else
#define PYPOOL__ASSERT(cond) ((void)0)
#endif

#endif
