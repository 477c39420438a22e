/*
 * stats.h - GET /stats and GET /healthz.
 */
#ifndef HTTPD_STATS_H
#define HTTPD_STATS_H

#include "app.h"
#include "reply.h"

void handle_stats(const httpd_app *app, reply *r);
void handle_healthz(const httpd_app *app, reply *r);

#endif
