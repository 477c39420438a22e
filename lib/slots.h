/*
 * slots.h - the slot core (layer 1): the pool's structures, its mutex, the slot array, the idle
 * stack, the waiter queue, the kick that wakes the reaper, and the slot actions (slots.c).
 *
 * Design notes (where threads meet):
 *
 * Threads. Client threads (the host's) check workers out and do their own request I/O; one
 * reaper thread per pool (reaper.c) owns child lifecycle: spawn, handshake, log pipes, exits,
 * restarts, pings, shutdown. No thread sits between a client and its worker.
 *
 * Lock. One mutex per pool, `mu`, guards: every field of struct pypool__slot marked [mu], the
 * idle stack, the waiter queue, the session map, the counters and the pool flags. Nothing else
 * is ever locked while `mu` is held (no lock order to get wrong), and `mu` is never held
 * across blocking I/O, a spawn or a callback.
 *
 * Ownership of a slot's channel (reader, wbuf, req/resp fds, request ids) follows its state:
 * BUSY -> the holder thread alone; STARTING and PINGING -> the reaper alone; otherwise
 * nobody uses it and the reaper may close it. The hand-over is a state change under `mu`,
 * which also publishes the channel's memory. The reaper may reap a BUSY slot's pid and record
 * its exit status, but closes nothing the holder uses; the holder returns a broken slot at
 * checkin and the reaper then retires the child. A multiplexed worker (lanes) is shared:
 * writers of its request pipe take the slot's `wmu`; its reply pipe and reader belong to the
 * holder of the reader role (rx.c, handed over under `mu`); its fds stay open until the last
 * lane is released, which is when a broken one is retired.
 *
 * Log pipes and logbufs belong to the reaper alone, in every state.
 *
 * Lifetime. `refs` (atomic, not under mu: two lock round trips fewer per call) counts the
 * owner (until pypool_destroy) plus every thread inside a public function plus every
 * explicitly checked-out worker; the last one out frees the pool, so a thread woken by destroy
 * never touches freed memory. Its top bit is set by destroy: from then on nobody can enter.
 */
#ifndef PYPOOL_SLOTS_H
#define PYPOOL_SLOTS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "codec.h"
#include "frame.h"
#include "histogram.h"
#include "logbuf.h"
#include "proc.h"
#include "pypool.h"

/* Why a slot's worker is being replaced; decides restart delay and which counter moves. */
enum pypool__break_reason {
    PYPOOL__BREAK_NONE = 0,
    PYPOOL__BREAK_CRASH,    /* exited unexpectedly (idle or busy) */
    PYPOOL__BREAK_PROTO,    /* wrote something that is not a valid frame */
    PYPOOL__BREAK_TIMEOUT,  /* killed: a call passed its deadline */
    PYPOOL__BREAK_PING,     /* killed: did not answer a ping */
    PYPOOL__BREAK_RETIRE,   /* recycled: max calls or RSS */
    PYPOOL__BREAK_SHUTDOWN, /* the pool is shutting down */
};

struct pypool_worker {
    struct pypool *pool;
    struct pypool__slot *slot;
    /* Multiplexed pools: a checkout is one lane, and its handle is allocated per checkout
     * (an orphaned lane may be reused while the caller still holds the handle). */
    int lane;      /* -1: the whole (exclusive) worker, the slot's own handle */
    bool used;     /* a call went out on the lane: the next needs a fresh request id */
    bool orphaned; /* a call timed out: the lane is the pool's now */
    int broken;    /* a call broke the worker: the reason for checkin */
};

/*
 * Multiplexed workers (max_inflight > 1): a slot has max_inflight lanes, one per call it may
 * hold. Every lane field is [mu]. Whoever holds the slot's reader role (rx.c: a caller, or the
 * reaper for orphans) reads the worker's reply pipe and queues each frame on the lane its id
 * names; the lane's owner thread takes them off (mux.c).
 */
