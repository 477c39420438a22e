/*
 * pypool.h - a fixed pool of Python worker processes for multi-threaded C programs.
 *
 * A pool keeps `size` Python processes running the user's module. Any thread checks a worker
 * out (with a deadline), sends it a request and reads the reply itself; a worker that crashes,
 * hangs or breaks the protocol is killed, reaped and restarted by the pool's reaper thread
 * without disturbing the host.
 *
 * Thread safety: every function taking a `pypool *` is thread-safe. A `pypool_worker` belongs
 * to the thread that checked it out until it is checked in; do not share it. A `pypool_result`
 * and a `pypool_config` are plain data owned by the caller.
 *
 * Callbacks (`log_fn`) run on a library thread (the reaper, or the calling thread for events
 * of a call) with no library lock held; they must not call back into the same pool's destroy,
 * and they should return promptly: the reaper also enforces call deadlines and restarts.
 *
 * Signals: the library never changes process-wide signal dispositions and never raises
 * SIGPIPE in the host. It reaps only its own children (never waitpid(-1)).
 */
#ifndef PYPOOL_H
#define PYPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PYPOOL_VERSION_MAJOR    0
#define PYPOOL_VERSION_MINOR    2
#define PYPOOL_VERSION_PATCH    0
#define PYPOOL_PROTOCOL_VERSION 2

#if defined(__GNUC__) || defined(__clang__)
#define PYPOOL_API __attribute__((visibility("default")))
#else
#define PYPOOL_API
#endif

typedef struct pypool pypool;               /* opaque */
typedef struct pypool_worker pypool_worker; /* opaque: a checked-out worker */

/* Error codes: PYPOOL_OK == 0, all others negative. */
enum pypool_error {
    PYPOOL_OK = 0,
    PYPOOL_EINVAL = -1,    /* bad argument (NULL, empty method, payload over max_frame_bytes) */
    PYPOOL_ENOMEM = -2,    /* out of memory */
    PYPOOL_ETIMEDOUT = -3, /* the deadline passed (waiting for a worker or for its reply) */
    PYPOOL_EBUSY = -4,     /* max_waiters threads already wait */
    PYPOOL_ESHUTDOWN = -5, /* the pool is being destroyed */
    PYPOOL_ESPAWN = -6,    /* workers cannot be started (see error_message / pypool_last_error) */
    PYPOOL_EWORKER = -7,   /* the worker died during the call */
    PYPOOL_EPROTO = -8,    /* the worker broke the wire protocol */
    PYPOOL_EREMOTE = -9,   /* the Python handler raised (error_type, error_message, traceback) */
    PYPOOL_ESESSION = -10, /* the session's worker was lost; its state is gone; retry rebinds */
    PYPOOL_ESYS = -11,     /* a system call failed (errno text in the message) */
};

/* A static string for any error code (never NULL). */
PYPOOL_API const char *pypool_strerror(int err);

/*
 * Detail of the most recent failure of a pypool function in the calling thread (for example
 * the exit status and stderr tail of a worker that failed to start), or "" if none. The string
 * is thread-local and valid until the next pypool call in this thread.
 */
PYPOOL_API const char *pypool_last_error(void);

/* Log levels passed to log_fn. */
enum pypool_log_level {
    PYPOOL_LOG_ERROR = 0,
    PYPOOL_LOG_WARN = 1,
    PYPOOL_LOG_INFO = 2,   /* pool events: spawn, ready, exit, restart, recycle */
    PYPOOL_LOG_OUTPUT = 3, /* a line a worker wrote to its stdout or stderr */
    PYPOOL_LOG_DEBUG = 4,
};

typedef void (*pypool_log_fn)(void *ud, int level, int worker_pid, const char *line);

/*
 * ABI: pypool_config and pypool_stats grow at their ends from one version to the next. The
 * init/get macros pass the size of the caller's struct, so a program built against an older
 * header keeps working with a newer library: the library reads and writes only that many bytes
 * and gives every field the caller does not know its default. Fields are never reordered.
 */
