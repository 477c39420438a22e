/*
 * relay.c - the oversubscribed scenario's second baseline: a minimal dispatcher of T client
 * threads onto W floor_worker.py children over pipes, to show what a pool could reach where
 * threads outnumber workers (docs/ARCHITECTURE.md, "Wake-ups cost what a call costs").
 *
 * What makes it lean is that every call costs one context switch, as a dedicated pair's does:
 * - every client thread has its own reply pipe into every child (`--channels T`; the child
 *   answers request id on pipe id % T), so a reply wakes exactly its caller, blocked in read(2)
 *   on that pipe, and nobody routes replies;
 * - a thread that finds every child full joins the shortest child's FIFO and sleeps in read(2)
 *   on its own pipe at once; the thread whose reply frees a place writes the next waiter's
 *   request (a hand-off write), so the waiter wakes once, to its reply;
 * - a child holds up to `inflight` requests (1: one at a time; 2: the next one waits in its
 *   pipe, so it never sleeps between calls).
 * It has nothing a pool needs besides: no deadlines, crash handling, sessions or statistics,
 * and one mutex. Requests of at most PIPE_BUF bytes only (writes from many threads to one pipe
 * must be atomic).
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"

typedef struct relay_waiter {
    struct relay_waiter *next;
    unsigned tid;
    uint64_t id;
    const void *payload;
    size_t len;
} relay_waiter;

typedef struct relay_child {
    bench_proc proc;
    int reply_r[BENCH_MAX_REPLY_PIPES]; /* one per client thread */
    relay_waiter *head, *tail;          /* [mu] threads waiting for a place, oldest first */
    unsigned queued, inflight;          /* [mu] */
} relay_child;

struct relay {
    pthread_mutex_t mu;
    unsigned nchild, threads, inflight;
    relay_child child[RELAY_MAX_CHILDREN];
    uint64_t next_seq[BENCH_MAX_REPLY_PIPES]; /* per thread: ids are seq * threads + tid */
    wire_buf buf[BENCH_MAX_REPLY_PIPES];      /* per thread */
};

int relay_start(const bench_opts *o, unsigned children, unsigned threads, relay **out)
{
    *out = NULL;
    if (children == 0 || children > RELAY_MAX_CHILDREN || threads == 0 ||
        threads > BENCH_MAX_REPLY_PIPES)
        return -EINVAL;
    relay *r = calloc(1, sizeof *r);
    if (!r)
        return -ENOMEM;
    pthread_mutex_init(&r->mu, NULL);
    r->threads = threads;
    r->inflight = 1;
    char channels[16];
    snprintf(channels, sizeof channels, "%u", threads);
    const char *argv[] = {o->python, BENCH_PY_DIR "/floor_worker.py", "--channels", channels, NULL};
    int rc = 0;
    while (r->nchild < children && rc == 0) {
        relay_child *c = &r->child[r->nchild];
        rc = bench_spawn_replies(argv, bench_pythonpath(), -1, threads, &c->proc, c->reply_r);
        r->nchild += rc == 0;
    }
    /* Every child answers one echo (id 0: reply pipe 0) before any window opens, so that no
     * measurement includes an interpreter's start-up (as floors_start does). */
    for (unsigned i = 0; i < r->nchild && rc == 0; i++) {
        size_t got;
        rc = wire_send_request(r->child[i].proc.to_child, 0, "echo", "w", 1, &r->buf[0]);
        if (rc == 0)
            rc = wire_recv_response(r->child[i].reply_r[0], 0, &r->buf[0], &got);
    }
    if (rc != 0) {
        relay_stop(r);
        return rc;
    }
    *out = r;
    return 0;
}

unsigned relay_children(const relay *r)
{
    return r->nchild;
}

pid_t relay_pid(const relay *r, unsigned child)
{
    return r->child[child].proc.pid;
}

