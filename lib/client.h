/* client.h - layer 2, client side: what the public calling API (client.c) shares with streams
 * (stream.c): argument checks, routing a request to a worker (sessions included), giving the
 * worker back. */
#ifndef PYPOOL_CLIENT_H
#define PYPOOL_CLIENT_H

#include "result.h"
#include "slots.h"

/* A worker (or a lane of one) checked out for one request, and the session binding it serves. */
typedef struct pypool__acquired {
    pypool__slot *s;
    int lane;      /* -1: an exclusive worker */
    bool bound;    /* the session was bound before this request */
    unsigned slot; /* where the request went, and that worker's generation */
    uint64_t gen;
} pypool__acquired;

/* EINVAL (with out's message) for a bad method, payload or size. */
int pypool__check_call_args(const pypool *p, const char *method, const void *payload, size_t len,
                            pypool_result *out);

/* Routes (a session's request to its worker), checks out and binds a new session; pre (may be
 * NULL) lets the thread handing over an exclusive worker send the request itself. 0,
 * PYPOOL__ERETRY (route again), or the error, in out too. */
int pypool__acquire(pypool *p, const char *session_id, int64_t deadline, bool nowait,
                    const pypool__prereq *pre, pypool__acquired *a, pypool_result *out);
/* The worker died without reading the request: PYPOOL__ERETRY, or ESESSION if the session's
 * state died with it. */
int pypool__unsent(pypool *p, const char *session_id, const pypool__acquired *a,
                   pypool_result *out);
/* Checks a worker (or its lane) back in; reason != NONE has it replaced. */
void pypool__give_back(pypool *p, pypool__slot *s, int lane, int reason);

#endif