/*
 * A host function: serves a handler's ctx.host(name, payload). Returns 0 with *reply set to a
 * malloc'ed buffer of *reply_len bytes (the library frees it; NULL with length 0 is an empty
 * reply), or a non-zero code: the handler's ctx.host raises pypool.HostError(code). It runs on
 * the thread that waits for the call, with no pool lock held; it may call into other pools,
 * but not wait on a call of its own pool's worker that made it (that worker is busy).
 */
typedef int (*pypool_host_fn)(void *ud, const char *name, const void *payload, size_t len,
                              void **reply, size_t *reply_len);

#define PYPOOL_MAX_INFLIGHT 4096

typedef struct pypool_config {
    size_t struct_size;      /* set by pypool_config_init: sizeof the caller's struct */
    unsigned size;           /* slots (default 4) */
    const char *python;      /* interpreter; NULL: $PYPOOL_PYTHON, else the one found at build */
    const char *module;      /* user module that registers handlers (required unless worker_argv) */
    const char *python_path; /* prepended to the child's PYTHONPATH (optional, ':'-separated) */
    const char *const
        *worker_argv;            /* custom worker command speaking the protocol (NULL-terminated) */
    const char *const *env;      /* extra "K=V" entries for the child (NULL-terminated, optional) */
    bool lazy;                   /* start workers on demand instead of in pypool_create */
    int64_t startup_timeout_ms;  /* spawn -> Hello (default 10000) */
    int64_t checkout_timeout_ms; /* default for pypool_checkout (default 5000) */
    int64_t call_timeout_ms;  /* default for calls: one deadline over waiting + running (30000) */
    uint32_t max_frame_bytes; /* largest frame either way (default 64 MiB) */
    unsigned max_waiters;     /* 0 = unbounded; else PYPOOL_EBUSY at once when full */
    uint64_t max_calls_per_worker; /* 0 = never recycle; else recycle after ~N calls (+-10%) */
    int64_t shutdown_grace_ms; /* destroy: drain, Shutdown, SIGTERM, then SIGKILL (default 5000) */
    pypool_log_fn log_fn; /* NULL: stderr, "[pypool] pid N: event" / "[worker N] output line" */
    void *log_ud;

    /* supervision (defaults from pypool_config_init) */
    uint64_t
        max_worker_rss_bytes; /* 0 = off; else recycle a worker whose RSS exceeds it after a call */
    int64_t idle_ping_ms;     /* 0 = off; ping a worker idle this long */
    int64_t ping_timeout_ms;  /* a ping unanswered this long kills the worker (default 2000) */
    int64_t leak_warn_ms;     /* 0 = off; warn when a worker is held longer (default 60000) */
    int64_t restart_backoff_min_ms; /* first restart delay after a crash (default 10) */
    int64_t restart_backoff_max_ms; /* cap of the doubling delay (default 5000) */
    unsigned crash_loop_starts;     /* failed starts in a row that mark a slot FAILED (default 3) */

    /* Pool events (ERROR, WARN, INFO, DEBUG) above this level are not delivered; workers' own
     * output (PYPOOL_LOG_OUTPUT) always is. Default PYPOOL_LOG_WARN: a pool's start and stop
     * print nothing. PYPOOL_LOG_INFO shows spawns, exits, restarts and recycles. */
    int log_level;

    /* since 0.3: multiplexed workers and host calls */
    /* Calls one worker may hold at once (default 1: a call has its worker to itself, and a call
     * past its deadline kills it). With N > 1 (at most PYPOOL_MAX_INFLIGHT) calls go to the
     * worker with the fewest in flight; the worker runs async handlers as tasks, threaded ones
     * on its threads and plain ones one at a time, and a call past its deadline is cancelled
     * instead of killing the worker (see cancel_grace_ms). docs/PYTHON.md has the Python side. */
    unsigned max_inflight;
    /* A cancelled call (deadline passed with max_inflight > 1, or a stream closed early) still
     * running this long after its Cancel kills its worker (default 5000). */
    int64_t cancel_grace_ms;
    /* Serves ctx.host(name, payload) from handlers, on the thread waiting for that call (the
     * caller of pypool_call, pypool_session_call, pypool_worker_call or pypool_stream_next).
     * NULL: the handler's ctx.host raises pypool.HostError. */
    pypool_host_fn host_fn;
    void *host_ud;
} pypool_config;