void relay_set_inflight(relay *r, unsigned inflight)
{
    r->inflight = inflight ? inflight : 1;
}

/* With mu held: a child with a free place and nobody queued (the least loaded), else -1. */
static int free_child_locked(relay *r)
{
    int best = -1;
    for (unsigned i = 0; i < r->nchild; i++) {
        const relay_child *c = &r->child[i];
        if (c->queued == 0 && c->inflight < r->inflight &&
            (best < 0 || c->inflight < r->child[best].inflight))
            best = (int)i;
    }
    return best;
}

/* With mu held: the child with the shortest queue (its FIFO is where the caller waits). */
static unsigned shortest_queue_locked(relay *r)
{
    unsigned best = 0;
    for (unsigned i = 1; i < r->nchild; i++)
        if (r->child[i].queued < r->child[best].queued)
            best = i;
    return best;
}

/* Writes w's request into the child, with the scratch buffer of thread `by` (the caller). */
static int send(relay *r, unsigned child, unsigned by, const relay_waiter *w)
{
    return wire_send_request(r->child[child].proc.to_child, w->id, "echo", w->payload, w->len,
                             &r->buf[by]);
}

/* With mu held: takes a place in a child for `me`: one that is free now (true), or the last
 * in the shortest FIFO, to be sent by whoever frees a place there (false). */
static bool take_place_locked(relay *r, relay_waiter *me, unsigned *child)
{
    int free_now = free_child_locked(r);
    if (free_now >= 0) {
        *child = (unsigned)free_now;
        r->child[free_now].inflight++;
        return true;
    }
    *child = shortest_queue_locked(r);
    relay_child *c = &r->child[*child];
    if (c->tail)
        c->tail->next = me;
    else
        c->head = me;
    c->tail = me;
    c->queued++;
    return false;
}

/* With mu held: the place a reply freed goes to the oldest waiter of that child (returned,
 * its request still to be written), or becomes free. */
static relay_waiter *pass_place_locked(relay_child *c)
{
    relay_waiter *next = c->head;
    if (!next) {
        c->inflight--;
        return NULL;
    }
    c->head = next->next;
    if (!c->head)
        c->tail = NULL;
    c->queued--;
    return next;
}

int relay_call(relay *r, unsigned tid, const void *payload, size_t len)
{
    if (tid >= r->threads || len > PIPE_BUF / 2)
        return -EINVAL;
    relay_waiter me = {
        .tid = tid, .id = r->next_seq[tid]++ * r->threads + tid, .payload = payload, .len = len};
    unsigned child;
    pthread_mutex_lock(&r->mu);
    bool now = take_place_locked(r, &me, &child);
    pthread_mutex_unlock(&r->mu);
    relay_child *c = &r->child[child];
    int rc = now ? send(r, child, tid, &me) : 0;
    size_t got = 0;
    if (rc == 0) /* a queued caller sleeps here too: its request is written for it */
        rc = wire_recv_response(c->reply_r[tid], me.id, &r->buf[tid], &got);
    pthread_mutex_lock(&r->mu);
    relay_waiter *next = pass_place_locked(c);
    pthread_mutex_unlock(&r->mu);
    if (next && send(r, child, tid, next) != 0)
        bench_warn("relay: a hand-off write failed: %s", strerror(errno)); /* its read sees EOF */
    if (rc == 0 && got != len)
        rc = -EPROTO;
    return rc;
}

void relay_stop(relay *r)
{
    if (!r)
        return;
    for (unsigned i = 0; i < r->nchild; i++) {
        relay_child *c = &r->child[i];
        for (unsigned k = 1; k < r->threads; k++)
            close(c->reply_r[k]);
        (void)bench_proc_finish(&c->proc); /* closes reply_r[0] and the request pipe */
    }
    for (unsigned k = 0; k < r->threads; k++)
        wire_buf_free(&r->buf[k]);
    pthread_mutex_destroy(&r->mu);
    free(r);
}
