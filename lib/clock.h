/*
 * clock.h - monotonic time in nanoseconds and absolute deadlines. Every blocking operation in
 * pypool takes one absolute deadline (CLOCK_MONOTONIC ns, or PYPOOL__NO_DEADLINE), so waiting
 * for a worker and running the call share one budget.
 */
#ifndef PYPOOL_CLOCK_H
#define PYPOOL_CLOCK_H

#include <stdint.h>

#define PYPOOL__NO_DEADLINE ((int64_t)-1)
#define PYPOOL__MS          ((int64_t)1000000)

int64_t pypool__now_ns(void);
/* now + ms, saturating; ms < 0 means no deadline. */
int64_t pypool__deadline_after_ms(int64_t ms);
/* The same from a time already read (a call's start serves its deadline and its wait_us). */
int64_t pypool__deadline_at_ms(int64_t now_ns, int64_t ms);
/* Milliseconds left until the deadline for poll(): -1 none, 0 passed, else rounded up. */
int pypool__poll_timeout_ms(int64_t deadline_ns);
/* Whole ms left until the deadline, as a request carries it to the worker: 0 for none, at least
 * 1 for one that is (nearly) due. */
int64_t pypool__ms_left(int64_t deadline_ns, int64_t now_ns);
/* Earlier of two deadlines, where PYPOOL__NO_DEADLINE is "later than anything". */
int64_t pypool__deadline_min(int64_t a, int64_t b);

#endif