enum pypool__lane_state {
    PYPOOL__LANE_FREE = 0,
    PYPOOL__LANE_OWNED,  /* a thread holds it: the owner releases it */
    PYPOOL__LANE_ORPHAN, /* the owner gave up (Cancel sent): freed by the final reply or exit */
};

/* A frame the reaper routed to a lane, waiting for its owner. */
typedef struct pypool__rx {
    struct pypool__rx *next;
    Pypool__Envelope *env;
    size_t bytes;
} pypool__rx;

/* Request ids of a multiplexed worker carry their lane in the low bits. */
#define PYPOOL__LANE_BITS 12
#define PYPOOL__LANE_MASK ((1u << PYPOOL__LANE_BITS) - 1)

typedef struct pypool__lane {
    int state;        /* enum pypool__lane_state */
    uint64_t id;      /* the request in flight on it */
    pypool__rx *head; /* frames for the owner, oldest first */
    pypool__rx *tail;
    unsigned queued;     /* frames in the queue */
    size_t queued_bytes; /* and their size: over the window, the reaper stops reading */
    int err;             /* the worker is gone: PYPOOL_EWORKER (the queue is still served) */
    bool final;          /* the final Response is queued: nothing more will come */
    uint64_t req_start;  /* offset of its request in the request pipe (bytes; [wmu] writer) */
    int64_t grace_ns;    /* ORPHAN: the worker is killed if the final reply is not in by then */
    bool cancel_sent;    /* ORPHAN: its Cancel is written */
    /* The owner's request was written by the thread that handed the lane over (before the
     * owner was woken); the owner reads and clears it. */
    bool presented;
    /* [mu] A waiter sleeping through its hand-off (CLAIM_SLEEPING): posted with the lane's
     * next frame or failure, then cleared. */
    atomic_uint *wake_word;
    bool reader_asleep;   /* [mu] its owner sleeps on `signal` with nothing queued: it would take
                             the reader role (rx.c) if woken */
    int64_t presented_ns; /* when the presented request went out (wait_us ends, call_us starts) */
    /* The owner's alone (no lock): replies it got since it took the lane, of which remote
     * errors; folded into the counters when it releases the lane. */
    unsigned served;
    unsigned remote;
    atomic_uint signal; /* futex word: +1 per delivery, so the owner can sleep on it */
} pypool__lane;

