/*
 * fuzz_reply.c - libFuzzer target for the reply path as a client thread runs it: the fuzzed
 * bytes are what a worker wrote on its fd 4 in answer to one request, and the real
 * pypool__slot_call (lib/call.c) writes the request, reads frames until the reply to its id,
 * drops stale or unexpected messages, and builds the pypool_result.
 *
 * Why white-box instead of a fake worker process: spawning a fake worker per input (or feeding
 * a long-lived one through a side channel) costs milliseconds per input and makes runs depend
 * on scheduling; a broken reply also makes the pool kill and restart the worker. Here a
 * hand-built pool and one BUSY slot (as after a checkout) get real pipes: the request goes into
 * a pipe the harness drains, the input is written into the "fd 4" pipe whose write end is then
 * closed, so every input ends in EOF and no run ever waits. The slot's worker counts as already
 * reaped (pid 0, reaped = true) so a broken channel is classified at once (PYPOOL_EWORKER)
 * instead of waiting up to 1 s for an exit status; the 50 ms "bad frame vs dead worker" wait of
 * channel_broken is therefore not fuzzed here (the Criterion suites cover it).
 *
 * Input layout: byte 0 bit 0 = session call, bits 1..2 = the request id (1..4, so the fuzzer
 * can aim at it), bit 3 = the worker read the request (else it is still unread in the request
 * pipe, which the pool sees through its peek fd: a worker that dies without reading it makes
 * the call "not sent", retried elsewhere); the rest is the worker's output.
 *
 * Oracle: an independent walk of the same bytes with protobuf-c decides what the call must
 * return: the stream chunks (Response{more}) of the request's id joined, then the payload or
 * remote error of its final Response, if that comes before anything that breaks the channel;
 * FrameTooLarge (and the worker replaced) if the joined chunks outgrow the frame limit; otherwise
 * a channel error (never OK or PYPOOL_EREMOTE), or "not sent" (PYPOOL__ENOTSENT) only if the
 * request was never read. HostCalls of the request are answered and skipped. A reply for another
 * id must never be returned.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "call.h"
#include "clock.h"
#include "latency.h"
#include "slots.h"
#include "sync.h"

#define MAX_FRAME (256u * 1024)

static pypool *pool;
static pypool__slot *slot;
static int last_rc; /* for oracle messages */

static void check(int cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "fuzz_reply: oracle failed: %s (rc %d)\n", what, last_rc);
        abort();
    }
}

static void quiet_log(void *ud, int level, int pid, const char *line)
{
    (void)ud;
    (void)level;
    (void)pid;
    (void)line;
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    pool = calloc(1, sizeof *pool);
    slot = calloc(1, sizeof *slot);
    check(pool && slot && pypool__latency_init(pool) == 0, "calloc");
    pypool_config_init(&pool->cfg);
    pool->cfg.max_frame_bytes = MAX_FRAME;
    pool->cfg.log_fn = quiet_log;
    pypool__mutex_init(&pool->mu);
    pypool__cond_init(&pool->state_cv);
    pool->refs = 1;
    pool->wake_fd = -1;
    pool->slots = slot;
    pool->cfg.size = 1;
    slot->state = PYPOOL_SLOT_BUSY;
    pypool__child_clear(&slot->child);
    pypool__reader_init(&slot->reader, -1, MAX_FRAME);
    return 0;
}

/* What the call must return, from an independent walk of the bytes. */
typedef struct expect {
    int matched;           /* our final Response came before anything that breaks the channel */
    int too_big;           /* the joined chunks outgrew the frame limit first */
    Pypool__Envelope *env; /* the final Response */
    uint8_t *joined;       /* chunks (Response{more}) of our id before it, in order */
    size_t joined_len;
} expect;

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Appends to the expected joined reply; false once it outgrew the frame limit. */
static int expect_join(expect *e, const ProtobufCBinaryData *b)
{
    if (e->joined_len + b->len > MAX_FRAME)
        return 0;
    e->joined = realloc(e->joined, e->joined_len + b->len + 1);
    check(e->joined != NULL, "realloc");
    if (b->len)
        memcpy(e->joined + e->joined_len, b->data, b->len);
    e->joined_len += b->len;
    return 1;
}

static expect predict(const uint8_t *data, size_t size, uint64_t id)
{
    expect e = {0};
    size_t off = 0;
    while (size - off >= 4) {
        uint32_t n = be32(data + off);
        if (n > MAX_FRAME || size - off - 4 < n)
            break; /* oversize or cut short: the channel breaks */
        Pypool__Envelope *env = pypool__envelope__unpack(NULL, n, data + off + 4);
        off += 4 + (size_t)n;
        if (!env)
            break; /* undecodable: the channel breaks */
        if (env->msg_case == PYPOOL__ENVELOPE__MSG_RESPONSE && env->response->id == id) {
            if (!env->response->more) {
                e.matched = 1;
                e.env = env;
                return e;
            }
            int fits = expect_join(&e, &env->response->payload);
            pypool__envelope__free_unpacked(env, NULL);
            if (!fits) {
                e.too_big = 1;
                return e;
            }
            continue;
        }
        /* A HostCall of ours is answered (HostError: no host_fn) and the call goes on;
         * anything else is stale and dropped. */
        pypool__envelope__free_unpacked(env, NULL);
    }
    return e;
}

static int same_str(const char *got, const char *sent, const char *fallback)
{
    const char *want = sent && *sent ? sent : fallback;
    if (!want)
        return got == NULL;
    return got && strcmp(got, want) == 0;
}