/* Fills the first `struct_size` bytes of *cfg with defaults; use the macro below. */
PYPOOL_API void pypool_config_init_sized(pypool_config *cfg, size_t struct_size);
/* Fills every field with its default. Always call it before setting fields. */
#define pypool_config_init(cfg) pypool_config_init_sized((cfg), sizeof *(cfg))

/*
 * Creates a pool. Unless cfg->lazy, it starts every worker concurrently and returns once all
 * said Hello; if one cannot start, it fails with PYPOOL_ESPAWN (detail: pypool_last_error()).
 * The config's strings are copied.
 */
PYPOOL_API int pypool_create(const pypool_config *cfg, pypool **out);

/*
 * Starts every slot that has no worker (also FAILED ones: a retry) and waits until every slot
 * is ready or timeout_ms passes (< 0: startup_timeout_ms). PYPOOL_ESPAWN if a worker fails to
 * start, PYPOOL_ETIMEDOUT if not all were ready in time.
 */
PYPOOL_API int pypool_warm(pypool *p, int64_t timeout_ms);

/*
 * Refuses new calls (PYPOOL_ESHUTDOWN), wakes every waiter with PYPOOL_ESHUTDOWN, lets calls
 * in flight finish until shutdown_grace_ms (those still running then end with
 * PYPOOL_ESHUTDOWN), then sends Shutdown, SIGTERM, SIGKILL and reaps every child. Returns with
 * no child, fd or thread of the pool left, except fds of workers that are still checked out
 * with pypool_checkout (closed at their pypool_checkin, which stays valid).
 * NULL-safe.
 */
PYPOOL_API void pypool_destroy(pypool *p);

typedef struct pypool_result {
    uint8_t *data;       /* reply payload, owned by the result (NUL-terminated for convenience) */
    size_t len;          /* payload length, without the terminating NUL */
    char *error_type;    /* Python exception class name for PYPOOL_EREMOTE */
    char *error_message; /* human-readable reason for any error */
    char *traceback;     /* Python traceback for PYPOOL_EREMOTE */
    int worker_pid;      /* the worker that served (or failed) the call; 0 if none */
} pypool_result;

/* Frees what a result owns and zeroes it. Idempotent, NULL-safe. */
PYPOOL_API void pypool_result_free(pypool_result *r);

/*
 * Calls `method` in some worker. timeout_ms covers waiting for a worker and the call:
 * < 0: call_timeout_ms; 0: take an idle worker or fail at once with PYPOOL_ETIMEDOUT (the call
 * itself then gets call_timeout_ms). `out` is always initialised (free it with
 * pypool_result_free) and on failure carries error_message. A call that times out mid-flight
 * kills its worker (state unknown), which the pool restarts.
 */
PYPOOL_API int pypool_call(pypool *p, const char *method, const void *payload, size_t len,
                           int64_t timeout_ms, pypool_result *out);

/*
 * Like pypool_call, but on the worker that holds the session's state (ctx.session in Python),
 * waiting for that worker if it is busy. A new session is bound to the worker with the fewest
 * sessions. If its worker died or was recycled, the call returns PYPOOL_ESESSION once (state
 * lost) and the next call rebinds.
 */
PYPOOL_API int pypool_session_call(pypool *p, const char *session_id, const char *method,
                                   const void *payload, size_t len, int64_t timeout_ms,
                                   pypool_result *out);

/* Drops the session's state in its worker. PYPOOL_OK also when the session is unknown. */
PYPOOL_API int pypool_session_close(pypool *p, const char *session_id);

/* Checks a worker out for several calls. timeout_ms < 0: checkout_timeout_ms; 0: no waiting. */
PYPOOL_API int pypool_checkout(pypool *p, int64_t timeout_ms, pypool_worker **out);

/* A call on a checked-out worker. timeout_ms < 0: call_timeout_ms. */
PYPOOL_API int pypool_worker_call(pypool_worker *w, const char *method, const void *payload,
                                  size_t len, int64_t timeout_ms, pypool_result *out);