typedef struct pypool__slot {
    unsigned index;
    struct pypool_worker handle; /* what pypool_checkout hands out */

    /* [mu] */
    int state; /* enum pypool_slot_state */
    pypool__child child;
    bool reaped;             /* the reaper collected child's exit status */
    int exit_status;         /* valid when reaped */
    uint64_t generation;     /* +1 per worker started here; sessions bind to it */
    uint64_t calls;          /* calls of the current worker */
    uint64_t call_limit;     /* recycle threshold with jitter; 0: none */
    uint64_t restarts;       /* workers started here after the first */
    unsigned sessions;       /* sessions bound to the current worker */
    bool want_start;         /* EMPTY slot: a checkout or warm asked the reaper to start it */
    int break_reason;        /* BROKEN: why */
    unsigned start_failures; /* failed starts in a row */
    int64_t backoff_ms;      /* current restart delay */
    int64_t ready_ns;        /* when the current worker said Hello */
    int64_t idle_since_ns;   /* IDLE: since when (health pings) */
    uint64_t ping_id;
    int64_t busy_since_ns; /* BUSY: since when (leak warnings) */
    pthread_t holder;      /* BUSY: the thread that checked it out */
    /* The one deadline of the slot's state, when the reaper must act (0: none): STARTING, Hello
     * due; BACKOFF, start again; PINGING, Pong due; BUSY, the call in flight's deadline (the
     * reaper kills the worker then). Set right after the transition into the state. */
    int64_t deadline_ns;
    /* Set by the reaper (under mu) to abort the call in flight, then it pokes the reply pipe;
     * read by the holder without the lock before every read(): 0, ETIMEDOUT or EWORKER. */
    atomic_int call_abort;
    bool leak_warned;

    /* channel: see "Ownership" above */
    pypool__reader reader;
    pypool__wbuf wbuf;
    uint64_t next_id;
    uint64_t served;      /* replies received by the current worker (folded into calls) */
    uint64_t pend_remote; /* outcomes not yet folded into the pool counters at checkin */
    uint64_t pend_call_timeouts;
    uint64_t pend_proto;
    int pending_break; /* an explicit checkout's call broke the worker: checkin reason */
    /* The request a releasing thread wrote for the new holder (0: none), and its size. */
    uint64_t presented_id;
    size_t presented_bytes;
    int64_t presented_ns; /* when it went out (wait_us ends, call_us starts) */
    bool killed;          /* [mu] we killed it (timeout, ping, protocol): not a crash */

    /* reaper only */
    pypool__logbuf log;

    /* multiplexed workers only (lanes != NULL); see pypool__lane. [mu] unless marked. */
    pypool__lane *lanes;  /* max_inflight of them */
    unsigned *free_lanes; /* stack of free lane indexes */
    unsigned nfree;
    unsigned inflight;        /* lanes not FREE (owned or orphaned) */
    unsigned orphans;         /* ORPHAN lanes: their grace deadlines are the reaper's to watch */
    uint64_t lane_seq;        /* request id = (++lane_seq << PYPOOL__LANE_BITS) | lane */
    bool draining;            /* no new calls: replace the worker once inflight reaches 0 */
    int drain_reason;         /* enum pypool__break_reason to break with then */
    bool rx_paused;           /* a lane's queue is over the window: nobody reads the pipe */
    int rx_role;              /* who reads the reply pipe now (rx.c): none, the reaper, a caller */
    unsigned rx_sleepers;     /* owners asleep with nothing queued (lane.reader_asleep) */
    unsigned rx_sleepthrough; /* waiters sleeping through their hand-off (lane.wake_word) */
    bool rx_dead;             /* a reader saw the worker's pidfd fire: wait for the reaper */
    /* Orphans whose Cancel could not be written yet. Changed under mu; atomic so that a writer
     * can see without mu that nothing is owed (every request write looks). */
    atomic_uint cancels_unsent;
    /* HostCalls of orphaned lanes still owed an error HostReply (the handler waits for one):
     * (id, call_id) pairs, room for 2 * max_inflight allocated with the lanes. nrefusals: as
     * cancels_unsent. */
    uint64_t (*refusals)[2];
    atomic_uint nrefusals;
    /* The request pipe's writers (callers, Cancel, HostReply) take wmu; never while holding mu
     * (mu may be taken under wmu). req_bytes [wmu]: every byte ever written to this worker's
     * request pipe, so req_bytes - FIONREAD is what the worker took. */
    pthread_mutex_t wmu;
    uint64_t req_bytes;
    pypool__wbuf lane_wbuf; /* [wmu] */
} pypool__slot;

/*
 * A thread waiting for a worker: any (want < 0) or one slot (a session's). Whoever decides its
 * fate (a checkin, the reaper, destroy) does it under mu, fills granted or err and posts
 * `decided`; the waiter then returns without taking mu again.
 */
