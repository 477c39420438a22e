/*
 * payloads.c - large payloads: a 50 MiB round trip with max_frame_bytes raised; a payload over
 * max_frame_bytes is refused (PYPOOL_EINVAL or PYPOOL_EPROTO) without harming the host or the
 * pool; a reply over the limit is the worker's FrameTooLarge error.
 */
#define _GNU_SOURCE
#include "pool_test.h"

TestSuite(pool_payloads, .init = tu_log_reset, .fini = pt_teardown, .timeout = 60);

#define MIB (1024u * 1024u)

Test(pool_payloads, fifty_mib_round_trip_with_raised_frame_limit, .timeout = 90)
{
    pypool_config cfg;
    tu_config(&cfg, "echo_mod", 1);
    cfg.max_frame_bytes = 80 * MIB;
    pypool *p = pt_create(&cfg);

    size_t len = 50 * MIB;
    uint8_t *buf = malloc(len);
    cr_assert_not_null(buf);
    for (size_t i = 0; i < len; i++)
        buf[i] = (uint8_t)((i * 2654435761u) >> 13);
    for (int round = 0; round < 2; round++) {
        pypool_result r;
        int rc = pypool_call(p, "echo", buf, len, 60000, &r);
        PT_ASSERT_RC(rc, PYPOOL_OK, &r, "50 MiB echo");
        cr_assert_eq(r.len, len, "reply of %zu bytes, sent %zu", r.len, len);
        size_t at = 0;
        while (at < len && r.data[at] == buf[at])
            at++;
        cr_assert_eq(at, len, "reply differs at byte %zu", at);
        pypool_result_free(&r);
    }
    free(buf);
    cr_assert_eq(pt_stats(p).restarts, 0);
    pt_destroy(p);
}

Test(pool_payloads, payload_over_the_frame_limit_is_refused_and_the_pool_survives, .timeout = 60)
{
    pypool_config cfg;
    tu_config(&cfg, "pool_extra", 1);
    cfg.max_frame_bytes = 1 * MIB;
    pypool *p = pt_create(&cfg);

    size_t big = 2 * MIB;
    uint8_t *buf = calloc(1, big);
    cr_assert_not_null(buf);
    pypool_result r;
    int rc = pypool_call(p, "seq", buf, big, 10000, &r);
    cr_assert(rc == PYPOOL_EINVAL || rc == PYPOOL_EPROTO,
              "2 MiB payload with a 1 MiB frame limit: %s: %s", pypool_strerror(rc), pt_msg(&r));
    pypool_result_free(&r);

    /* Just under the limit (room for the envelope) still works. */
    size_t fits = 1 * MIB - 256;
    rc = pypool_call(p, "seq", buf, fits, 10000, &r);
    PT_ASSERT_RC(rc, PYPOOL_OK, &r, "payload just under the frame limit");
    cr_assert_gt(r.len, fits, "seq reply of %zu bytes", r.len);
    pypool_result_free(&r);
    free(buf);

    /* A reply over the limit: the worker refuses to send it and keeps serving. */
    rc = pt_call_str(p, "nbytes", "2000000", 10000, &r);
    PT_ASSERT_RC(rc, PYPOOL_EREMOTE, &r, "a 2 MB reply with a 1 MiB frame limit");
    cr_assert_str_eq(r.error_type ? r.error_type : "", "FrameTooLarge");
    int pid = r.worker_pid;
    pypool_result_free(&r);
    rc = pt_call_str(p, "nbytes", "1000", 10000, &r);
    PT_ASSERT_RC(rc, PYPOOL_OK, &r, "a small reply after FrameTooLarge");
    cr_assert_eq(r.len, 1000);
    cr_assert_eq(r.worker_pid, pid, "FrameTooLarge cost the worker");
    pypool_result_free(&r);
    pt_destroy(p);
}
