/*
 * test_frame.c - the wire layer below the pool: length-prefixed frames over real pipes (round
 * trips of 0 B .. max_frame, a byte-at-a-time peer, EOF inside a frame, oversize lengths
 * rejected before allocating, deadlines, EINTR, writes to a dead or stuck reader without
 * SIGPIPE), the incremental reader fed by hand, the Request codec (header + payload iovec) and
 * the log buffer that splits worker output into lines and keeps its tail.
 *
 * White-box: links pypool_internal and calls the pypool__ functions of frame.h, codec.h and
 * logbuf.h directly.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "codec.h"
#include "frame.h"
#include "frameio.h"
#include "logbuf.h"
#include "pypool.h"
#include "testutil.h"

#define KIB ((size_t)1024)
#define MIB (1024 * KIB)

/* max_frame of the round-trip tests: small enough to be fast, large enough to need growing. */
#define SMALL_MAX_FRAME ((uint32_t)(4 * MIB))

/* The reader's idle buffer must stay far below any frame limit: 64 KiB default, one growth. */
#define READER_SMALL_CAP (128 * KIB)

TestSuite(frame, .timeout = 30);
TestSuite(codec, .timeout = 30);
TestSuite(logbuf, .timeout = 30);

/* ---------------------------------------------------------------------------------------- */
/* helpers                                                                                  */
/* ---------------------------------------------------------------------------------------- */

/* A pipe, both ends O_CLOEXEC, the write end O_NONBLOCK as pypool__frame_write requires. */
typedef struct test_pipe {
    int rd;
    int wr;
} test_pipe;

static test_pipe make_pipe(void)
{
    int fds[2];
    cr_assert_eq(pipe2(fds, O_CLOEXEC), 0, "pipe2: %s", strerror(errno));
    cr_assert_eq(fcntl(fds[1], F_SETFL, O_NONBLOCK), 0, "O_NONBLOCK: %s", strerror(errno));
    return (test_pipe){.rd = fds[0], .wr = fds[1]};
}

static void close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

static void close_pipe(test_pipe *tp)
{
    close_fd(&tp->rd);
    close_fd(&tp->wr);
}

/* Byte i of the test pattern for a frame of `len` bytes tagged `seed`. */
static uint8_t pattern_byte(size_t i, unsigned seed)
{
    return (uint8_t)((i * 131u + seed * 7u + (i >> 8)) & 0xff);
}

static uint8_t *make_payload(size_t len, unsigned seed)
{
    uint8_t *p = malloc(len ? len : 1);
    cr_assert_not_null(p);
    for (size_t i = 0; i < len; i++)
        p[i] = pattern_byte(i, seed);
    return p;
}

/* Index of the first byte that differs from the pattern, or len if all match. */
static size_t first_mismatch(const uint8_t *body, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++)
        if (body[i] != pattern_byte(i, seed))
            return i;
    return len;
}

/* Writes one frame (header iovec + body iovec) with pypool__frame_write. */
static int write_frame(int fd, const void *body, uint32_t len, int64_t deadline_ns, size_t *written)
{
    uint8_t hdr[PYPOOL__FRAME_HEADER];
    pypool__frame_put_header(hdr, len);
    struct iovec iov[2] = {{.iov_base = hdr, .iov_len = sizeof hdr},
                           {.iov_base = (void *)body, .iov_len = len}};
    return pypool__frame_write(fd, iov, len ? 2 : 1, deadline_ns, written);
}

/* Plain blocking-ish write of raw bytes (the peer side of protocol-breaking tests). */
static void raw_write(int fd, const void *data, size_t len)
{
    const uint8_t *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) {
            tu_sleep_ms(1);
            continue;
        }
        cr_assert_gt(n, 0, "write: %s", strerror(errno));
        p += n;
        len -= (size_t)n;
    }
}

static void put_be32(uint8_t out[4], uint32_t n)
{
    out[0] = (uint8_t)(n >> 24);
    out[1] = (uint8_t)(n >> 16);
    out[2] = (uint8_t)(n >> 8);
    out[3] = (uint8_t)n;
}

/* A writer thread sending frames of the given sizes with pypool__frame_write. */
typedef struct frame_writer {
    int fd;
    const size_t *sizes;
    int count;
    int rc; /* first failure, 0 if every frame went out */
    pthread_t thread;
} frame_writer;

static void *frame_writer_main(void *arg)
{
    frame_writer *w = arg;
    for (int i = 0; i < w->count; i++) {
        uint8_t *body = make_payload(w->sizes[i], (unsigned)i);
        size_t written = 0;
        int rc = write_frame(w->fd, body, (uint32_t)w->sizes[i], pypool__deadline_after_ms(20000),
                             &written);
        free(body);
        if (rc != 0) {
            w->rc = rc;
            break;
        }
        if (written != PYPOOL__FRAME_HEADER + w->sizes[i]) {
            w->rc = -1000;
            break;
        }
    }
    return NULL;
}

static void frame_writer_start(frame_writer *w, int fd, const size_t *sizes, int count)
{
    memset(w, 0, sizeof *w);
    w->fd = fd;
    w->sizes = sizes;
    w->count = count;
    cr_assert_eq(pthread_create(&w->thread, NULL, frame_writer_main, w), 0);
}