typedef struct pypool__waiter {
    struct pypool__waiter *next;
    struct pypool__waiter *prev;
    int want;                 /* slot index, or -1 for any */
    int granted;              /* slot index handed over, -1 none */
    int err;                  /* non-zero: woken with this error (shutdown, spawn, session lost) */
    int lane;                 /* multiplexed: the lane granted on that slot */
    pthread_t thread;         /* becomes the slot's holder */
    int64_t call_deadline_ns; /* published with the slot (pypool__watch_deadline_locked) */
    atomic_uint decided;      /* 0 while waiting; the futex word */
    /* Exclusive workers: the request the waiter will send, so that the thread handing it the
     * worker can write it at once (the worker then need not wait for this thread to wake). */
    const struct pypool__prereq *pre;
    /* [mu] A releaser took it off the queue: CLAIM_POSTING, it posts `decided` once it has
     * written the request; CLAIM_SLEEPING (a lane whose request it wrote), the lane's first
     * reply frame posts it, so the thread wakes once, to its reply. */
    int claimed;
    bool gave_up; /* [mu] its deadline passed while CLAIM_POSTING: post, do not sleep through */
} pypool__waiter;

enum { PYPOOL__CLAIM_NONE = 0, PYPOOL__CLAIM_POSTING, PYPOOL__CLAIM_SLEEPING };

/* A request described before its worker is known (see pypool__waiter.pre). */
typedef struct pypool__prereq {
    const char *method;
    const char *session_id;
    const void *payload;
    size_t len;
    int64_t deadline_ns;
} pypool__prereq;

/* A child being stopped or already dead whose slot has moved on (reaper only). */
typedef struct pypool__dying {
    pid_t pid;
    int pidfd;
    int log_fd;
    pypool__logbuf log;
    int reason;         /* enum pypool__break_reason */
    bool count_crash;   /* it died on its own: count the crash when reaped */
    int64_t term_at_ns; /* SIGTERM then */
    int64_t kill_at_ns; /* SIGKILL then */
    bool termed;
} pypool__dying;

typedef struct pypool__session pypool__session;

#define PYPOOL__LATENCY_STRIPES 8

struct pypool {
    pypool_config cfg; /* strings point into the copies below */
    char **child_argv; /* NULL-terminated, owned */
    char **child_envp; /* NULL-terminated, owned */
    char *strings;     /* owned copies of cfg strings */

    pthread_mutex_t mu;
    pthread_cond_t state_cv; /* broadcast on slot readiness, start failure, busy->idle, reaped */
    pthread_t reaper;
    bool reaper_started;
    int wake_fd; /* eventfd: wakes the reaper's poll */

    /* [mu] */
    pypool__slot *slots;
    unsigned *idle; /* stack of idle slot indexes */
    unsigned nidle;
    pypool__waiter *wait_head;
    pypool__waiter *wait_tail;
    unsigned nwaiters;
    bool shutting_down;
    bool reaper_done; /* the reaper has exited: checkin closes broken slots itself */
    int64_t shutdown_started_ns;
    atomic_uint refs; /* see "Lifetime"; PYPOOL__REFS_CLOSED once destroy began */
    unsigned busy;
    int64_t reaper_wake_at_ns;  /* the reaper's poll returns by then at the latest (<0: never) */
    uint64_t start_fail_seq;    /* +1 per failed start: lets warm notice failures */
    char *last_spawn_error;     /* the newest start failure's text (malloc) */
    pypool__session **sessions; /* hash buckets */
    unsigned session_buckets;
    uint64_t nsessions;
    pypool_stats counters; /* counters only; per-state fields are computed in stats_get */

    /* lock-free (latency.c): PYPOOL__LATENCY_STRIPES of each, recorded without mu */
    pypool__hist *wait_hist;
    pypool__hist *call_hist;

    /* reaper only */
    pypool__dying *dying;
    unsigned ndying;
    unsigned dying_cap;
    uint64_t rng;
    /* Per-round lists of slot indexes and pids, cfg.size entries each, allocated with the pool:
     * the reaper's stack stays small whatever the pool's size (up to 4096 slots). */
    unsigned *due;        /* slots to spawn this round */
    int *event_pid;       /* pids to log about after the mutex is released */
    int *event_reason;    /* and why */
    unsigned *ping;       /* slots to ping */
    unsigned *leak;       /* slots held too long */
    unsigned *cancel_due; /* multiplexed slots owing a Cancel */
};

