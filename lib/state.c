/*
 * state.c - the slot state x event table (see state.h and DESIGN.md "Slot states").
 *
 * The table is next_state below: one row per state, one column per event, X where the event
 * cannot happen in that state.
 *
 * EMPTY --CRASH_LOOP--> FAILED: when no slot can serve, the never-started slots of a lazy pool
 * give up with the others (they would fail the same way). BROKEN --SPAWN--> is not used by
 * the reaper today (it goes through BACKOFF with a zero delay) but is a valid shortcut.
 */
#include "state.h"

#include <stdio.h>
#include <stdlib.h>

#include "slots.h"

#define NSTATES (PYPOOL_SLOT_STOPPED + 1)
#define X       (-1)
#define EMPTY   PYPOOL_SLOT_EMPTY
#define START   PYPOOL_SLOT_STARTING
#define IDLE    PYPOOL_SLOT_IDLE
#define BUSY    PYPOOL_SLOT_BUSY
#define PING    PYPOOL_SLOT_PINGING
#define BROKEN  PYPOOL_SLOT_BROKEN
#define BACKOFF PYPOOL_SLOT_BACKOFF
#define FAILED  PYPOOL_SLOT_FAILED
#define STOPPED PYPOOL_SLOT_STOPPED

/* clang-format off */
static const signed char next_state[NSTATES][PYPOOL__EV_COUNT] = {
    /*           SPAWN  HELLO  START_F  LOOP    OUT   IN    BREAK   PING  PONG  BACKOFF  WARM   STOP */
    [EMPTY]   = {START, X,     X,       FAILED, X,    X,    X,      X,    X,    X,       EMPTY, STOPPED},
    [START]   = {X,     IDLE,  BACKOFF, FAILED, X,    X,    X,      X,    X,    X,       X,     STOPPED},
    [IDLE]    = {X,     X,     X,       X,      BUSY, X,    BROKEN, PING, X,    X,       X,     STOPPED},
    [BUSY]    = {X,     X,     X,       X,      X,    IDLE, BROKEN, X,    X,    X,       X,     STOPPED},
    [PING]    = {X,     X,     X,       X,      X,    X,    BROKEN, X,    IDLE, X,       X,     STOPPED},
    [BROKEN]  = {START, X,     X,       X,      X,    X,    X,      X,    X,    BACKOFF, X,     STOPPED},
    [BACKOFF] = {START, X,     X,       X,      X,    X,    X,      X,    X,    X,       X,     STOPPED},
    [FAILED]  = {X,     X,     X,       X,      X,    X,    X,      X,    X,    X,       EMPTY, STOPPED},
    [STOPPED] = {X,     X,     X,       X,      X,    X,    X,      X,    X,    X,       X,     STOPPED},
};
/* clang-format on */

void pypool__transition(pypool__slot *s, int event)
{
    int next = X;
    if (s->state >= 0 && s->state < NSTATES && event >= 0 && event < PYPOOL__EV_COUNT)
        next = next_state[s->state][event];
    if (next == X) {
        fprintf(stderr, "pypool: slot %u: event %d not allowed in state %s\n", s->index, event,
                pypool_slot_state_name(s->state));
        abort();
    }
    s->state = next;
}

const char *pypool_slot_state_name(int state)
{
    static const char *const names[NSTATES] = {
        [EMPTY] = "empty",     [START] = "starting", [IDLE] = "idle",
        [BUSY] = "busy",       [PING] = "pinging",   [BROKEN] = "broken",
        [BACKOFF] = "backoff", [FAILED] = "failed",  [STOPPED] = "stopped",
    };
    return state >= 0 && state < NSTATES ? names[state] : "unknown";
}