/* Reads `count` frames and checks each against the pattern the writer used. */
static void read_and_check_frames(pypool__reader *r, const size_t *sizes, int count)
{
    for (int i = 0; i < count; i++) {
        const uint8_t *body = NULL;
        uint32_t len = 0;
        int rc = pypool__frame_read(r, pypool__deadline_after_ms(20000), &body, &len);
        cr_assert_eq(rc, 1, "frame %d (%zu bytes): frame_read returned %d (%s)", i, sizes[i], rc,
                     pypool_strerror(rc));
        cr_assert_eq(len, sizes[i], "frame %d: length %u, want %zu", i, len, sizes[i]);
        size_t bad = first_mismatch(body, len, (unsigned)i);
        cr_assert_eq(bad, (size_t)len, "frame %d (%u bytes): byte %zu differs", i, len, bad);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* frames over a real pipe                                                                  */
/* ---------------------------------------------------------------------------------------- */

Test(frame, round_trip_0_1_1mib_and_max_size, .timeout = 60)
{
    const size_t sizes[] = {0, 1, MIB, SMALL_MAX_FRAME - 1, SMALL_MAX_FRAME, 0, 1, 17};
    const int count = (int)(sizeof sizes / sizeof sizes[0]);
    test_pipe tp = make_pipe();
    pypool__reader r;
    pypool__reader_init(&r, tp.rd, SMALL_MAX_FRAME);

    frame_writer w;
    frame_writer_start(&w, tp.wr, sizes, count);
    read_and_check_frames(&r, sizes, count);
    pthread_join(w.thread, NULL);
    cr_assert_eq(w.rc, 0, "writer failed: %d (%s)", w.rc,
                 pypool_strerror(
                     w.rc)); /* The large frames are consumed. The big buffer may stay while big
                              * frames might follow, but a run of small frames must give it back. */
    const uint8_t *body;
    uint32_t len;
    cr_assert_eq(pypool__reader_next(&r, &body, &len), 0, "no more frames are buffered");
    static const uint8_t empty_frame[4] = {0, 0, 0, 0};
    for (int i = 0; i < 100; i++) {
        cr_assert_eq(pypool__reader_feed(&r, empty_frame, sizeof empty_frame), 0);
        cr_assert_eq(pypool__reader_next(&r, &body, &len), 1, "small frame %d", i);
        cr_assert_eq(len, 0);
    }
    cr_assert_eq(pypool__reader_next(&r, &body, &len), 0, "no more frames are buffered");
    cr_assert_leq(r.cap, READER_SMALL_CAP, "reader still holds %zu bytes after small frames",
                  r.cap);

    /* A clean close between frames is EOF, not a protocol error. */
    close_fd(&tp.wr);
    int rc = pypool__frame_read(&r, pypool__deadline_after_ms(5000), &body, &len);
    cr_assert_eq(rc, PYPOOL_EWORKER, "EOF between frames: got %d (%s)", rc, pypool_strerror(rc));
    pypool__reader_free(&r);
    close_pipe(&tp);
}

Test(frame, header_is_big_endian, .timeout = 30)
{
    uint8_t hdr[PYPOOL__FRAME_HEADER];
    pypool__frame_put_header(hdr, 0x01020304u);
    cr_assert_arr_eq(hdr, ((uint8_t[]){1, 2, 3, 4}), 4);
    pypool__frame_put_header(hdr, 0xfffffffeu);
    cr_assert_arr_eq(hdr, ((uint8_t[]){0xff, 0xff, 0xff, 0xfe}), 4);
    pypool__frame_put_header(hdr, 0);
    cr_assert_arr_eq(hdr, ((uint8_t[]){0, 0, 0, 0}), 4);
}

/* A peer that dribbles its frames one byte per write(), with pauses between bytes. */
typedef struct dribbler {
    int fd;
    uint8_t *bytes;
    size_t len;
    pthread_t thread;
} dribbler;

static void *dribbler_main(void *arg)
{
    dribbler *d = arg;
    for (size_t i = 0; i < d->len; i++) {
        ssize_t n;
        do {
            n = write(d->fd, d->bytes + i, 1);
        } while (n < 0 && (errno == EINTR || errno == EAGAIN));
        if (n != 1)
            break;
        if (i % 3 == 0)
            usleep(200);
    }
    return NULL;
}

Test(frame, peer_writing_one_byte_at_a_time, .timeout = 30)
{
    const size_t sizes[] = {0, 1, 5, 300};
    const int count = 4;
    size_t total = 0;
    for (int i = 0; i < count; i++)
        total += PYPOOL__FRAME_HEADER + sizes[i];
    dribbler d = {.len = total};
    d.bytes = malloc(total);
    size_t off = 0;
    for (int i = 0; i < count; i++) {
        put_be32(d.bytes + off, (uint32_t)sizes[i]);
        off += PYPOOL__FRAME_HEADER;
        for (size_t j = 0; j < sizes[i]; j++)
            d.bytes[off + j] = pattern_byte(j, (unsigned)i);
        off += sizes[i];
    }
    test_pipe tp = make_pipe();
    d.fd = tp.wr;
    pypool__reader r;
    pypool__reader_init(&r, tp.rd, 1024);
    cr_assert_eq(pthread_create(&d.thread, NULL, dribbler_main, &d), 0);
    read_and_check_frames(&r, sizes, count);
    pthread_join(d.thread, NULL);
    cr_assert_eq(r.err, 0, "reader error %d after a slow but correct peer", r.err);
    pypool__reader_free(&r);
    close_pipe(&tp);
    free(d.bytes);
}

/* Reads again and checks that the same sticky error comes back, from both entry points. */
static void assert_sticky(pypool__reader *r, int want, const char *what)
{
    const uint8_t *body;
    uint32_t len;
    for (int i = 0; i < 3; i++) {
        int rc = pypool__frame_read(r, pypool__deadline_after_ms(1000), &body, &len);
        cr_assert_eq(rc, want, "%s: read %d returned %d (%s), want %d (%s)", what, i, rc,
                     pypool_strerror(rc), want, pypool_strerror(want));
    }
    cr_assert_eq(pypool__reader_next(r, &body, &len), want, "%s: reader_next not sticky", what);
    cr_assert_eq(pypool__reader_fill(r), want, "%s: reader_fill not sticky", what);
}

Test(frame, eof_inside_header_is_sticky_eproto, .timeout = 30)
{
    test_pipe tp = make_pipe();
    pypool__reader r;
    pypool__reader_init(&r, tp.rd, 1024);
    const uint8_t half_header[2] = {0, 0};
    raw_write(tp.wr, half_header, sizeof half_header);
    close_fd(&tp.wr);

    const uint8_t *body;
    uint32_t len;
    int64_t t0 = tu_now_ms();
    int rc = pypool__frame_read(&r, pypool__deadline_after_ms(5000), &body, &len);
    cr_assert_eq(rc, PYPOOL_EPROTO, "EOF after 2 header bytes: got %d (%s)", rc,
                 pypool_strerror(rc));
    cr_assert_lt(tu_now_ms() - t0, 1000, "EOF must be reported at once, not at the deadline");
    assert_sticky(&r, PYPOOL_EPROTO, "EOF inside the header");
    pypool__reader_free(&r);
    close_pipe(&tp);
}

Test(frame, eof_inside_body_is_sticky_eproto, .timeout = 30)
{
    test_pipe tp = make_pipe();
    pypool__reader r;
    pypool__reader_init(&r, tp.rd, 1024);
    uint8_t bytes[4 + 5];
    put_be32(bytes, 10); /* announces 10 bytes, sends 5 */
    memcpy(bytes + 4, "hello", 5);
    raw_write(tp.wr, bytes, sizeof bytes);
    close_fd(&tp.wr);

    const uint8_t *body;
    uint32_t len;
    int rc = pypool__frame_read(&r, pypool__deadline_after_ms(5000), &body, &len);
    cr_assert_eq(rc, PYPOOL_EPROTO, "EOF after 5 of 10 body bytes: got %d (%s)", rc,
                 pypool_strerror(rc));
    assert_sticky(&r, PYPOOL_EPROTO, "EOF inside the body");
    pypool__reader_free(&r);
    close_pipe(&tp);
}

Test(frame, eof_between_frames_is_eworker, .timeout = 30)
{
    test_pipe tp = make_pipe();
    pypool__reader r;
    pypool__reader_init(&r, tp.rd, 1024);
    cr_assert_eq(write_frame(tp.wr, "abc", 3, pypool__deadline_after_ms(1000), NULL), 0);
    close_fd(&tp.wr);

    const uint8_t *body;
    uint32_t len;
    int rc = pypool__frame_read(&r, pypool__deadline_after_ms(5000), &body, &len);
    cr_assert_eq(rc, 1, "the complete frame before EOF: got %d", rc);
    cr_assert_eq(len, 3);
    cr_assert_arr_eq(body, "abc", 3);
    rc = pypool__frame_read(&r, pypool__deadline_after_ms(5000), &body, &len);
    cr_assert_eq(rc, PYPOOL_EWORKER, "EOF between frames: got %d (%s)", rc, pypool_strerror(rc));
    assert_sticky(&r, PYPOOL_EWORKER, "EOF between frames");
    pypool__reader_free(&r);
    close_pipe(&tp);
}

Test(frame, eof_before_any_byte_is_eworker, .timeout = 30)
{
    test_pipe tp = make_pipe();
    pypool__reader r;
    pypool__reader_init(&r, tp.rd, 1024);
    close_fd(&tp.wr);
    const uint8_t *body;
    uint32_t len;
    int rc = pypool__frame_read(&r, pypool__deadline_after_ms(5000), &body, &len);
    cr_assert_eq(rc, PYPOOL_EWORKER, "EOF on an empty channel: got %d (%s)", rc,
                 pypool_strerror(rc));
    pypool__reader_free(&r);
    close_pipe(&tp);
}

/* Sends a header announcing `announced` bytes (+ a few body bytes) and expects EPROTO. */
static void check_oversize_rejected(uint32_t max_frame, uint32_t announced)
{
    test_pipe tp = make_pipe();
    pypool__reader r;
    pypool__reader_init(&r, tp.rd, max_frame);
    uint8_t bytes[4 + 16];
    put_be32(bytes, announced);
    memset(bytes + 4, 'x', 16);
    raw_write(tp.wr, bytes, sizeof bytes);

    const uint8_t *body;
    uint32_t len;
    int rc = pypool__frame_read(&r, pypool__deadline_after_ms(5000), &body, &len);
    cr_assert_eq(rc, PYPOOL_EPROTO, "length %u over max_frame %u: got %d (%s)", announced,
                 max_frame, rc, pypool_strerror(rc));
    cr_assert_leq(r.cap, READER_SMALL_CAP,
                  "length %u was rejected only after allocating %zu bytes (max_frame %u)",
                  announced, r.cap, max_frame);

    /* Sticky: even a valid frame that follows is never read out of a broken channel. */
    cr_assert_eq(write_frame(tp.wr, "ok", 2, pypool__deadline_after_ms(1000), NULL), 0);
    assert_sticky(&r, PYPOOL_EPROTO, "oversize length");
    cr_assert_leq(r.cap, READER_SMALL_CAP, "buffer grew after the error: %zu", r.cap);
    pypool__reader_free(&r);
    close_pipe(&tp);
}

Test(frame, length_over_limit_rejected_before_allocation, .timeout = 30)
{
    check_oversize_rejected(SMALL_MAX_FRAME, SMALL_MAX_FRAME + 1);
    check_oversize_rejected(SMALL_MAX_FRAME, 0x7fffffffu);
    check_oversize_rejected(SMALL_MAX_FRAME, 0xffffffffu);
    check_oversize_rejected(64 * (uint32_t)MIB, 0xfffffff0u);
}

Test(frame, length_over_limit_rejected_when_fed, .timeout = 30)
{
    pypool__reader r;
    pypool__reader_init(&r, -1, 1024);
    uint8_t hdr[4];
    put_be32(hdr, 1025);
    cr_assert_eq(pypool__reader_feed(&r, hdr, 3), 0);
    const uint8_t *body;
    uint32_t len;
    cr_assert_eq(pypool__reader_next(&r, &body, &len), 0, "3 header bytes: need more");
    cr_assert_eq(pypool__reader_feed(&r, hdr + 3, 1), 0);
    int rc = pypool__reader_next(&r, &body, &len);
    cr_assert_eq(rc, PYPOOL_EPROTO, "length 1025 over 1024: got %d", rc);
    cr_assert_leq(r.cap, READER_SMALL_CAP);
    uint8_t ok[4 + 2] = {0, 0, 0, 2, 'o', 'k'};
    pypool__reader_feed(&r, ok, sizeof ok);
    cr_assert_eq(pypool__reader_next(&r, &body, &len), PYPOOL_EPROTO, "error must be sticky");
    pypool__reader_free(&r);
}

Test(frame, frame_of_exactly_max_frame_is_accepted_when_fed, .timeout = 30)
{
    pypool__reader r;
    pypool__reader_init(&r, -1, 1024);
    uint8_t *bytes = malloc(4 + 1024);
    put_be32(bytes, 1024);
    for (size_t i = 0; i < 1024; i++)
        bytes[4 + i] = pattern_byte(i, 9);
    cr_assert_eq(pypool__reader_feed(&r, bytes, 4 + 1024), 0);
    const uint8_t *body;
    uint32_t len;
    cr_assert_eq(pypool__reader_next(&r, &body, &len), 1);
    cr_assert_eq(len, 1024);
    cr_assert_eq(first_mismatch(body, len, 9), (size_t)1024);
    free(bytes);
    pypool__reader_free(&r);
}

Test(frame, garbage_body_does_not_decode, .timeout = 30)
{
    /* The frame layer delivers any body of a valid length; the envelope decoder must refuse. */
    test_pipe tp = make_pipe();
    pypool__reader r;
    pypool__reader_init(&r, tp.rd, 1024);
    const char garbage[] = "not-a-hello-msg!";
    raw_write(tp.wr, "\x00\x00\x00\x10", 4);
    raw_write(tp.wr, garbage, 16);
    const uint8_t *body;
    uint32_t len;
    int rc = pypool__frame_read(&r, pypool__deadline_after_ms(5000), &body, &len);
    cr_assert_eq(rc, 1, "a garbage body of valid length is still a frame: got %d", rc);
    cr_assert_eq(len, 16);
    Pypool__Envelope *env = pypool__envelope_decode(body, len);
    cr_assert_null(env, "garbage decoded as an Envelope (msg_case %d)",
                   env ? (int)env->msg_case : -1);
    pypool__reader_free(&r);
    close_pipe(&tp);

    /* More shapes of garbage: bad wire types, a varint that never ends, truncated messages. */
    const uint8_t all_ff[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    cr_assert_null(pypool__envelope_decode(all_ff, sizeof all_ff), "16 x 0xff decoded");
    const uint8_t bad_wire_type[] = {0x0f, 0x01}; /* field 1, wire type 7 */
    cr_assert_null(pypool__envelope_decode(bad_wire_type, sizeof bad_wire_type));
    const uint8_t long_submsg[] = {0x12, 0x7f, 0x08, 0x01}; /* Request claims 127 bytes */
    cr_assert_null(pypool__envelope_decode(long_submsg, sizeof long_submsg));

    pypool__wbuf b = {0};
    pypool__request_hdr h = {.id = 7, .method = "echo", .payload_len = 0};
    cr_assert_eq(pypool__encode_request(&b, &h, 1024), 0);
    const uint8_t *env_bytes = b.data + PYPOOL__FRAME_HEADER;
    size_t env_len = b.len - PYPOOL__FRAME_HEADER;
    Pypool__Envelope *whole = pypool__envelope_decode(env_bytes, env_len);
    cr_assert_not_null(whole, "the untruncated request must decode");
    pypool__envelope_free(whole);
    for (size_t cut = 1; cut < env_len; cut++) {
        Pypool__Envelope *e = pypool__envelope_decode(env_bytes, cut);
        cr_assert_null(e, "a request truncated to %zu of %zu bytes decoded", cut, env_len);
    }
    pypool__wbuf_free(&b);
}

Test(frame, silent_peer_hits_the_deadline, .timeout = 30)
{
    test_pipe tp = make_pipe();
    pypool__reader r;
    pypool__reader_init(&r, tp.rd, 1024);
    const uint8_t *body;
    uint32_t len;
    for (int round = 0; round < 3; round++) {
        int64_t t0 = tu_now_ms();
        int rc = pypool__frame_read(&r, pypool__deadline_after_ms(100), &body, &len);
        int64_t took = tu_now_ms() - t0;
        cr_assert_eq(rc, PYPOOL_ETIMEDOUT, "silent peer: got %d (%s)", rc, pypool_strerror(rc));
        cr_assert_geq(took, 100, "round %d: timed out early after %lld ms", round, (long long)took);
        cr_assert_leq(took, 5000, "round %d: 100 ms deadline took %lld ms", round, (long long)took);
        /* A partial header must not turn the timeout into a sticky error either. */
        if (round == 0)
            raw_write(tp.wr, "\x00\x00", 2);
    }
    /* Not sticky: the rest of the frame arrives and is read. */
    raw_write(tp.wr, "\x00\x02hi", 4);
    int rc = pypool__frame_read(&r, pypool__deadline_after_ms(1000), &body, &len);
    cr_assert_eq(rc, 1, "after timeouts: got %d (%s)", rc, pypool_strerror(rc));
    cr_assert_eq(len, 2);
    cr_assert_arr_eq(body, "hi", 2);

    /* A deadline already past returns at once: nothing is ever written, so a read that waited
     * would wait forever (or until some default); 5 s tells the two apart on a loaded machine. */
    int64_t t0 = tu_now_ms();
    rc = pypool__frame_read(&r, pypool__now_ns() - PYPOOL__MS, &body, &len);
    cr_assert_eq(rc, PYPOOL_ETIMEDOUT);
    cr_assert_lt(tu_now_ms() - t0, 5000, "a past deadline must not block");
    pypool__reader_free(&r);
    close_pipe(&tp);
}

/* --- EINTR -------------------------------------------------------------------------------- */

static atomic_int usr1_hits;

static void on_usr1(int sig)
{
    (void)sig;
    atomic_fetch_add(&usr1_hits, 1);
}

/* tu_wait_until predicates: the handler ran since *arg hits; the pipe *arg has no byte left. */
static bool usr1_ran(void *arg)
{
    return atomic_load(&usr1_hits) > *(int *)arg;
}

static bool pipe_drained(void *arg)
{
    int unread = -1;
    return ioctl(*(int *)arg, FIONREAD, &unread) == 0 && unread == 0;
}

typedef struct blocked_reader {
    pypool__reader r;
    atomic_int started;
    atomic_int tid;
    int rc;
    uint8_t got[64];
    uint32_t len;
    pthread_t thread;
} blocked_reader;

static void *blocked_reader_main(void *arg)
{
    blocked_reader *br = arg;
    const uint8_t *body = NULL;
    atomic_store(&br->tid, tu_gettid());
    atomic_store(&br->started, 1);
    br->rc = pypool__frame_read(&br->r, pypool__deadline_after_ms(10000), &body, &br->len);
    if (br->rc == 1 && br->len <= sizeof br->got)
        memcpy(br->got, body, br->len);
    return NULL;
}

Test(frame, eintr_during_blocking_read_does_not_break_it, .timeout = 30)
{
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: poll()/read() really fail with EINTR */
    cr_assert_eq(sigaction(SIGUSR1, &sa, &old), 0);
    atomic_store(&usr1_hits, 0);

    test_pipe tp = make_pipe();
    blocked_reader br;
    memset(&br, 0, sizeof br);
    pypool__reader_init(&br.r, tp.rd, 1024);
    cr_assert_eq(pthread_create(&br.thread, NULL, blocked_reader_main, &br), 0);
    while (!atomic_load(&br.started))
        tu_sleep_ms(1);
    cr_assert(tu_wait_thread_blocked(atomic_load(&br.tid), 10000), "the reader never blocked");

    /* Each signal lands on a reader blocked in poll()/read(): sent once it sleeps there, and the
     * next one only once the handler ran and the reader is back in its blocking call. */
    for (int i = 0; i < 5; i++) {
        int hits = atomic_load(&usr1_hits);
        cr_assert_eq(pthread_kill(br.thread, SIGUSR1), 0);
        cr_assert(tu_wait_until(usr1_ran, &hits, 10000), "SIGUSR1 %d was never handled", i);
        if (i == 2) {
            raw_write(tp.wr, "\x00\x00\x00\x05", 4); /* block inside the frame too */
            cr_assert(tu_wait_until(pipe_drained, &tp.rd, 10000),
                      "the reader never took the header");
        }
        cr_assert(tu_wait_thread_blocked(atomic_load(&br.tid), 10000),
                  "the reader did not block again after SIGUSR1 %d", i);
    }
    cr_assert_eq(atomic_load(&usr1_hits), 5, "SIGUSR1 handled %d times, sent 5",
                 atomic_load(&usr1_hits));
    raw_write(tp.wr, "after", 5);
    pthread_join(br.thread, NULL);

    cr_assert_eq(br.rc, 1, "read interrupted by SIGUSR1 (%d hits) returned %d (%s)",
                 atomic_load(&usr1_hits), br.rc, pypool_strerror(br.rc));
    cr_assert_eq(br.len, 5);
    cr_assert_arr_eq(br.got, "after", 5);
    cr_assert_eq(br.r.err, 0);
    pypool__reader_free(&br.r);
    close_pipe(&tp);
    sigaction(SIGUSR1, &old, NULL);
}

/* --- writes: dead reader, stuck reader ----------------------------------------------------- */

static bool sigpipe_is_default(void)
{
    struct sigaction cur;
    cr_assert_eq(sigaction(SIGPIPE, NULL, &cur), 0);
    return cur.sa_handler == SIG_DFL;
}

static bool sigpipe_pending(void)
{
    sigset_t pend;
    sigemptyset(&pend);
    cr_assert_eq(sigpending(&pend), 0);
    return sigismember(&pend, SIGPIPE) == 1;
}

static bool sigpipe_blocked_here(void)
{
    sigset_t cur;
    pthread_sigmask(SIG_BLOCK, NULL, &cur);
    return sigismember(&cur, SIGPIPE) == 1;
}

/* Puts SIGPIPE at its default (fatal) disposition and unblocked, whatever the runner did. */
static void arm_default_sigpipe(void)
{
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    cr_assert_eq(sigaction(SIGPIPE, &dfl, NULL), 0);
    sigset_t pipe_set;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_UNBLOCK, &pipe_set, NULL);
}

static void assert_no_sigpipe_traces(const char *what)
{
    cr_assert(sigpipe_is_default(), "%s: SIGPIPE disposition was changed", what);
    cr_assert_not(sigpipe_pending(), "%s: a SIGPIPE is left pending", what);
    cr_assert_not(sigpipe_blocked_here(), "%s: SIGPIPE left blocked in the caller's thread", what);
}

Test(frame, write_to_closed_reader_is_eworker_without_sigpipe, .timeout = 30)
{
    arm_default_sigpipe();
    test_pipe tp = make_pipe();
    close_fd(&tp.rd);
    size_t written = 0;
    int rc = write_frame(tp.wr, "hello", 5, pypool__deadline_after_ms(1000), &written);
    /* Reaching this line at all means SIGPIPE did not kill the process. */
    cr_assert_eq(rc, PYPOOL_EWORKER, "write to a closed pipe: got %d (%s)", rc,
                 pypool_strerror(rc));
    cr_assert_eq(written, 0, "%zu bytes reported written to a closed pipe", written);
    assert_no_sigpipe_traces("closed reader");

    /* Twice in a row: the first write must not have consumed anything it should not. */
    rc = write_frame(tp.wr, "again", 5, pypool__deadline_after_ms(1000), NULL);
    cr_assert_eq(rc, PYPOOL_EWORKER);
    assert_no_sigpipe_traces("closed reader, second write");

    /* A caller that keeps SIGPIPE blocked itself gets its mask back unchanged. */
    sigset_t pipe_set;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, NULL);
    rc = write_frame(tp.wr, "blocked", 7, pypool__deadline_after_ms(1000), NULL);
    cr_assert_eq(rc, PYPOOL_EWORKER);
    cr_assert(sigpipe_blocked_here(), "the caller's own SIGPIPE block was undone");
    cr_assert_not(sigpipe_pending(), "a SIGPIPE is left pending (caller blocked it)");
    pthread_sigmask(SIG_UNBLOCK, &pipe_set, NULL);
    close_pipe(&tp);
}

/* A reader that takes a little of a large frame and then goes away. */
typedef struct quitter {
    int fd;
    size_t take;
    pthread_t thread;
} quitter;

static void *quitter_main(void *arg)
{
    quitter *q = arg;
    uint8_t buf[4096];
    size_t got = 0;
    while (got < q->take) {
        ssize_t n = read(q->fd, buf, sizeof buf);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(q->fd);
    return NULL;
}

Test(frame, reader_dying_mid_frame_is_eworker_without_sigpipe, .timeout = 30)
{
    arm_default_sigpipe();
    test_pipe tp = make_pipe();
    quitter q = {.fd = tp.rd, .take = 100 * KIB};
    tp.rd = -1; /* the quitter closes it */
    cr_assert_eq(pthread_create(&q.thread, NULL, quitter_main, &q), 0);
    uint8_t *body = make_payload(2 * MIB, 3);
    size_t written = 0;
    int64_t t0 = tu_now_ms();
    int rc =
        write_frame(tp.wr, body, (uint32_t)(2 * MIB), pypool__deadline_after_ms(10000), &written);
    int64_t took = tu_now_ms() - t0;
    pthread_join(q.thread, NULL);
    cr_assert_eq(rc, PYPOOL_EWORKER, "reader gone mid-frame: got %d (%s) after %lld ms", rc,
                 pypool_strerror(rc), (long long)took);
    cr_assert_lt(took, 5000, "a dead reader must be noticed at once, not at the deadline");
    cr_assert_geq(written, q.take, "written %zu, the reader took at least %zu", written, q.take);
    cr_assert_lt(written, 2 * MIB + 4, "the whole frame cannot have gone out");
    assert_no_sigpipe_traces("reader died mid-frame");
    free(body);
    close_pipe(&tp);
}

Test(frame, write_to_full_pipe_times_out, .timeout = 30)
{
    test_pipe tp = make_pipe();
    uint8_t *body = make_payload(MIB, 5);
    size_t written = 0;
    int64_t t0 = tu_now_ms();
    int rc = write_frame(tp.wr, body, (uint32_t)MIB, pypool__deadline_after_ms(100), &written);
    int64_t took = tu_now_ms() - t0;
    cr_assert_eq(rc, PYPOOL_ETIMEDOUT, "nobody reads: got %d (%s)", rc, pypool_strerror(rc));
    cr_assert_geq(took, 100, "timed out early: %lld ms", (long long)took);
    cr_assert_leq(took, 5000, "100 ms deadline took %lld ms", (long long)took);
    cr_assert_gt(written, 0, "the pipe buffer should have taken some bytes");
    cr_assert_lt(written, MIB + 4, "written %zu: more than the pipe can hold", written);
    free(body);
    close_pipe(&tp);
}

/*
 * pypool__frame_write_held: the pool holds a read end of every request pipe itself, so EPIPE
 * cannot happen; a worker that died while the pipe is full shows as a hangup of its reply pipe.
 */
typedef struct held_writer {
    int fd;
    int hup_fd;
    size_t len;
    int64_t timeout_ms;
    int rc;
    size_t written;
    int64_t done_ms;
    atomic_int tid;
    pthread_t thread;
} held_writer;

static void *held_writer_main(void *arg)
{
    held_writer *w = arg;
    atomic_store(&w->tid, tu_gettid());
    uint8_t *body = make_payload(w->len, 6);
    uint8_t hdr[PYPOOL__FRAME_HEADER];
    pypool__frame_put_header(hdr, (uint32_t)w->len);
    struct iovec iov[2] = {{.iov_base = hdr, .iov_len = sizeof hdr},
                           {.iov_base = body, .iov_len = w->len}};
    w->rc = pypool__frame_write_held(w->fd, w->hup_fd, iov, 2,
                                     pypool__deadline_after_ms(w->timeout_ms), &w->written);
    w->done_ms = tu_now_ms();
    free(body);
    return NULL;
}

Test(frame, held_write_notices_the_worker_hanging_up, .timeout = 30)
{
    arm_default_sigpipe();
    test_pipe req = make_pipe();   /* we keep req.rd open, as the pool does; nobody reads it */
    test_pipe reply = make_pipe(); /* reply.wr plays the worker's fd 4 */
    held_writer w = {.fd = req.wr, .hup_fd = reply.rd, .len = MIB, .timeout_ms = 10000};
    cr_assert_eq(pthread_create(&w.thread, NULL, held_writer_main, &w), 0);
    while (!atomic_load(&w.tid))
        tu_sleep_ms(1);
    cr_assert(tu_wait_thread_blocked(atomic_load(&w.tid), 10000),
              "the writer never filled the pipe and waited");
    int64_t closed_at = tu_now_ms();
    close_fd(&reply.wr); /* the worker dies */
    pthread_join(w.thread, NULL);
    cr_assert_eq(w.rc, PYPOOL_EWORKER, "worker hung up while the pipe was full: got %d (%s)", w.rc,
                 pypool_strerror(w.rc));
    cr_assert_lt(w.done_ms - closed_at, 5000, "the hangup was noticed only after %lld ms",
                 (long long)(w.done_ms - closed_at));
    cr_assert_gt(w.written, 0);
    cr_assert_lt(w.written, MIB + 4);
    assert_no_sigpipe_traces("held write");
    close_pipe(&req);
    close_pipe(&reply);
}

Test(frame, held_write_to_full_pipe_times_out, .timeout = 30)
{
    test_pipe req = make_pipe();
    test_pipe reply = make_pipe(); /* the worker lives on, but never reads */
    held_writer w = {.fd = req.wr, .hup_fd = reply.rd, .len = MIB, .timeout_ms = 100};
    int64_t t0 = tu_now_ms();
    cr_assert_eq(pthread_create(&w.thread, NULL, held_writer_main, &w), 0);
    pthread_join(w.thread, NULL);
    int64_t took = w.done_ms - t0;
    cr_assert_eq(w.rc, PYPOOL_ETIMEDOUT, "got %d (%s)", w.rc, pypool_strerror(w.rc));
    cr_assert_geq(took, 100, "timed out early: %lld ms", (long long)took);
    cr_assert_leq(took, 5000, "100 ms deadline took %lld ms", (long long)took);
    close_pipe(&req);
    close_pipe(&reply);
}

Test(frame, held_write_round_trip, .timeout = 30)
{
    test_pipe req = make_pipe();
    test_pipe reply = make_pipe();
    held_writer w = {.fd = req.wr, .hup_fd = reply.rd, .len = 3 * MIB, .timeout_ms = 10000};
    cr_assert_eq(pthread_create(&w.thread, NULL, held_writer_main, &w), 0);
    pypool__reader r;
    pypool__reader_init(&r, req.rd, SMALL_MAX_FRAME);
    const uint8_t *body;
    uint32_t len;
    int rc = pypool__frame_read(&r, pypool__deadline_after_ms(10000), &body, &len);
    pthread_join(w.thread, NULL);
    cr_assert_eq(w.rc, 0, "held write: %d (%s)", w.rc, pypool_strerror(w.rc));
    cr_assert_eq(w.written, 3 * MIB + PYPOOL__FRAME_HEADER);
    cr_assert_eq(rc, 1, "read: %d (%s)", rc, pypool_strerror(rc));
    cr_assert_eq(len, 3 * MIB);
    cr_assert_eq(first_mismatch(body, len, 6), (size_t)len);
    pypool__reader_free(&r);
    close_pipe(&req);
    close_pipe(&reply);
}

/* --- the reader fed by hand ------------------------------------------------------------------ */

Test(frame, feed_fragmented_input, .timeout = 30)
{
    const size_t sizes[] = {0, 1, 2, 3, 100, 70000, 5, 0};
    const int count = (int)(sizeof sizes / sizeof sizes[0]);
    size_t total = 0;
    for (int i = 0; i < count; i++)
        total += PYPOOL__FRAME_HEADER + sizes[i];
    uint8_t *stream = malloc(total);
    size_t off = 0;
    for (int i = 0; i < count; i++) {
        put_be32(stream + off, (uint32_t)sizes[i]);
        off += PYPOOL__FRAME_HEADER;
        for (size_t j = 0; j < sizes[i]; j++)
            stream[off + j] = pattern_byte(j, (unsigned)i);
        off += sizes[i];
    }

    /* Fragment sizes cycle through awkward values: 1 byte, a header split 3+1, big chunks. */
    const size_t frags[] = {1, 3, 1, 2, 7, 4096, 1, 65536, 5, 13};
    pypool__reader r;
    pypool__reader_init(&r, -1, 128 * 1024);
    int next_frame = 0;
    off = 0;
    for (int f = 0; off < total; f++) {
        size_t n = frags[f % (sizeof frags / sizeof frags[0])];
        if (n > total - off)
            n = total - off;
        cr_assert_eq(pypool__reader_feed(&r, stream + off, n), 0);
        off += n;
        for (;;) {
            const uint8_t *body;
            uint32_t len;
            int rc = pypool__reader_next(&r, &body, &len);
            cr_assert_geq(rc, 0, "reader error %d after %zu bytes", rc, off);
            if (rc == 0)
                break;
            cr_assert_lt(next_frame, count, "more frames than were fed");
            cr_assert_eq(len, sizes[next_frame], "frame %d: length %u want %zu", next_frame, len,
                         sizes[next_frame]);
            cr_assert_eq(first_mismatch(body, len, (unsigned)next_frame), (size_t)len,
                         "frame %d corrupted", next_frame);
            next_frame++;
        }
    }
    cr_assert_eq(next_frame, count, "got %d of %d frames", next_frame, count);

    /* Everything at once: every frame comes out of one feed, one per call. */
    pypool__reader r2;
    pypool__reader_init(&r2, -1, 128 * 1024);
    cr_assert_eq(pypool__reader_feed(&r2, stream, total), 0);
    for (int i = 0; i < count; i++) {
        const uint8_t *body;
        uint32_t len;
        cr_assert_eq(pypool__reader_next(&r2, &body, &len), 1, "frame %d of one feed", i);
        cr_assert_eq(len, sizes[i]);
        cr_assert_eq(first_mismatch(body, len, (unsigned)i), (size_t)len);
    }
    const uint8_t *body;
    uint32_t len;
    cr_assert_eq(pypool__reader_next(&r2, &body, &len), 0);
    pypool__reader_free(&r2);
    pypool__reader_free(&r);
    free(stream);
}

/* ---------------------------------------------------------------------------------------- */
/* codec                                                                                    */
/* ---------------------------------------------------------------------------------------- */

/* Concatenates the request prefix and the payload as they would go on the wire. */
static uint8_t *join_request(const pypool__wbuf *b, const void *payload, size_t plen, size_t *total)
{
    *total = b->len + plen;
    uint8_t *wire = malloc(*total ? *total : 1);
    memcpy(wire, b->data, b->len);
    if (plen)
        memcpy(wire + b->len, payload, plen);
    return wire;
}

static uint32_t get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* Encodes h + payload, decodes it back and checks every field. */
static void check_request_round_trip(const pypool__request_hdr *h, const uint8_t *payload,
                                     uint32_t max_frame)
{
    pypool__wbuf b = {0};
    int rc = pypool__encode_request(&b, h, max_frame);
    cr_assert_eq(rc, 0, "encode_request(%zu-byte payload): %d", h->payload_len, rc);
    size_t total;
    uint8_t *wire = join_request(&b, payload, h->payload_len, &total);
    cr_assert_geq(total, PYPOOL__FRAME_HEADER);
    uint32_t n = get_be32(wire);
    cr_assert_eq((size_t)n, total - PYPOOL__FRAME_HEADER,
                 "frame header says %u, prefix + payload are %zu", n, total - PYPOOL__FRAME_HEADER);
    cr_assert_leq(n, max_frame);

    Pypool__Envelope *env = pypool__envelope_decode(wire + PYPOOL__FRAME_HEADER, n);
    cr_assert_not_null(env, "encoded request does not decode");
    cr_assert_eq(env->msg_case, PYPOOL__ENVELOPE__MSG_REQUEST, "msg_case %d", env->msg_case);
    Pypool__Request *req = env->request;
    cr_assert_eq(req->id, h->id);
    cr_assert_str_eq(req->method, h->method);
    cr_assert_str_eq(req->session_id, h->session_id ? h->session_id : "");
    cr_assert_eq(req->deadline_ms, h->deadline_ms);
    cr_assert_eq(req->payload.len, h->payload_len, "payload %zu bytes, want %zu", req->payload.len,
                 h->payload_len);
    if (h->payload_len)
        cr_assert_eq(memcmp(req->payload.data, payload, h->payload_len), 0, "payload differs");
    pypool__envelope_free(env);
    free(wire);
    pypool__wbuf_free(&b);
}

Test(codec, request_round_trips_through_decode, .timeout = 30)
{
    uint8_t *payload = make_payload(300 * KIB, 11);
    pypool__request_hdr h = {.id = 42,
                             .method = "echo",
                             .session_id = "session-1",
                             .deadline_ms = 1234,
                             .payload_len = 5};
    check_request_round_trip(&h, payload, SMALL_MAX_FRAME);

    /* Large ids, long names, a payload whose length needs a 3-byte varint. */
    pypool__request_hdr big = {.id = UINT64_MAX,
                               .method = "a_rather_long_method_name_for_a_handler",
                               .session_id = NULL,
                               .deadline_ms = INT64_C(86400000),
                               .payload_len = 300 * KIB};
    check_request_round_trip(&big, payload, SMALL_MAX_FRAME);

    /* Every payload length around the varint boundaries. */
    const size_t lens[] = {1, 126, 127, 128, 129, 16383, 16384, 16385};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        pypool__request_hdr hi = {.id = i + 1, .method = "m", .payload_len = lens[i]};
        check_request_round_trip(&hi, payload, SMALL_MAX_FRAME);
    }
    free(payload);
}

Test(codec, request_with_empty_payload, .timeout = 30)
{
    pypool__request_hdr h = {.id = 1, .method = "ping_me", .session_id = "", .payload_len = 0};
    check_request_round_trip(&h, NULL, 1024);
    pypool__request_hdr none = {.id = 0, .method = "x", .payload_len = 0};
    check_request_round_trip(&none, NULL, 1024);
}

Test(codec, request_over_max_frame_is_einval, .timeout = 30)
{
    pypool__wbuf b = {0};
    const uint32_t max_frame = 1024;
    pypool__request_hdr h = {.id = 3, .method = "echo", .session_id = "s"};

    h.payload_len = max_frame;
    cr_assert_eq(pypool__encode_request(&b, &h, max_frame), PYPOOL_EINVAL,
                 "payload == max_frame leaves no room for the envelope");
    h.payload_len = (size_t)max_frame * 4;
    cr_assert_eq(pypool__encode_request(&b, &h, max_frame), PYPOOL_EINVAL);
    h.payload_len = SIZE_MAX / 2;
    cr_assert_eq(pypool__encode_request(&b, &h, max_frame), PYPOOL_EINVAL);

    /* Acceptance is exactly "the frame body fits": monotone, the largest accepted is full. */
    size_t last_ok = 0;
    uint32_t last_body = 0;
    bool rejected = false;
    for (size_t len = max_frame - 64; len <= max_frame; len++) {
        h.payload_len = len;
        int rc = pypool__encode_request(&b, &h, max_frame);
        if (rc == 0) {
            cr_assert_not(rejected, "payload %zu accepted after a smaller one was rejected", len);
            last_ok = len;
            last_body = get_be32(b.data);
            cr_assert_eq((size_t)last_body, b.len - PYPOOL__FRAME_HEADER + len);
            cr_assert_leq(last_body, max_frame, "payload %zu: body %u over %u", len, last_body,
                          max_frame);
        } else {
            cr_assert_eq(rc, PYPOOL_EINVAL, "payload %zu: rc %d", len, rc);
            rejected = true;
        }
    }
    cr_assert(rejected);
    cr_assert_gt(last_ok, 0, "no payload near the limit was accepted");
    cr_assert_geq(last_body, max_frame - 1, "largest accepted body %u: the limit %u is not used",
                  last_body, max_frame);
    pypool__wbuf_free(&b);
}

Test(codec, small_frames_decode, .timeout = 30)
{
    pypool__wbuf b = {0};
    cr_assert_eq(pypool__encode_ping(&b, 77), 0);
    Pypool__Envelope *env =
        pypool__envelope_decode(b.data + PYPOOL__FRAME_HEADER, b.len - PYPOOL__FRAME_HEADER);
    cr_assert_not_null(env);
    cr_assert_eq(get_be32(b.data), b.len - PYPOOL__FRAME_HEADER);
    cr_assert_eq(env->msg_case, PYPOOL__ENVELOPE__MSG_PING);
    cr_assert_eq(env->ping->id, 77);
    pypool__envelope_free(env);

    cr_assert_eq(pypool__encode_shutdown(&b), 0);
    env = pypool__envelope_decode(b.data + PYPOOL__FRAME_HEADER, b.len - PYPOOL__FRAME_HEADER);
    cr_assert_not_null(env);
    cr_assert_eq(env->msg_case, PYPOOL__ENVELOPE__MSG_SHUTDOWN);
    pypool__envelope_free(env);

    cr_assert_eq(pypool__encode_session_close(&b, "sess-9"), 0);
    env = pypool__envelope_decode(b.data + PYPOOL__FRAME_HEADER, b.len - PYPOOL__FRAME_HEADER);
    cr_assert_not_null(env);
    cr_assert_eq(env->msg_case, PYPOOL__ENVELOPE__MSG_SESSION_CLOSE);
    cr_assert_str_eq(env->session_close->session_id, "sess-9");
    pypool__envelope_free(env);
    pypool__envelope_free(NULL); /* NULL-safe */
    pypool__wbuf_free(&b);
}

typedef struct iov_writer {
    int fd;
    struct iovec iov[2];
    int rc;
    pthread_t thread;
} iov_writer;

static void *iov_writer_main(void *arg)
{
    iov_writer *w = arg;
    w->rc = pypool__frame_write(w->fd, w->iov, 2, pypool__deadline_after_ms(10000), NULL);
    return NULL;
}

Test(codec, request_through_a_real_pipe, .timeout = 30)
{
    /* The exact iovecs a call sends: encoded prefix + the caller's payload, no copy. */
    test_pipe tp = make_pipe();
    uint8_t *payload = make_payload(200 * KIB, 4);
    pypool__wbuf b = {0};
    pypool__request_hdr h = {.id = 9,
                             .method = "echo",
                             .session_id = "s",
                             .deadline_ms = 5000,
                             .payload_len = 200 * KIB};
    cr_assert_eq(pypool__encode_request(&b, &h, SMALL_MAX_FRAME), 0);

    /* 200 KiB does not fit a default pipe: write on another thread, read on this one. */
    iov_writer w = {.fd = tp.wr,
                    .iov = {{.iov_base = b.data, .iov_len = b.len},
                            {.iov_base = payload, .iov_len = h.payload_len}}};
    cr_assert_eq(pthread_create(&w.thread, NULL, iov_writer_main, &w), 0);
    pypool__reader r;
    pypool__reader_init(&r, tp.rd, SMALL_MAX_FRAME);
    const uint8_t *body;
    uint32_t len;
    int rc = pypool__frame_read(&r, pypool__deadline_after_ms(10000), &body, &len);
    pthread_join(w.thread, NULL);
    cr_assert_eq(w.rc, 0, "frame_write: %d (%s)", w.rc, pypool_strerror(w.rc));
    cr_assert_eq(rc, 1, "frame_read: %d (%s)", rc, pypool_strerror(rc));

    Pypool__Envelope *env = pypool__envelope_decode(body, len);
    cr_assert_not_null(env);
    cr_assert_eq(env->msg_case, PYPOOL__ENVELOPE__MSG_REQUEST);
    cr_assert_eq(env->request->id, 9);
    cr_assert_str_eq(env->request->method, "echo");
    cr_assert_str_eq(env->request->session_id, "s");
    cr_assert_eq(env->request->deadline_ms, 5000);
    cr_assert_eq(env->request->payload.len, 200 * KIB);
    cr_assert_eq(first_mismatch(env->request->payload.data, 200 * KIB, 4), 200 * KIB);
    /* The decoder leaves a NUL after bytes fields: a stolen payload is a C string too. */
    size_t stolen_len = 0;
    uint8_t *stolen = pypool__steal_bytes(&env->request->payload, &stolen_len);
    cr_assert_eq(stolen_len, 200 * KIB);
    cr_assert_eq(stolen[stolen_len], 0);
    free(stolen);
    pypool__envelope_free(env);
    pypool__reader_free(&r);
    pypool__wbuf_free(&b);
    free(payload);
    close_pipe(&tp);
}

/* ---------------------------------------------------------------------------------------- */
/* logbuf                                                                                   */
/* ---------------------------------------------------------------------------------------- */

#define MAX_LINES 64

typedef struct line_log {
    int count;
    char *lines[MAX_LINES];
} line_log;

static void collect_line(void *ud, const char *line)
{
    line_log *ll = ud;
    cr_assert_lt(ll->count, MAX_LINES, "too many lines emitted");
    ll->lines[ll->count++] = strdup(line);
}

static void discard_line(void *ud, const char *line)
{
    (void)line;
    (*(int *)ud)++;
}

static void line_log_free(line_log *ll)
{
    for (int i = 0; i < ll->count; i++)
        free(ll->lines[i]);
    ll->count = 0;
}

static void feed_str(pypool__logbuf *lb, const char *s, line_log *ll)
{
    pypool__logbuf_feed(lb, s, strlen(s), collect_line, ll);
}

Test(logbuf, splits_lines_across_chunks, .timeout = 30)
{
    pypool__logbuf lb;
    pypool__logbuf_init(&lb);
    line_log ll = {0};
    feed_str(&lb, "first\nsec", &ll);
    cr_assert_eq(ll.count, 1);
    feed_str(&lb, "ond\n\nthi", &ll);
    cr_assert_eq(ll.count, 3);
    feed_str(&lb, "rd", &ll);
    cr_assert_eq(ll.count, 3, "a partial line must wait for its newline");
    pypool__logbuf_flush(&lb, collect_line, &ll);
    cr_assert_eq(ll.count, 4, "flush emits the partial line");
    cr_assert_str_eq(ll.lines[0], "first");
    cr_assert_str_eq(ll.lines[1], "second");
    cr_assert_str_eq(ll.lines[2], "", "an empty line is still a line");
    cr_assert_str_eq(ll.lines[3], "third");
    pypool__logbuf_flush(&lb, collect_line, &ll);
    cr_assert_eq(ll.count, 4, "flush with nothing pending emits nothing");
    line_log_free(&ll);
}

Test(logbuf, one_byte_at_a_time_and_crlf, .timeout = 30)
{
    pypool__logbuf lb;
    pypool__logbuf_init(&lb);
    line_log ll = {0};
    const char *text = "dos line\r\nunix line\nbare\rcr inside\r\n";
    for (size_t i = 0; text[i]; i++)
        pypool__logbuf_feed(&lb, text + i, 1, collect_line, &ll);
    cr_assert_eq(ll.count, 3);
    cr_assert_str_eq(ll.lines[0], "dos line", "CRLF: the CR must go");
    cr_assert_str_eq(ll.lines[1], "unix line");
    cr_assert_str_eq(ll.lines[2], "bare\rcr inside", "only a CR before the LF is dropped");
    line_log_free(&ll);
}

/* Feeds `len` bytes of a long line + '\n' and checks the pieces reassemble to it. */
static void check_long_line(size_t len, size_t chunk, int want_pieces)
{
    char *line = malloc(len + 1);
    for (size_t i = 0; i < len; i++)
        line[i] = (char)('a' + (i * 7 + i / 26) % 26);
    line[len] = '\n';
    pypool__logbuf lb;
    pypool__logbuf_init(&lb);
    line_log ll = {0};
    for (size_t off = 0; off < len + 1; off += chunk) {
        size_t n = len + 1 - off < chunk ? len + 1 - off : chunk;
        pypool__logbuf_feed(&lb, line + off, n, collect_line, &ll);
    }
    pypool__logbuf_flush(&lb, collect_line, &ll);
    cr_assert_eq(ll.count, want_pieces, "%zu-byte line: %d pieces, want %d", len, ll.count,
                 want_pieces);
    size_t pos = 0;
    for (int i = 0; i < ll.count; i++) {
        const char *piece = ll.lines[i];
        size_t plen = strlen(piece);
        cr_assert_leq(plen, PYPOOL__LOG_LINE_MAX, "piece %d is %zu bytes", i, plen);
        if (i > 0) {
            cr_assert_eq(strncmp(piece, "... ", 4), 0, "piece %d lacks the '... ' mark: %.10s", i,
                         piece);
            piece += 4;
            plen -= 4;
        } else {
            cr_assert_neq(strncmp(piece, "... ", 4), 0, "the first piece is marked");
        }
        cr_assert_leq(pos + plen, len, "pieces add up to more than the line");
        cr_assert_eq(memcmp(piece, line + pos, plen), 0, "piece %d differs at offset %zu", i, pos);
        pos += plen;
    }
    cr_assert_eq(pos, len, "pieces carry %zu of %zu bytes", pos, len);
    line_log_free(&ll);
    free(line);
}

Test(logbuf, long_line_is_cut_with_continuation_marks, .timeout = 30)
{
    const size_t max = PYPOOL__LOG_LINE_MAX;
    check_long_line(max - 1, 4096, 1);
    check_long_line(max, 4096, 1); /* exactly full: one line, no empty continuation */
    check_long_line(max + 1, 4096, 2);
    check_long_line(2 * max + 100, 1000, 3);
    check_long_line(2 * max + 100, 1, 3);
    check_long_line(10 * max, 65536, 11);

    /* The line after a cut one is a fresh line, not a continuation. */
    pypool__logbuf lb;
    pypool__logbuf_init(&lb);
    line_log ll = {0};
    char *big = malloc(max + 10);
    memset(big, 'z', max + 10);
    pypool__logbuf_feed(&lb, big, max + 10, collect_line, &ll);
    feed_str(&lb, "\nnext\n", &ll);
    cr_assert_eq(ll.count, 3);
    cr_assert_str_eq(ll.lines[1], "... zzzzzzzzzz");
    cr_assert_str_eq(ll.lines[2], "next");
    line_log_free(&ll);
    free(big);
}

Test(logbuf, tail_keeps_the_newest_bytes, .timeout = 30)
{
    pypool__logbuf lb;
    pypool__logbuf_init(&lb);
    line_log ll = {0};
    char out[PYPOOL__LOG_TAIL + 64];

    pypool__logbuf_tail(&lb, out, sizeof out);
    cr_assert_str_eq(out, "", "empty tail");
    feed_str(&lb, "short\n", &ll);
    pypool__logbuf_tail(&lb, out, sizeof out);
    cr_assert_str_eq(out, "short\n");

    /* 10000 bytes of numbered lines, in uneven chunks: the tail is the stream's last 2048. */
    char *stream = malloc(20000);
    size_t len = 0;
    for (int i = 0; len < 10000; i++)
        len += (size_t)sprintf(stream + len, "line %05d\n", i);
    pypool__logbuf_init(&lb);
    line_log_free(&ll);
    const size_t chunks[] = {1, 100, 2047, 2048, 2049, 7, 3000};
    size_t off = 0;
    int lines = 0;
    for (int c = 0; off < len; c++) {
        size_t n = chunks[c % 7];
        if (n > len - off)
            n = len - off;
        pypool__logbuf_feed(&lb, stream + off, n, discard_line, &lines);
        off += n;
    }
    cr_assert_eq(lines, 910, "%d lines emitted", lines);
    pypool__logbuf_tail(&lb, out, sizeof out);
    cr_assert_eq(strlen(out), (size_t)PYPOOL__LOG_TAIL, "tail is %zu bytes", strlen(out));
    cr_assert_eq(memcmp(out, stream + len - PYPOOL__LOG_TAIL, PYPOOL__LOG_TAIL), 0,
                 "the tail is not the newest %d bytes", PYPOOL__LOG_TAIL);

    /* A small output buffer gets the newest len-1 bytes. */
    char small[33];
    pypool__logbuf_tail(&lb, small, sizeof small);
    cr_assert_eq(strlen(small), sizeof small - 1);
    cr_assert_eq(memcmp(small, stream + len - 32, 32), 0, "small tail: '%s'", small);

    /* One feed larger than the tail keeps its own last bytes. */
    pypool__logbuf_init(&lb);
    pypool__logbuf_feed(&lb, "old stuff\n", 10, discard_line, &lines);
    pypool__logbuf_feed(&lb, stream, len, discard_line, &lines);
    pypool__logbuf_tail(&lb, out, sizeof out);
    cr_assert_eq(memcmp(out, stream + len - PYPOOL__LOG_TAIL, PYPOOL__LOG_TAIL), 0);
    cr_assert_null(strstr(out, "old stuff"));
    free(stream);
}