#define PYPOOL__REFS_CLOSED 0x80000000u

/* --- the slot actions (slots.c); every *_locked function wants `mu` held ------------------ */

/* Debug builds: aborts unless the calling thread holds the pool mutex. */
#ifdef PYPOOL_DEBUG
void pypool__assert_locked(const pypool *p);
#else
#define pypool__assert_locked(p) ((void)0)
#endif

/* The kick: wakes the reaper's poll (an eventfd write; the reaper only reads it). */
void pypool__kick_locked(pypool *p);
/* Wakes the reaper if it would sleep past at_ns (it must act then). */
void pypool__reaper_due_locked(pypool *p, int64_t at_ns);
/* Publishes a call deadline for the reaper's watch, waking it if it would sleep past it. */
void pypool__watch_deadline_locked(pypool *p, pypool__slot *s, int64_t call_deadline_ns);

void pypool__waiter_append_locked(pypool *p, pypool__waiter *w);
void pypool__waiter_unlink_locked(pypool *p, pypool__waiter *w);
/* Fails every waiter (or those wanting `slot` if >= 0) with err. */
void pypool__fail_waiters_locked(pypool *p, int slot, int err);

void pypool__idle_remove_locked(pypool *p, pypool__slot *s);
/* Take: an IDLE slot becomes `thread`'s, with a call deadline for the reaper to watch. */
void pypool__slot_take_locked(pypool *p, pypool__slot *s, pthread_t thread,
                              int64_t call_deadline_ns);
/* Release: makes a slot IDLE, or hands it straight to the longest waiter that takes it. */
void pypool__slot_release_locked(pypool *p, pypool__slot *s);
/* Release by a thread that will write the new holder's request itself: like release, but the
 * waiter it hands the slot to (returned, NULL if none) is claimed, not yet woken; the caller
 * posts its `decided` word (pypool__wake_post) after the write, without the mutex. */
pypool__waiter *pypool__slot_handoff_locked(pypool *p, pypool__slot *s);
/*
 * Break: the one way a slot's worker is given up (died, timed out, broke the protocol, missed
 * a ping, retired, shutdown): BROKEN with `reason`, its own waiters failed with PYPOOL_ESESSION,
 * the reaper kicked to replace it. The caller kills the child if needed.
 */
void pypool__slot_break_locked(pypool *p, pypool__slot *s, int reason);
/* Stop, after the reaper exited: closes a slot's channel and marks it STOPPED. */
void pypool__slot_close_locked(pypool *p, pypool__slot *s);
/* Abort-call (the reaper): ends the call in flight with err and wakes its blocked reader. */
void pypool__slot_abort_call_locked(pypool__slot *s, int err);
/* Kills the slot's worker group if it is not reaped yet (any thread; takes mu itself). */
void pypool__slot_kill(pypool *p, pypool__slot *s);
/* Is-live: true when no slot can ever serve without pypool_warm (all FAILED/EMPTY). */
bool pypool__unservable_locked(const pypool *p);

/* --- lanes of multiplexed workers (max_inflight > 1; the rest is lanes.h) ------------------ */

/* A slot that can take one more call now: serving, not draining, a lane free. */
bool pypool__lane_open_locked(const pypool *p, const pypool__slot *s);
/* Takes a free lane of an open slot for a new request (IDLE -> BUSY on the first). */
unsigned pypool__lane_take_locked(pypool *p, pypool__slot *s);
/* Gives a new request id to an owned lane (a checked-out lane makes several calls). */
uint64_t pypool__lane_new_id_locked(pypool__slot *s, unsigned lane);
/* Hands free lanes of an open slot to the longest waiters that accept the slot. */
void pypool__lanes_serve_waiters_locked(pypool *p, pypool__slot *s);
/* Starts draining: no new calls; the worker is replaced when the last call is out. */
void pypool__slot_drain_locked(pypool *p, pypool__slot *s, int reason);

#endif
