/*
 * state.h - the slot state machine as an explicit state x event table (s6 style). Every state
 * change in lib/ goes through pypool__transition, which aborts on a transition the table does
 * not allow: an impossible transition is a bug, never something to limp on from.
 */
#ifndef PYPOOL_STATE_H
#define PYPOOL_STATE_H

enum pypool__event {
    PYPOOL__EV_SPAWN = 0,  /* the reaper started a worker */
    PYPOOL__EV_HELLO,      /* the worker said Hello */
    PYPOOL__EV_START_FAIL, /* died / timed out / bad Hello before serving: retry later */
    PYPOOL__EV_CRASH_LOOP, /* too many failed starts in a row: give up until warm */
    PYPOOL__EV_CHECKOUT,   /* a client took it */
    PYPOOL__EV_CHECKIN,    /* the client returned it healthy */
    PYPOOL__EV_BREAK,      /* died, timed out, broke the protocol, or is to be retired */
    PYPOOL__EV_PING,       /* the reaper sent a health ping */
    PYPOOL__EV_PONG,       /* the ping was answered */
    PYPOOL__EV_BACKOFF,    /* the reaper retired a broken worker; restart after a delay */
    PYPOOL__EV_WARM,       /* pypool_warm resets a FAILED slot */
    PYPOOL__EV_STOP,       /* the pool shut the slot down */
    PYPOOL__EV_COUNT
};

struct pypool__slot;
/* Applies event to the slot's state (caller holds the pool mutex). Aborts if not allowed. */
void pypool__transition(struct pypool__slot *s, int event);

#endif
