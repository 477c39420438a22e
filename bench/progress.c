/*
 * progress.c - a one-line progress bar on stderr, redrawn in place, only when stderr is a
 * terminal (quiet in CI and pipes). bench_warn clears the line first so warnings stay readable.
 */
#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

#include "bench.h"

#define BAR_WIDTH 30

static const char *cur_scenario;
static unsigned cur_total, cur_done;
static int is_tty = -1;
static bool drawn;

static bool tty(void)
{
    if (is_tty < 0)
        is_tty = isatty(STDERR_FILENO);
    return is_tty;
}

static void clear_line(void)
{
    if (drawn)
        fputs("\r\033[K", stderr);
    drawn = false;
}

static void draw(const char *what)
{
    if (!tty() || !cur_scenario)
        return;
    unsigned fill = cur_total ? cur_done * BAR_WIDTH / cur_total : 0;
    char bar[BAR_WIDTH + 1];
    for (unsigned i = 0; i < BAR_WIDTH; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[BAR_WIDTH] = '\0';
    clear_line();
    fprintf(stderr, "%-11s [%s] %u/%u %s", cur_scenario, bar, cur_done, cur_total,
            what ? what : "");
    fflush(stderr);
    drawn = true;
}

void progress_begin(const char *scenario, unsigned total)
{
    cur_scenario = scenario;
    cur_total = total;
    cur_done = 0;
    draw("");
}

void progress_step(const char *what)
{
    if (cur_done < cur_total)
        cur_done++;
    draw(what);
}

void progress_end(void)
{
    clear_line();
    cur_scenario = NULL;
}

void bench_warn(const char *fmt, ...)
{
    va_list ap;
    clear_line();
    fputs("pypool-bench: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}
