#!/usr/bin/env bash
# test_metrics.sh - GET /metrics as a monitoring system sees it.
#
#   test_metrics.sh <pypool_httpd binary> <examples/httpd source dir> <promtool> <prometheus> <python3>
#
# Starts the server on a free loopback port, makes some calls, validates /metrics with
# Prometheus's own `promtool check metrics`, then starts a real Prometheus server on another
# loopback port that scrapes it every second, and waits (polling, bounded) until
# pypool_calls_total can be queried through Prometheus's HTTP API.
#
# <promtool> and <prometheus> are what CMake found (package prometheus), "" if nothing. Without
# promtool the test reports itself skipped (exit 77, ctest's SKIP_RETURN_CODE); anything else
# missing or failing is a failure.
set -u
SERVER=${1:?usage: test_metrics.sh <pypool_httpd> <source dir> <promtool> <prometheus> <python3>}
SRC=${2:?source dir}
PROMTOOL=${3-}
PROMETHEUS=${4-}
PY=${5:?python3}
if [ -z "$PROMTOOL" ]; then
    echo "SKIP: promtool was not found when the build was configured (Debian package prometheus):"
    echo "      /metrics is not checked by Prometheus; install it and re-run cmake"
    exit 77
fi
[ -x "$PROMTOOL" ] || { echo "FAIL: promtool $PROMTOOL (found at configure time) is gone"; exit 1; }
if [ -z "$PROMETHEUS" ] || [ ! -x "$PROMETHEUS" ]; then
    echo "FAIL: promtool is installed but the prometheus server is not: '$PROMETHEUS'"
    exit 1
fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/pypool_metrics_test.XXXXXX")
SERVER_PID=
PROM_PID=
cleanup() {
    [ -n "$PROM_PID" ] && kill "$PROM_PID" 2>/dev/null && wait "$PROM_PID" 2>/dev/null
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
die() {
    printf 'FAIL: %s\n' "$*"
    for f in "$WORK"/*.log "$WORK"/server.err; do
        [ -f "$f" ] && { echo "== $f"; tail -n 20 "$f"; }
    done
    exit 1
}
log() { printf -- '--- %s\n' "$*"; }

# wait_for <seconds> <command...>: polls the command until it succeeds, at most that long.
wait_for() {
    local end=$((SECONDS + $1))
    shift
    until "$@"; do
        [ "$SECONDS" -lt "$end" ] || return 1
        sleep 0.1
    done
}

"$SERVER" --port 0 --workers 2 --python-path "$SRC" >"$WORK/server.out" 2>"$WORK/server.err" &
SERVER_PID=$!
port_known() { grep -q 'listening on http://127\.0\.0\.1:[0-9]*/' "$WORK/server.out"; }
wait_for 30 port_known || die "the server did not announce its port"
PORT=$(sed -n 's|.*listening on http://127\.0\.0\.1:\([0-9]*\)/.*|\1|p' "$WORK/server.out")
BASE="http://127.0.0.1:$PORT"
log "server on $BASE"

for i in $(seq 1 20); do
    curl -s -m 30 -o /dev/null -X POST --data "m$i" "$BASE/call/echo" || die "call $i failed"
done
curl -s -m 30 -o /dev/null -X POST --data 'not json' "$BASE/call/textstats"

log "GET /metrics"
curl -s -m 30 -D "$WORK/headers" -o "$WORK/metrics.txt" "$BASE/metrics" || die "GET /metrics failed"
grep -qi '^Content-Type: text/plain; version=0.0.4' "$WORK/headers" ||
    die "wrong Content-Type: $(grep -i content-type "$WORK/headers")"
grep -q '^pypool_calls_total{pool="httpd"} 21$' "$WORK/metrics.txt" ||
    die "pypool_calls_total is not 21: $(grep calls_total "$WORK/metrics.txt")"
grep -q '^pypool_call_errors_total{pool="httpd",error="remote"} 1$' "$WORK/metrics.txt" ||
    die "the remote error is not counted"
grep -q '^pypool_call_seconds_count{pool="httpd"} 21$' "$WORK/metrics.txt" ||
    die "the call histogram does not count 21 calls"

log "promtool check metrics"
"$PROMTOOL" check metrics <"$WORK/metrics.txt" >"$WORK/promtool.log" 2>&1 ||
    die "promtool rejected /metrics: $(cat "$WORK/promtool.log")"

log "a real Prometheus scrapes it"
cat >"$WORK/prometheus.yml" <<YML
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: pypool_httpd
    static_configs:
      - targets: ["127.0.0.1:$PORT"]
YML
# A free loopback port is only free until someone takes it: if Prometheus cannot bind the one
# picked, it exits, and another is tried.
prom_up() {
    kill -0 "$PROM_PID" 2>/dev/null || return 2
    curl -s -m 5 -o /dev/null -f "http://127.0.0.1:$PROM_PORT/-/ready"
}
start_prometheus() {
    local rc
    for _ in 1 2 3; do
        PROM_PORT=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        "$PROMETHEUS" --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/data" \
            --web.listen-address="127.0.0.1:$PROM_PORT" >"$WORK/prometheus.log" 2>&1 &
        PROM_PID=$!
        local end=$((SECONDS + 60))
        while :; do
            prom_up
            rc=$?
            [ "$rc" -eq 0 ] && return 0
            [ "$rc" -eq 2 ] && break # exited
            [ "$SECONDS" -lt "$end" ] || return 1
            sleep 0.1
        done
        wait "$PROM_PID" 2>/dev/null
        PROM_PID=
        grep -q 'address already in use' "$WORK/prometheus.log" || return 1
        log "port $PROM_PORT was taken meanwhile; another"
    done
    return 1
}
start_prometheus || die "prometheus did not start: $(tail -n 5 "$WORK/prometheus.log")"
log "Prometheus on 127.0.0.1:$PROM_PORT"
queryable() {
    kill -0 "$PROM_PID" 2>/dev/null || die "prometheus exited"
    curl -s -m 5 "http://127.0.0.1:$PROM_PORT/api/v1/query?query=pypool_calls_total" \
        >"$WORK/query.json" 2>/dev/null &&
        "$PY" -c 'import json, sys
d = json.load(open(sys.argv[1]))
r = d["data"]["result"]
sys.exit(0 if d["status"] == "success" and r and r[0]["metric"]["pool"] == "httpd"
         and float(r[0]["value"][1]) >= 21 else 1)' "$WORK/query.json" 2>/dev/null
}
wait_for 90 queryable || die "pypool_calls_total never became queryable: $(cat "$WORK/query.json")"
log "Prometheus answers: $(cat "$WORK/query.json")"
echo "--- all metrics checks passed"
