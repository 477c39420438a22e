/*
 * report.h - the performance targets, evaluated from the run's figures (targets.c), shared by
 * the table printer and the JSON writer.
 */
#ifndef PYPOOL_BENCH_REPORT_H
#define PYPOOL_BENCH_REPORT_H

#include "bench.h"

#define REPORT_MAX_TARGETS 32

typedef struct bench_target {
    const char *name;
    bool measured, pass;
    bool at_most; /* ratio <= limit passes (else ratio >= limit) */
    double ratio, limit;
    double value, baseline;
    char detail[96];
} bench_target;

size_t targets_eval(bench_target *out, size_t max);

#endif
