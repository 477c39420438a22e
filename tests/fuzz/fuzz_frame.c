/*
 * fuzz_frame.c - libFuzzer target for the frame reader and the envelope decoder.
 *
 * Input layout: byte 0 seeds the chunking, byte 1 picks max_frame_bytes, the rest is the byte
 * stream as it would arrive from a worker. The stream is fed to an incremental reader in random
 * chunk sizes (pypool__reader_feed) and drained with pypool__reader_next after every chunk;
 * every frame is decoded with pypool__envelope_decode and, if valid, re-encoded (and decoded
 * again when it has no unknown fields). Oracles besides the sanitizers:
 *   - chunking must not matter: the frames (count, lengths, bytes) and the sticky error must
 *     equal those of a one-shot feed of the whole stream;
 *   - the blocking reader over a real pipe (pypool__frame_read, the client's reply path) must
 *     yield the same frames, then PYPOOL_EWORKER at a clean end of stream or PYPOOL_EPROTO for
 *     an oversize length or a frame cut short by EOF;
 *   - a frame is never longer than max_frame.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "codec.h"
#include "frame.h"
#include "frameio.h"
#include "pypool.h"

#define MAX_FRAMES 4096

/* What a reader produced: a digest of each frame and how it ended. */
typedef struct trace {
    uint32_t n;
    uint32_t len[MAX_FRAMES];
    uint64_t hash[MAX_FRAMES];
    uint64_t consumed; /* bytes of the stream that whole frames used */
    int end;           /* 0: wants more bytes; < 0: sticky error */
} trace;

static trace one_shot, chunked, piped;

static uint64_t fnv1a(const uint8_t *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

static void check(int cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "fuzz_frame: oracle failed: %s\n", what);
        abort();
    }
}

/*
 * Decodes a frame; a decoded envelope must be a sound structure, which packing it walks in
 * full (ASan catches any bad pointer or length). Decoding the packed bytes again is not
 * required: protobuf-c 1.4 keeps non-canonical unknown fields (a field-0 tag "80 00", at any
 * nesting depth) and re-emits them in a form it then rejects itself; pypool never re-encodes
 * what it decodes, so that quirk is not ours to assert on.
 */
static void decode(const uint8_t *body, uint32_t len)
{
    Pypool__Envelope *env = pypool__envelope_decode(body, len);
    if (!env)
        return;
    size_t size = protobuf_c_message_get_packed_size(&env->base);
    uint8_t *buf = malloc(size ? size : 1);
    check(buf != NULL, "malloc");
    size_t packed = protobuf_c_message_pack(&env->base, buf);
    check(packed == size, "packed size");
    Pypool__Envelope *again = pypool__envelope_decode(buf, packed);
    check(!again || again->msg_case == env->msg_case, "re-encoded envelope changed its case");
    pypool__envelope_free(again);
    free(buf);
    pypool__envelope_free(env);
}

static void record(trace *t, const uint8_t *body, uint32_t len, uint32_t max_frame)
{
    check(len <= max_frame, "frame longer than max_frame");
    if (t->n < MAX_FRAMES) {
        t->len[t->n] = len;
        t->hash[t->n] = fnv1a(body, len);
    }
    t->n++;
    t->consumed += PYPOOL__FRAME_HEADER + (uint64_t)len;
}

/* Drains every complete frame; returns 0 (needs more) or the sticky error. */
static int drain(pypool__reader *r, trace *t, uint32_t max_frame, int decode_frames)
{
    for (;;) {
        const uint8_t *body;
        uint32_t len;
        int rc = pypool__reader_next(r, &body, &len);
        if (rc != 1)
            return rc;
        record(t, body, len, max_frame);
        if (decode_frames)
            decode(body, len);
    }
}

