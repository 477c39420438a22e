/*
 * result.c - layer 0: the pypool_result a call or a stream chunk hands back, and filling in its
 * error the one way every entry point does.
 */
#include "result.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

void pypool_result_free(pypool_result *r)
{
    if (!r)
        return;
    free(r->data);
    free(r->error_type);
    free(r->error_message);
    free(r->traceback);
    memset(r, 0, sizeof *r);
}

int pypool__result_error(pypool_result *out, int err, const char *msg)
{
    if (out && !out->error_message)
        out->error_message = strdup(msg && *msg ? msg : pypool_strerror(err));
    pypool__set_error(err, "%s", msg && *msg ? msg : pypool_strerror(err));
    return err;
}

int pypool__result_fail(pypool_result *out, int err, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    free(out->error_message);
    out->error_message = strdup(buf);
    pypool__set_error(err, "%s", buf);
    return err;
}
