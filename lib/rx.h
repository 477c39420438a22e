/* rx.h - layer 1: the reader role of a multiplexed worker's reply pipe (see rx.c). */
#ifndef PYPOOL_RX_H
#define PYPOOL_RX_H

#include "lanes.h"

#define PYPOOL__RX_BATCH 32

/* Who reads a multiplexed worker's reply pipe now ([mu] s->rx_role). */
enum { PYPOOL__RX_NONE = 0, PYPOOL__RX_REAPER, PYPOOL__RX_OWNER };

/* With mu held: the pipe can be read (the worker serves, the channel is sound, not paused). */
bool pypool__rx_readable_locked(const pypool__slot *s);
/* With mu held: takes the reader role for `who` if nobody holds it and the pipe is readable. */
bool pypool__rx_claim_locked(pypool__slot *s, int who);
/* With mu held: gives the role up: to a caller asleep on its lane if there is one (it is
 * woken to take it; the wake-up goes into wk, NULL: now), else to the reaper (kicked unless it
 * is the one letting go). */
void pypool__rx_release_locked(pypool *p, pypool__slot *s, pypool__wakes *wk);
/* The role holder, without mu: reads once if `fill` (poll said readable), then routes every
 * complete buffered frame to its lane. Returns the frames routed, or the channel's error (< 0:
 * pass it to pypool__rx_broken after releasing the role). */
int pypool__rx_pump(pypool *p, pypool__slot *s, bool fill);
/* The pipe broke (bad frame): the worker is killed and replaced (EOF: its exit says why). */
void pypool__rx_broken(pypool *p, pypool__slot *s, int rc);

#endif
