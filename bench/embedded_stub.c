/*
 * embedded_stub.c - stands in for embedded.c when CMake did not find python3-embed: the
 * embedded column then reads "-" everywhere.
 */
#include "bench.h"

bool emb_available(void)
{
    return false;
}

int emb_call(const char *method, const void *payload, size_t len)
{
    (void)method;
    (void)payload;
    (void)len;
    return -1;
}

void emb_shutdown(void) {}