static void run_feed(trace *t, const uint8_t *data, size_t size, uint32_t max_frame,
                     uint8_t chunk_seed, int whole)
{
    memset(t, 0, sizeof *t);
    pypool__reader r;
    pypool__reader_init(&r, -1, max_frame);
    uint64_t rng = 0x9e3779b97f4a7c15ull * (chunk_seed + 1u);
    size_t off = 0;
    int rc = 0;
    while (off < size && rc == 0) {
        size_t chunk = size - off;
        if (!whole) {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            size_t max = (rng >> 60) < 4 ? 3 : (rng >> 60) < 12 ? 64 : 4096;
            size_t want = 1 + (size_t)(rng % max);
            chunk = want < chunk ? want : chunk;
        }
        check(pypool__reader_feed(&r, data + off, chunk) == 0, "reader_feed ENOMEM");
        off += chunk;
        rc = drain(&r, t, max_frame, !whole);
    }
    if (rc == 0)
        rc = drain(&r, t, max_frame, 0);
    t->end = rc;
    pypool__reader_free(&r);
}

/*
 * The client's path: frame_read on a pipe that holds the stream and then EOF. Returns 0 if the
 * stream does not fit in a pipe (the check is skipped then).
 */
static int run_pipe(trace *t, const uint8_t *data, size_t size, uint32_t max_frame)
{
    memset(t, 0, sizeof *t);
    int fds[2];
    check(pipe2(fds, O_CLOEXEC | O_NONBLOCK) == 0, "pipe2");
    if (size > 65536)
        fcntl(fds[1], F_SETPIPE_SZ, (int)size);
    size_t off = 0;
    while (off < size) {
        ssize_t n = write(fds[1], data + off, size - off);
        if (n <= 0) {
            close(fds[0]);
            close(fds[1]);
            return 0;
        }
        off += (size_t)n;
    }
    close(fds[1]);
    pypool__reader r;
    pypool__reader_init(&r, fds[0], max_frame);
    int64_t deadline = pypool__deadline_after_ms(5000);
    for (;;) {
        const uint8_t *body;
        uint32_t len;
        int rc = pypool__frame_read(&r, deadline, &body, &len);
        check(rc != PYPOOL_ETIMEDOUT, "frame_read timed out on a closed pipe");
        if (rc != 1) {
            t->end = rc;
            break;
        }
        record(t, body, len, max_frame);
    }
    pypool__reader_free(&r);
    close(fds[0]);
    return 1;
}

static int same_frames(const trace *a, const trace *b)
{
    if (a->n != b->n)
        return 0;
    uint32_t n = a->n < MAX_FRAMES ? a->n : MAX_FRAMES;
    for (uint32_t i = 0; i < n; i++) {
        if (a->len[i] != b->len[i] || a->hash[i] != b->hash[i])
            return 0;
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    static const uint32_t max_frames[4] = {1024, 4096, 65536, 1u << 20};
    uint8_t chunk_seed = data[0];
    uint32_t max_frame = max_frames[data[1] & 3];
    data += 2;
    size -= 2;

    run_feed(&one_shot, data, size, max_frame, chunk_seed, 1);
    run_feed(&chunked, data, size, max_frame, chunk_seed, 0);
    check(same_frames(&one_shot, &chunked), "chunked feed yields other frames than one shot");
    check(one_shot.end == chunked.end, "chunked feed ends differently than one shot");
    check(one_shot.end == 0 || one_shot.end == PYPOOL_EPROTO, "feed ended with odd error");

    check(one_shot.consumed <= size, "frames used more bytes than the stream has");
    if (run_pipe(&piped, data, size, max_frame)) {
        check(same_frames(&one_shot, &piped), "pipe reader yields other frames than the feed");
        if (one_shot.end == PYPOOL_EPROTO || one_shot.consumed < size)
            check(piped.end == PYPOOL_EPROTO, "oversize or cut frame is not EPROTO on the pipe");
        else
            check(piped.end == PYPOOL_EWORKER, "clean end of stream is not EWORKER on the pipe");
    }
    return 0;
}
