/* clock.c - monotonic clock and deadline arithmetic (see clock.h). */
#include "clock.h"

#include <time.h>

int64_t pypool__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t pypool__deadline_after_ms(int64_t ms)
{
    return ms < 0 ? PYPOOL__NO_DEADLINE : pypool__deadline_at_ms(pypool__now_ns(), ms);
}

int64_t pypool__deadline_at_ms(int64_t now_ns, int64_t ms)
{
    if (ms < 0)
        return PYPOOL__NO_DEADLINE;
    const int64_t cap = INT64_MAX / 4;
    int64_t ns = ms > cap / PYPOOL__MS ? cap : ms * PYPOOL__MS;
    return now_ns + ns;
}

int pypool__poll_timeout_ms(int64_t deadline_ns)
{
    if (deadline_ns < 0)
        return -1;
    int64_t left = deadline_ns - pypool__now_ns();
    if (left <= 0)
        return 0;
    int64_t ms = (left + PYPOOL__MS - 1) / PYPOOL__MS;
    return ms > 0x7fffffff ? 0x7fffffff : (int)ms;
}

int64_t pypool__deadline_min(int64_t a, int64_t b)
{
    if (a < 0)
        return b;
    if (b < 0)
        return a;
    return a < b ? a : b;
}

int64_t pypool__ms_left(int64_t deadline_ns, int64_t now_ns)
{
    if (deadline_ns < 0)
        return 0;
    int64_t left = (deadline_ns - now_ns) / PYPOOL__MS;
    return left > 0 ? left : 1;
}
