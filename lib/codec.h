/*
 * codec.h - the Envelope messages of proto/pypool.proto on the C side (protobuf-c).
 *
 * Requests are framed without copying the payload: the frame header, the Envelope/Request
 * prefix and the payload field's tag are encoded into a reusable per-worker buffer and the
 * payload itself goes out as its own iovec. Decoding uses an allocator that leaves a NUL after
 * every block, so a reply payload can be handed to the caller as is (no copy).
 */
#ifndef PYPOOL_CODEC_H
#define PYPOOL_CODEC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "pypool.pb-c.h"

/* A growable byte buffer reused across calls. */
typedef struct pypool__wbuf {
    uint8_t *data;
    size_t len;
    size_t cap;
} pypool__wbuf;

void pypool__wbuf_free(pypool__wbuf *b);

typedef struct pypool__request_hdr {
    uint64_t id;
    const char *method;
    const char *session_id; /* NULL or "": none */
    int64_t deadline_ms;    /* time left; 0: none */
    size_t payload_len;
} pypool__request_hdr;

/*
 * Encodes the frame header and everything of the Request but the payload bytes into b; the
 * payload follows as its own iovec. PYPOOL_EINVAL if the frame would exceed max_frame.
 */
int pypool__encode_request(pypool__wbuf *b, const pypool__request_hdr *h, uint32_t max_frame);

/* Encodes a whole small frame (header included) for a Ping, Shutdown or SessionClose. */
int pypool__encode_ping(pypool__wbuf *b, uint64_t id);
int pypool__encode_shutdown(pypool__wbuf *b);
int pypool__encode_session_close(pypool__wbuf *b, const char *session_id);
int pypool__encode_cancel(pypool__wbuf *b, uint64_t id);
/* HostError codes the library itself gives (host functions return their own, non-zero). */
#define PYPOOL__HOST_ERR_NO_FN    (-1) /* the pool has no host_fn */
#define PYPOOL__HOST_ERR_TOO_BIG  (-2) /* host_fn's reply does not fit in a frame */
#define PYPOOL__HOST_ERR_CANCELED (-3) /* the call was cancelled; its host calls are refused */

/* A HostReply: payload on success (error 0), else error and message. PYPOOL_EINVAL if the
 * frame would exceed max_frame. */
int pypool__encode_host_reply(pypool__wbuf *b, uint64_t id, uint64_t call_id, const void *payload,
                              size_t len, int error, const char *message, uint32_t max_frame);

/* Decodes one frame body; NULL if it is not a valid Envelope. Free with envelope_free. */
Pypool__Envelope *pypool__envelope_decode(const uint8_t *body, size_t len);
void pypool__envelope_free(Pypool__Envelope *env);

/* Takes a bytes field's buffer out of a decoded message (NUL-terminated, caller frees). */
uint8_t *pypool__steal_bytes(ProtobufCBinaryData *field, size_t *len);

#endif
