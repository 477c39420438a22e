/*
 * bench.h - internal declarations of pypool-bench, the benchmark harness.
 *
 * Every scenario measures pypool next to its baselines in the same run, in alternating rounds:
 *   floor    - a raw C thread <-> a minimal Python child (bench/python/floor_worker.py) over two
 *              pipes, same Envelope frames, same interpreter, same payload, no pool;
 *   peer     - concurrent.futures.ProcessPoolExecutor (bench/python/ppe_bench.py);
 *   embedded - the same Python function called from C threads through the GIL (optional).
 * One section per source file below.
 */
#ifndef PYPOOL_BENCH_H
#define PYPOOL_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "pypool.h"

/* ---- main.c: options ------------------------------------------------------------------------ */

#define BENCH_MAX_LIST   16
#define BENCH_MAX_ROUNDS 32

typedef struct bench_list {
    unsigned n;
    unsigned v[BENCH_MAX_LIST];
} bench_list;

typedef struct bench_opts {
    bool quick;
    const char *scenario; /* NULL: all */
    double seconds;       /* measuring window of one point in one round */
    double warmup;        /* warm-up before each window */
    unsigned rounds;      /* alternating rounds; figures are medians over them */
    unsigned min_calls;   /* latency: timed calls per point and round, even past the window */
    bench_list workers;   /* pool sizes (throughput, cpu) */
    bench_list threads;   /* client threads (throughput) */
    const char *json_path;
    const char *plot_dir;
    const char *python; /* worker interpreter (same for every contender) */
    bool pool_broken;   /* pypool failed its smoke call: its column stays empty */
} bench_opts;

/* The contenders, one column each in the tables. */
enum bench_impl { IMPL_POOL, IMPL_FLOOR, IMPL_PEER, IMPL_EMBED, IMPL_COUNT };
const char *bench_impl_name(int impl);

/* ---- clock.c -------------------------------------------------------------------------------- */

int64_t bench_now_ns(void); /* CLOCK_MONOTONIC */

/* ---- stats.c: samples and their percentiles ------------------------------------------------- */

typedef struct samples {
    double *v;
    size_t n, cap;
    bool sorted;
} samples;

void samples_push(samples *s, double x);
void samples_append(samples *dst, const samples *src);
void samples_free(samples *s);
double samples_pct(samples *s, double pct); /* nearest-rank percentile, NAN if empty */
double samples_max(samples *s);
double median_of(const double *v, size_t n); /* NAN if n == 0; ignores NAN entries */

/* ---- results.c: every figure of the run ----------------------------------------------------- */

typedef struct bench_row {
    char scenario[24];
    char label[48]; /* the point: "16 B p50", "workers=2 threads=8" */
    char unit[12];  /* "us", "calls/s", "ms", "x" */
    bool higher_better;
    double v[IMPL_COUNT]; /* NAN: not measured */
    char note[64];        /* what the floor column holds when it is not the echo floor */
    bool no_ratio;        /* the baseline is a reference, not a floor: no ratio column */
} bench_row;

typedef struct bench_series {
    char name[40]; /* plot group: "latency_16", "throughput_w2", "cpu_scaling" */
    int impl;
    size_t n;
    double *x, *y;
} bench_series;

bench_row *results_add(const char *scenario, const char *label, const char *unit,
                       bool higher_better);
bench_row *results_find(const char *scenario, const char *label);
size_t results_count(void);
bench_row *results_at(size_t i);
void results_series(const char *name, int impl, const double *x, const double *y, size_t n);
size_t results_series_count(void);
bench_series *results_series_at(size_t i);
void results_free(void);
void results_set_elapsed(const char *scenario, double seconds);
double results_elapsed(const char *scenario); /* NAN if the scenario did not run */

/* ---- spawn.c: shell-free child processes ---------------------------------------------------- */

typedef struct bench_proc {
    pid_t pid;
    int to_child;   /* parent's end of the child's fd 3 (requests), -1 if none */
    int from_child; /* parent's end of the child's fd 4 (replies), -1 if none */
} bench_proc;

/* Starts argv (argv[0] an absolute path) with fd 0 = /dev/null, 1 = stdout_fd (or inherited if
 * < 0), 2 inherited, 3 = requests in, 4 = replies out, PYTHONPATH = pythonpath. */
