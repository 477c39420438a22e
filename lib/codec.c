/*
 * codec.c - encoding and decoding of pypool Envelopes (see codec.h).
 *
 * Why the hand-written prefix: protobuf-c can only pack into one contiguous buffer, which for
 * a 50 MiB payload means a 50 MiB copy per call. The Request without its payload is packed by
 * protobuf-c; the Envelope field tag, the lengths and the payload field tag are a few varints
 * written here. Protobuf parsers accept fields in any order, so the payload field may follow
 * the others.
 */
#include "codec.h"

#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "pypool.h"

#define TAG_ENVELOPE_REQUEST 0x12 /* field 2, length-delimited */
#define TAG_REQUEST_PAYLOAD  0x1a /* field 3, length-delimited */
#define VARINT_MAX           10

void pypool__wbuf_free(pypool__wbuf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

static int wbuf_reserve(pypool__wbuf *b, size_t need)
{
    if (b->cap >= need)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    uint8_t *data = realloc(b->data, cap);
    if (!data)
        return PYPOOL_ENOMEM;
    b->data = data;
    b->cap = cap;
    return 0;
}

static size_t varint_size(uint64_t v)
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

int pypool__encode_request(pypool__wbuf *b, const pypool__request_hdr *h, uint32_t max_frame)
{
    Pypool__Request req = PYPOOL__REQUEST__INIT;
    req.id = h->id;
    req.method = (char *)h->method;
    req.session_id = (char *)(h->session_id ? h->session_id : "");
    req.deadline_ms = h->deadline_ms;
    size_t head = pypool__request__get_packed_size(&req);
    size_t payload_field = h->payload_len ? 1 + varint_size(h->payload_len) + h->payload_len : 0;
    size_t req_len = head + payload_field;
    size_t body = 1 + varint_size(req_len) + req_len;
    if (h->payload_len > max_frame || body > max_frame)
        return PYPOOL_EINVAL;
    if (wbuf_reserve(b, PYPOOL__FRAME_HEADER + 2 * VARINT_MAX + 2 + head) != 0)
        return PYPOOL_ENOMEM;
    uint8_t *p = b->data;
    pypool__frame_put_header(p, (uint32_t)body);
    p += PYPOOL__FRAME_HEADER;
    *p++ = TAG_ENVELOPE_REQUEST;
    p = put_varint(p, req_len);
    p += pypool__request__pack(&req, p);
    if (h->payload_len) {
        *p++ = TAG_REQUEST_PAYLOAD;
        p = put_varint(p, h->payload_len);
    }
    b->len = (size_t)(p - b->data);
    return 0;
}

/* Packs a whole envelope after a frame header into b. */
static int encode_envelope(pypool__wbuf *b, const Pypool__Envelope *env)
{
    size_t n = pypool__envelope__get_packed_size(env);
    if (wbuf_reserve(b, PYPOOL__FRAME_HEADER + n) != 0)
        return PYPOOL_ENOMEM;
    pypool__frame_put_header(b->data, (uint32_t)n);
    pypool__envelope__pack(env, b->data + PYPOOL__FRAME_HEADER);
    b->len = PYPOOL__FRAME_HEADER + n;
    return 0;
}

int pypool__encode_ping(pypool__wbuf *b, uint64_t id)
{
    Pypool__Ping ping = PYPOOL__PING__INIT;
    ping.id = id;
    Pypool__Envelope env = PYPOOL__ENVELOPE__INIT;
    env.msg_case = PYPOOL__ENVELOPE__MSG_PING;
    env.ping = &ping;
    return encode_envelope(b, &env);
}

int pypool__encode_shutdown(pypool__wbuf *b)
{
    Pypool__Shutdown sd = PYPOOL__SHUTDOWN__INIT;
    Pypool__Envelope env = PYPOOL__ENVELOPE__INIT;
    env.msg_case = PYPOOL__ENVELOPE__MSG_SHUTDOWN;
    env.shutdown = &sd;
    return encode_envelope(b, &env);
}

int pypool__encode_session_close(pypool__wbuf *b, const char *session_id)
{
    Pypool__SessionClose sc = PYPOOL__SESSION_CLOSE__INIT;
    sc.session_id = (char *)session_id;
    Pypool__Envelope env = PYPOOL__ENVELOPE__INIT;
    env.msg_case = PYPOOL__ENVELOPE__MSG_SESSION_CLOSE;
    env.session_close = &sc;
    return encode_envelope(b, &env);
}

int pypool__encode_cancel(pypool__wbuf *b, uint64_t id)
{
    Pypool__Cancel c = PYPOOL__CANCEL__INIT;
    c.id = id;
    Pypool__Envelope env = PYPOOL__ENVELOPE__INIT;
    env.msg_case = PYPOOL__ENVELOPE__MSG_CANCEL;
    env.cancel = &c;
    return encode_envelope(b, &env);
}

int pypool__encode_host_reply(pypool__wbuf *b, uint64_t id, uint64_t call_id, const void *payload,
                              size_t len, int error, const char *message, uint32_t max_frame)
{
    Pypool__HostReply r = PYPOOL__HOST_REPLY__INIT;
    r.id = id;
    r.call_id = call_id;
    r.payload.data = (uint8_t *)payload;
    r.payload.len = payload ? len : 0;
    r.error = error;
    r.message = (char *)(message ? message : "");
    Pypool__Envelope env = PYPOOL__ENVELOPE__INIT;
    env.msg_case = PYPOOL__ENVELOPE__MSG_HOST_REPLY;
    env.host_reply = &r;
    if (pypool__envelope__get_packed_size(&env) > max_frame)
        return PYPOOL_EINVAL;
    return encode_envelope(b, &env);
}

/* Every decoded block carries one extra NUL byte, so stolen bytes fields are C strings too. */
static void *nul_alloc(void *ud, size_t size)
{
    (void)ud;
    uint8_t *p = malloc(size + 1);
    if (p)
        p[size] = 0;
    return p;
}

static void nul_free(void *ud, void *ptr)
{
    (void)ud;
    free(ptr);
}

static ProtobufCAllocator nul_allocator = {.alloc = nul_alloc, .free = nul_free};

Pypool__Envelope *pypool__envelope_decode(const uint8_t *body, size_t len)
{
    return pypool__envelope__unpack(&nul_allocator, len, body);
}

void pypool__envelope_free(Pypool__Envelope *env)
{
    if (env)
        pypool__envelope__free_unpacked(env, &nul_allocator);
}

uint8_t *pypool__steal_bytes(ProtobufCBinaryData *field, size_t *len)
{
    uint8_t *data = field->data;
    *len = field->len;
    field->data = NULL;
    field->len = 0;
    if (!data)
        data = calloc(1, 1);
    return data;
}
