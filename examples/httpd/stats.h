/*
 * stats.h - GET /stats, GET /metrics and GET /healthz.
 */
#ifndef HTTPD_STATS_H
#define HTTPD_STATS_H

#include "app.h"
#include "reply.h"

void handle_stats(const httpd_app *app, reply *r);
void handle_healthz(const httpd_app *app, reply *r);
/* The pool's stats in the Prometheus text format, labelled pool="httpd". */
void handle_metrics(const httpd_app *app, reply *r);

#endif
