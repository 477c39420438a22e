/*
 * wire.c - the floor's side of pypool's wire protocol, as lean as it can be done:
 *   send: the Envelope/Request prefix (id, method, payload tag and length) packed by hand into a
 *         reused buffer, then the payload: one write(2) for small frames, writev(2) for big ones
 *         (so a large payload is never copied just to prepend its header);
 *   recv: one read(2) into a reused buffer usually brings header and body together; the body
 *         is decoded with protobuf-c's pypool__envelope__unpack, as any client would.
 * No deadline, no poll, no lock: the floor is the cost of the transport itself.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "bench.h"
#include "pypool.pb-c.h"

#define TAG_ENVELOPE_REQUEST 0x12 /* Envelope.request: field 2, length-delimited */
#define TAG_REQUEST_ID       0x08 /* Request.id: field 1, varint */
#define TAG_REQUEST_METHOD   0x12 /* Request.method: field 2, length-delimited */
#define TAG_REQUEST_PAYLOAD  0x1a /* Request.payload: field 3, length-delimited */
#define COALESCE_LIMIT       (16 * 1024)

static int buf_reserve(wire_buf *b, size_t need)
{
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 64 * 1024;
    while (cap < need)
        cap *= 2;
    uint8_t *d = realloc(b->data, cap);
    if (!d)
        return -ENOMEM;
    b->data = d;
    b->cap = cap;
    return 0;
}

void wire_buf_free(wire_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->cap = 0;
}

static size_t varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static uint8_t *put_varint(uint8_t *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

static int writev_all(int fd, struct iovec *iov, int cnt)
{
    while (cnt > 0) {
        ssize_t n = writev(fd, iov, cnt);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? -errno : -EPIPE;
        while (cnt > 0 && (size_t)n >= iov->iov_len) {
            n -= (ssize_t)iov->iov_len;
            iov++;
            cnt--;
        }
        if (cnt > 0) {
            iov->iov_base = (uint8_t *)iov->iov_base + n;
            iov->iov_len -= (size_t)n;
        }
    }
    return 0;
}

int wire_send_request(int fd, uint64_t id, const char *method, const void *payload, size_t len,
                      wire_buf *scratch)
{
    size_t mlen = strlen(method);
    size_t req = 1 + varint_len(id) + 1 + varint_len(mlen) + mlen + 1 + varint_len(len) + len;
    size_t body = 1 + varint_len(req) + req;
    size_t head = 4 + body - len;
    bool coalesce = len <= COALESCE_LIMIT;
    if (buf_reserve(scratch, coalesce ? 4 + body : head) != 0)
        return -ENOMEM;
    uint8_t *p = scratch->data;
    *p++ = (uint8_t)(body >> 24);
    *p++ = (uint8_t)(body >> 16);
    *p++ = (uint8_t)(body >> 8);
    *p++ = (uint8_t)body;
    *p++ = TAG_ENVELOPE_REQUEST;
    p = put_varint(p, req);
    *p++ = TAG_REQUEST_ID;
    p = put_varint(p, id);
    *p++ = TAG_REQUEST_METHOD;
    p = put_varint(p, mlen);
    memcpy(p, method, mlen);
    p += mlen;
    *p++ = TAG_REQUEST_PAYLOAD;
    p = put_varint(p, len);
    if (coalesce && len)
        memcpy(p, payload, len);
    struct iovec iov[2] = {{scratch->data, coalesce ? 4 + body : head}, {(void *)payload, len}};
    return writev_all(fd, iov, coalesce || !len ? 1 : 2);
}

/* Reads until buf holds at least `want` bytes (it may hold more: the next frame's start is
 * impossible here, one request is outstanding at a time). */
static int read_at_least(int fd, wire_buf *b, size_t *have, size_t want)
{
    if (buf_reserve(b, want) != 0)
        return -ENOMEM;
    while (*have < want) {
        ssize_t n = read(fd, b->data + *have, b->cap - *have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? -errno : -EPIPE;
        *have += (size_t)n;
    }
    return 0;
}

static int check_response(const Pypool__Envelope *env, uint64_t id, size_t *out_len)
{
    if (!env || env->msg_case != PYPOOL__ENVELOPE__MSG_RESPONSE)
        return -EPROTO;
    if (env->response->id != id || env->response->error)
        return -EPROTO;
    *out_len = env->response->payload.len;
    return 0;
}

int wire_recv_response(int fd, uint64_t id, wire_buf *scratch, size_t *out_len)
{
    size_t have = 0;
    int rc = read_at_least(fd, scratch, &have, 4);
    if (rc != 0)
        return rc;
    const uint8_t *h = scratch->data;
    size_t body = (size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3];
    rc = read_at_least(fd, scratch, &have, 4 + body);
    if (rc != 0)
        return rc;
    Pypool__Envelope *env = pypool__envelope__unpack(NULL, body, scratch->data + 4);
    rc = check_response(env, id, out_len);
    if (env)
        pypool__envelope__free_unpacked(env, NULL);
    return rc;
}