static void check_outcome(int rc, const pypool_result *r, int reason, const expect *e,
                          int request_read)
{
    if (e->too_big) {
        check(rc == PYPOOL_EREMOTE, "an oversize joined stream is not PYPOOL_EREMOTE");
        check(same_str(r->error_type, "FrameTooLarge", NULL), "oversize: error_type");
        check(reason != PYPOOL__BREAK_NONE, "oversize stream: the worker must be replaced");
        return;
    }
    if (!e->matched) {
        check(rc != PYPOOL_OK && rc != PYPOOL_EREMOTE, "a reply was returned without one sent");
        check(reason != PYPOOL__BREAK_NONE, "broken channel but the slot is not marked broken");
        check(r->data == NULL, "error with data");
        if (rc == PYPOOL__ENOTSENT) {
            check(!request_read, "'not sent' although the worker read the request");
            check(reason == PYPOOL__BREAK_CRASH, "'not sent' without a crash");
            return;
        }
        check(rc == PYPOOL_EWORKER || rc == PYPOOL_EPROTO, "broken channel: unexpected code");
        check(r->error_message && *r->error_message, "error without a message");
        return;
    }
    check(reason == PYPOOL__BREAK_NONE, "a good reply marked the slot broken");
    const Pypool__Response *resp = e->env->response;
    if (resp->error) {
        check(rc == PYPOOL_EREMOTE, "remote error not reported as PYPOOL_EREMOTE");
        check(same_str(r->error_type, resp->error->type, "Exception"), "error_type differs");
        check(r->error_message && *r->error_message, "remote error without a message");
        if (resp->error->message && *resp->error->message)
            check(strcmp(r->error_message, resp->error->message) == 0, "error_message differs");
        check(same_str(r->traceback, resp->error->traceback, NULL), "traceback differs");
        return;
    }
    /* The reply is the chunks joined, then the final Response's own payload unless it only
     * marks the end of the stream. */
    size_t tail = resp->stream_end ? 0 : resp->payload.len;
    if (e->joined_len + tail > MAX_FRAME) {
        check(rc == PYPOOL_EREMOTE && same_str(r->error_type, "FrameTooLarge", NULL),
              "an oversize joined reply is not FrameTooLarge");
        return;
    }
    check(rc == PYPOOL_OK, "a good reply is not PYPOOL_OK");
    check(r->data != NULL, "OK without data");
    check(r->len == e->joined_len + tail, "payload length differs");
    check(e->joined_len == 0 || memcmp(r->data, e->joined, e->joined_len) == 0,
          "joined chunks differ");
    check(tail == 0 || memcmp(r->data + e->joined_len, resp->payload.data, tail) == 0,
          "payload differs");
    check(r->data[r->len] == 0, "payload not NUL-terminated");
}

/* Reads (and discards) what the call wrote as its request. */
static void drain_request(int fd)
{
    uint8_t buf[4096];
    while (read(fd, buf, sizeof buf) > 0)
        ;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 1024 * 1024)
        return 0;
    int session = data[0] & 1;
    uint64_t id = 1 + ((data[0] >> 1) & 3);
    int request_read = (data[0] >> 3) & 1;
    data++;
    size--;

    int resp[2], req[2];
    check(pipe2(resp, O_CLOEXEC | O_NONBLOCK) == 0, "pipe2");
    check(pipe2(req, O_CLOEXEC | O_NONBLOCK) == 0, "pipe2");
    /* Room for every HostReply the call may write (each answers a HostCall of the input). */
    (void)fcntl(req[1], F_SETPIPE_SZ, 1 << 20);
    if (size > 65536 && fcntl(resp[1], F_SETPIPE_SZ, (int)size) < (int)size) {
        close(resp[0]);
        close(resp[1]);
        close(req[0]);
        close(req[1]);
        return 0;
    }
    size_t off = 0;
    while (off < size) {
        ssize_t n = write(resp[1], data + off, size - off);
        check(n > 0, "writing the input into the pipe");
        off += (size_t)n;
    }
    close(resp[1]);

    slot->child.pid = 0;
    slot->reaped = true;
    slot->exit_status = 9; /* "killed by signal 9" */
    slot->child.req_fd = req[1];
    slot->child.req_peek_fd = request_read ? -1 : req[0];
    slot->child.resp_fd = resp[0];
    pypool__reader_init(&slot->reader, resp[0], MAX_FRAME);
    slot->next_id = id - 1;

    expect e = predict(data, size, id);
    pypool_result r;
    memset(&r, 0, sizeof r);
    int reason = -1;
    last_rc = 1;
    int64_t t0 = pypool__now_ns();
    int64_t wait_start = 0; /* no wait to record: the slot is in hand already */
    int rc = pypool__slot_call(pool, slot, session ? "fuzz-session" : NULL, "echo", "ping", 4,
                               pypool__deadline_after_ms(10000), &wait_start, &r, &reason);
    last_rc = rc;
    check(pypool__now_ns() - t0 < 2000 * PYPOOL__MS, "the call waited although EOF was there");
    check_outcome(rc, &r, reason, &e, request_read);
    drain_request(req[0]);

    pypool_result_free(&r);
    if (e.env)
        pypool__envelope__free_unpacked(e.env, NULL);
    free(e.joined);
    pypool__reader_free(&slot->reader);
    slot->served = slot->pend_remote = slot->pend_call_timeouts = slot->pend_proto = 0;
    close(resp[0]);
    close(req[0]);
    close(req[1]);
    slot->child.req_fd = slot->child.req_peek_fd = slot->child.resp_fd = -1;
    return 0;
}
