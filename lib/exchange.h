/*
 * exchange.h - layer 2, client side: what comes back for one request, whoever delivers it (the
 * caller reading an exclusive worker's pipe itself, call.c, or the reaper routing frames to a
 * multiplexed worker's lane, mux.c): stream chunks, the final Response, and host calls, which
 * are served here on the caller's thread.
 *
 * The delivering side is reached through the two function pointers, so this file depends on
 * neither: both call into it.
 */
#ifndef PYPOOL_EXCHANGE_H
#define PYPOOL_EXCHANGE_H

#include "slots.h"

typedef struct pypool__xchg pypool__xchg;

/* Internal: until_ns passed before the next frame; the exchange goes on (never returned to a
 * user as such: a stream reports PYPOOL_ETIMEDOUT). */
#define PYPOOL__EUNTIL (-102)

struct pypool__xchg {
    pypool *p;
    pypool__slot *s;
    uint64_t id;
    const char *method;
    /* The next frame for this request (a Response or HostCall carrying its id), waiting until
     * until_ns at most (< 0: as long as the call may run). 0 with *env (the caller frees it),
     * PYPOOL__EUNTIL when until_ns passed first, or the source's error (< 0). */
    int (*next)(pypool__xchg *x, int64_t until_ns, Pypool__Envelope **env);
    /* Writes one whole frame (a HostReply) to the worker; 0 or an error. */
    int (*send)(pypool__xchg *x, const void *frame, size_t len);
    bool over;     /* the final Response arrived */
    size_t chunks; /* chunks received so far */
    int lane;      /* multiplexed: the lane (-1: exclusive) */
    int64_t deadline_ns;
};

/* Moves a final Response into the result: PYPOOL_OK, PYPOOL_EREMOTE or PYPOOL_ENOMEM. */
int pypool__xchg_fill(Pypool__Response *resp, pypool_result *out);

/* Serves a HostCall with cfg.host_fn on this thread and sends the HostReply. 0, or the send's
 * error (the channel is then unusable). */
int pypool__xchg_host_call(pypool__xchg *x, const Pypool__HostCall *call);

/*
 * Runs the exchange to its final Response, serving host calls; a stream's chunks are joined.
 * PYPOOL_OK or PYPOOL_EREMOTE (a joined stream longer than max_frame_bytes is an EREMOTE of
 * type FrameTooLarge, with the exchange unfinished: x->over is false), or the source's error.
 */
int pypool__xchg_collect(pypool__xchg *x, pypool_result *out);

/*
 * Streams: the next chunk (PYPOOL_OK), PYPOOL_DONE at the end, PYPOOL_EREMOTE when the handler
 * raised, PYPOOL__EUNTIL if until_ns passed (the exchange goes on), or the source's error.
 */
int pypool__xchg_chunk(pypool__xchg *x, int64_t until_ns, pypool_result *chunk);

/* Streams being closed: reads and drops what is left until the final Response (host calls get
 * an error); 0, or the source's error. */
int pypool__xchg_drain(pypool__xchg *x);

#endif