int bench_spawn(const char *const *argv, const char *pythonpath, int stdout_fd, bench_proc *out);
/* The same with nreply reply pipes, the child's fds 4 .. 4 + nreply - 1; their read ends go to
 * reply_r (reply_r[0] is also out->from_child, closed by bench_proc_finish; the caller closes
 * the rest). */
#define BENCH_MAX_REPLY_PIPES 64
int bench_spawn_replies(const char *const *argv, const char *pythonpath, int stdout_fd,
                        unsigned nreply, bench_proc *out, int *reply_r);
/* Closes the pipes, then waits for the child; returns its wait status. */
int bench_proc_finish(bench_proc *p);
/* Runs argv to completion and returns its stdout (malloc'd, NUL-terminated) or NULL. */
char *bench_run_capture(const char *const *argv, const char *pythonpath, int *status);
/* PYTHONPATH for the helpers: bench/python + the generated pypool_pb2 directory. */
const char *bench_pythonpath(void);

/* ---- wire.c: the floor's framing (4-byte big-endian length + Envelope) --------------------- */

typedef struct wire_buf {
    uint8_t *data;
    size_t cap;
} wire_buf;

int wire_send_request(int fd, uint64_t id, const char *method, const void *payload, size_t len,
                      wire_buf *scratch);
/* Reads one Response with the given id; its payload length in *out_len. */
int wire_recv_response(int fd, uint64_t id, wire_buf *scratch, size_t *out_len);
void wire_buf_free(wire_buf *b);

/* ---- floor.c: a raw C thread <-> one floor_worker.py child ---------------------------------- */

typedef struct floor_child {
    bench_proc proc;
    uint64_t next_id;
    wire_buf buf;
} floor_child;

int floor_start(const bench_opts *o, floor_child *c);
int floor_call(floor_child *c, const char *method, const void *payload, size_t len);
void floor_stop(floor_child *c);

/* ---- relay.c: a minimal dispatcher of T threads onto W floor children (oversubscribed) ----- */

#define RELAY_MAX_CHILDREN 4
typedef struct relay relay;
/* threads <= BENCH_MAX_REPLY_PIPES client threads (tids 0 .. threads - 1), `children` children,
 * one request in flight per child until relay_set_inflight says otherwise. */
int relay_start(const bench_opts *o, unsigned children, unsigned threads, relay **out);
void relay_set_inflight(relay *r, unsigned inflight);
unsigned relay_children(const relay *r);
pid_t relay_pid(const relay *r, unsigned child);
/* An echo of payload (at most PIPE_BUF / 2 bytes) by client thread tid. */
int relay_call(relay *r, unsigned tid, const void *payload, size_t len);
void relay_stop(relay *r);

/* ---- poolside.c: pypool configured for the bench ------------------------------------------- */

int pool_open(const bench_opts *o, const char *module, unsigned size, pypool **out);
/* pool_open with cfg.max_inflight = max_inflight (1: the default, exclusive workers) */
int pool_open_inflight(const bench_opts *o, const char *module, unsigned size,
                       unsigned max_inflight, pypool **out);
int pool_echo(pypool *p, const char *method, const void *payload, size_t len, int *pid);
bool pool_library_works(const bench_opts *o, char *why, size_t why_len);

/* ---- peer.c: ProcessPoolExecutor through ppe_bench.py --------------------------------------- */

/* Sequential submit().result() echo latency, samples in us, one samples per size. */
int peer_latency(const bench_opts *o, const size_t *sizes, size_t n, samples *out);
int peer_throughput(const bench_opts *o, const char *method, unsigned workers, double *calls_per_s);

/* ---- embedded.c: the GIL baseline (stubs when python3-embed was not found) ------------------ */

bool emb_available(void);
int emb_call(const char *method, const void *payload, size_t len); /* from any thread */
void emb_shutdown(void);

/* ---- load.c: N client threads against a deadline ------------------------------------------ */

typedef struct load_thread {
    unsigned tid;
    uint64_t calls, errors;
    samples lat;       /* us per call (only if the run keeps latencies) */
    double last_extra; /* set by fn: its own measure of this call (us), NAN if none */
    samples extra;     /* last_extra of the counted calls (fairness: wait for a worker) */
} load_thread;

/* One call; 0 on success. Called in a loop by each thread. */
typedef int (*load_call_fn)(void *ctx, load_thread *t);