/* Returns the worker to the pool (or to the reaper, if the call broke it). NULL-safe. */
PYPOOL_API void pypool_checkin(pypool_worker *w);

/* Pid of a checked-out worker's process. */
PYPOOL_API int pypool_worker_pid(const pypool_worker *w);

/* Slot states, as reported in pypool_stats. */
enum pypool_slot_state {
    PYPOOL_SLOT_EMPTY = 0, /* never started (lazy) */
    PYPOOL_SLOT_STARTING,  /* spawned, waiting for Hello */
    PYPOOL_SLOT_IDLE,
    PYPOOL_SLOT_BUSY,    /* checked out */
    PYPOOL_SLOT_PINGING, /* idle, health ping outstanding */
    PYPOOL_SLOT_BROKEN,  /* died, timed out or broke the protocol; the reaper will restart it */
    PYPOOL_SLOT_BACKOFF, /* waiting to restart */
    PYPOOL_SLOT_FAILED,  /* crash loop: not restarted until pypool_warm */
    PYPOOL_SLOT_STOPPED, /* pool shut down */
};

/* Name of a slot state ("idle", ...). */
PYPOOL_API const char *pypool_slot_state_name(int state);

#define PYPOOL_STATS_MAX_SLOTS 64

typedef struct pypool_slot_stats {
    int state;         /* enum pypool_slot_state */
    int pid;           /* current worker process, 0 if none */
    uint64_t calls;    /* calls served by the current worker */
    uint64_t restarts; /* workers started in this slot after the first */
} pypool_slot_stats;

/*
 * A latency histogram in microseconds, log-linear (HdrHistogram style): values below 32 µs have
 * a bucket each; above, every power of two [2^k, 2^(k+1)) is split into 16 equal buckets, so a
 * bucket is at most 1/16 of its values wide and a percentile (the bucket's midpoint) is within
 * 3.2% of the true value. Bucket i covers [lower(i), lower(i) + width(i)): for i < 32,
 * lower = i and width = 1; else with k = i / 16 + 3, lower = (16 + i % 16) << (k - 4) and
 * width = 1 << (k - 4). The last bucket also holds everything above 2^32 µs (~71 minutes).
 */
#define PYPOOL_HISTOGRAM_BUCKETS 464

typedef struct pypool_histogram {
    uint64_t count;  /* values recorded */
    uint64_t sum_us; /* their sum */
    uint64_t max_us; /* the largest */
    uint64_t buckets[PYPOOL_HISTOGRAM_BUCKETS];
} pypool_histogram;

/* The q-quantile (q in [0, 1]) in µs, within the bucket's resolution; 0 for an empty one. */
PYPOOL_API double pypool_histogram_percentile(const pypool_histogram *h, double q);

/* pypool_stats grows at its end (see "ABI" above pypool_config); pypool_slot_stats does not. */
typedef struct pypool_stats {
    unsigned size;
    unsigned idle, busy, starting, backoff, failed; /* slots by state (pinging counts as idle) */
    unsigned waiters;                               /* threads waiting for a worker now */
    uint64_t calls;           /* calls completed with a reply (ok or PYPOOL_EREMOTE) */
    uint64_t remote_errors;   /* PYPOOL_EREMOTE replies */
    uint64_t timeouts;        /* calls that hit their deadline (waiting or running) */
    uint64_t call_timeouts;   /* ... of them, while running (the worker was killed) */
    uint64_t restarts;        /* workers started to replace another */
    uint64_t crashes;         /* workers that exited unexpectedly */
    uint64_t crashes_signal;  /* ... killed by a signal */
    uint64_t crashes_exit;    /* ... exited by themselves */
    uint64_t recycles;        /* workers retired by max_calls_per_worker or RSS */
    uint64_t protocol_errors; /* channels broken by bad frames */
    uint64_t failed_starts;   /* workers that never said Hello */
    uint64_t ping_failures;   /* workers killed for not answering a ping */
    uint64_t leak_warnings;   /* leak_warn_ms exceeded */
    uint64_t sessions;        /* sessions bound now */
    unsigned slot_count;      /* entries filled in slots[] (min(size, PYPOOL_STATS_MAX_SLOTS)) */
    pypool_slot_stats slots[PYPOOL_STATS_MAX_SLOTS];

    /* since 0.2 */
    pypool_histogram wait_us; /* call start -> a worker in hand (calls and checkouts) */
    pypool_histogram call_us; /* request sent -> reply read (calls that got a reply) */
    unsigned inflight;        /* calls in flight now */
    uint64_t cancels;         /* calls and streams given up with a Cancel to their worker
                                 (deadline with max_inflight > 1, stream closed early); one that
                                 ignores it past cancel_grace_ms also counts in call_timeouts */
} pypool_stats;

/* Fills the first `struct_size` bytes of *out; use the macro below. */
PYPOOL_API void pypool_stats_get_sized(pypool *p, pypool_stats *out, size_t struct_size);
/*
 * A consistent snapshot of the pool's counters and slot states (the first
 * PYPOOL_STATS_MAX_SLOTS slots in slots[]; pypool_stats_slots reports any of them). Safe while
 * another thread runs pypool_destroy (not after it returned).
 */
#define pypool_stats_get(p, out) pypool_stats_get_sized((p), (out), sizeof *(out))

/*
 * Copies the state of slots first .. first+max-1 (as many as exist) into out[]; returns how many
 * it copied (0 for a NULL pool or out). For pools larger than PYPOOL_STATS_MAX_SLOTS.
 */
PYPOOL_API unsigned pypool_stats_slots(pypool *p, unsigned first, pypool_slot_stats *out,
                                       unsigned max);

/*
 * Streams: a handler that is a generator (or async generator) yields chunks; the worker sends
 * each as it is yielded.
 *
 * pypool_stream_open checks a worker out (one of its lanes when max_inflight > 1) and sends the
 * request. timeout_ms bounds waiting for a worker plus the whole stream (< 0: call_timeout_ms).
 * pypool_stream_next returns PYPOOL_OK with the next chunk in *chunk (free it with
 * pypool_result_free), PYPOOL_DONE once the stream ended, or an error: PYPOOL_EREMOTE with the
 * handler's exception when it raised (after any chunks), PYPOOL_ETIMEDOUT when no chunk came
 * within timeout_ms (the stream stays usable; < 0 waits until the stream's deadline, after
 * which the stream is over). A handler that does not stream gives one chunk, then PYPOOL_DONE.
 * Once a stream is over, pypool_stream_next keeps returning its final code.
 * pypool_stream_close ends it at any point: an unfinished stream is cancelled (the generator
 * is closed in the worker) and the worker serves again, unless it ignores the cancel for
 * cancel_grace_ms, which kills it. NULL-safe. A stream must be closed before pypool_destroy
 * can finish (destroy ends unfinished streams with PYPOOL_ESHUTDOWN, like calls).
 * One stream is used by one thread at a time.
 */
#define PYPOOL_DONE 1
typedef struct pypool_stream pypool_stream;
PYPOOL_API int pypool_stream_open(pypool *p, const char *session_id, const char *method,
                                  const void *payload, size_t len, int64_t timeout_ms,
                                  pypool_stream **out);
PYPOOL_API int pypool_stream_next(pypool_stream *s, int64_t timeout_ms, pypool_result *chunk);
PYPOOL_API void pypool_stream_close(pypool_stream *s);

enum { PYPOOL_FORMAT_PROMETHEUS = 1, PYPOOL_FORMAT_JSON = 2 };

/*
 * Writes the stats as text, like snprintf: at most cap bytes including the terminating NUL, and
 * returns the length the whole text needs (call with buf NULL, cap 0 to size a buffer), or
 * PYPOOL_EINVAL for a NULL st or an unknown format. PYPOOL_FORMAT_PROMETHEUS is the Prometheus
 * text exposition format (version 0.0.4): counters, gauges and the two histograms in seconds,
 * every series labelled pool="<pool_name>"; PYPOOL_FORMAT_JSON is one JSON object.
 */
PYPOOL_API int pypool_stats_format(const pypool_stats *st, int format, const char *pool_name,
                                   char *buf, size_t cap);

#ifdef __cplusplus
}
#endif

#endif /* PYPOOL_H */