typedef struct load_result {
    uint64_t calls, errors;
    double calls_per_s;
    samples lat, extra; /* merged over threads, only calls inside the window */
    uint64_t min_thread_calls, max_thread_calls;
} load_result;

/* threads loop fn for warmup + seconds; calls started after the warm-up and finished before the
 * end count. keep_lat: record latencies. */
int load_run(unsigned threads, double warmup, double seconds, bool keep_lat, load_call_fn fn,
             void *ctx, load_result *out);
void load_result_free(load_result *r);

/* ---- window.c: closed loop counting completions (the multiplexed scenarios) --------------- */

/* load.c counts a call that started and ended inside the window, which undercounts calls as
 * long as a sizeable part of the window (a 50 ms call in a 1 s window: ~5%). window.c counts
 * every call that *completes* inside the window: the steady-state rate whatever the call's
 * length. `mark` (optional) runs on the driving thread at the window's start (0) and end (1),
 * for counters read around exactly the window (context switches). */
typedef int (*win_call_fn)(void *ctx, unsigned tid);
typedef void (*win_mark_fn)(void *ctx, int which);

typedef struct win_result {
    unsigned threads;
    uint64_t done;        /* calls completed inside the window */
    uint64_t errors;      /* failed calls (anywhere) */
    double calls_per_s;   /* done / window */
    uint64_t *per_thread; /* done by each thread */
    samples lat;          /* us, calls completed inside the window (if keep_lat) */
} win_result;

int win_run(unsigned threads, double warmup, double seconds, bool keep_lat, win_call_fn fn,
            win_mark_fn mark, void *ctx, win_result *out);
/* max/median and min/median of per_thread (NAN when the median is 0) */
double win_spread_max(const win_result *r);
double win_spread_min(const win_result *r);
void win_result_free(win_result *r);

/* ---- procstat.c: the kernel's counters of the host and the workers -------------------------- */

uint64_t proc_rss_kib(int pid); /* VmRSS of /proc/<pid>/status, 0 if unknown */
uint64_t proc_ctxsw(int pid);   /* voluntary + nonvoluntary switches, every thread */
uint64_t self_ctxsw(void);      /* the host process, every thread (getrusage) */
uint64_t pool_workers_rss_kib(pypool *p);
uint64_t proc_pss_kib(int pid); /* Pss of /proc/<pid>/smaps_rollup (shared pages split) */
uint64_t pool_workers_pss_kib(pypool *p);
uint64_t pool_workers_ctxsw(pypool *p);
uint64_t mem_available_kib(void);
double self_cpu_s(void);    /* user + system of the host, every thread */
double proc_cpu_s(int pid); /* user + system of a process, every thread */
double pool_workers_cpu_s(pypool *p);
/* The host's threads other than the calling one (before a run: the pools' reapers). */
unsigned self_other_tids(int *out, unsigned max);
uint64_t self_task_ctxsw(int tid);
double self_task_cpu_s(int tid);

/* ---- progress.c: a bar on stderr when it is a terminal -------------------------------------- */

void progress_begin(const char *scenario, unsigned total);
void progress_step(const char *what);
void progress_end(void);

/* ---- machine.c ------------------------------------------------------------------------------ */

typedef struct bench_machine {
    long cores;
    char cpu[128];
    char kernel[200];
    char python[64];
} bench_machine;

void machine_probe(const bench_opts *o, bench_machine *m);

/* ---- scenarios_*.c -------------------------------------------------------------------------- */

void scenario_latency(const bench_opts *o);
void scenario_throughput(const bench_opts *o);
void scenario_cpu(const bench_opts *o);
void scenario_coldstart(const bench_opts *o);
void scenario_recovery(const bench_opts *o);
void scenario_fairness(const bench_opts *o);
/* issues 13 and 14 (multiplexed workers, streams); run only when named */
void scenario_iobound(const bench_opts *o);
void scenario_oversubscribed(const bench_opts *o);
void scenario_stream(const bench_opts *o);

/* ---- report.c / json.c / plot.c ------------------------------------------------------------- */

void report_tables(void);
/* Prints the pass/miss lines; returns how many targets missed. */
int report_targets(void);
int json_write(const char *path, const bench_opts *o, const bench_machine *m);
int plot_write(const char *dir);

/* A warning or error line on stderr that does not break the progress bar. */
void bench_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
