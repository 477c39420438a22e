#!/usr/bin/env bash
# test_httpd.sh - integration test of pypool_httpd, driven with curl the way a user would.
#
#   test_httpd.sh <pypool_httpd binary> <examples/httpd source dir> [python3 for JSON checks]
#
# Starts the server on a free loopback port (--port 0; the port is read from its banner),
# checks every endpoint and error mapping, runs concurrent requests, SIGKILLs a worker in
# the middle of a load and checks the server keeps answering, then stops it with SIGTERM
# (and a second instance with SIGINT) and checks it exited 0 with no Python child left.
set -u

SERVER=${1:?usage: test_httpd.sh <pypool_httpd> <source dir> [python3]}
SRC=${2:?usage: test_httpd.sh <pypool_httpd> <source dir> [python3]}
PY=${3:-python3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/pypool_httpd_test.XXXXXX")
# shellcheck source=testlib.sh
. "$SRC/testlib.sh"

has_header() { grep -qi "^$1:" "$WORK/headers"; }

# now_us: wall clock in microseconds (bash's EPOCHREALTIME, whatever the locale's decimal mark).
now_us() {
    local t=$EPOCHREALTIME
    echo "${t//[!0-9]/}"
}

stats_field() { # <python expression over d> -> printed
    curl -s -m 10 "$BASE/stats" | "$PY" -c 'import json, sys
d = json.load(sys.stdin)
print(eval(sys.argv[1]))' "$1"
}

# wait_stat <python expression over d>: polls /stats until it holds (true) or 30 s pass (false).
wait_stat() {
    local i
    for i in $(seq 1 600); do
        [ "$(stats_field "bool($1)")" = True ] && return 0
        sleep 0.05
    done
    return 1
}

# wait_stat_while <pid> <python expression over d>: polls /stats until the expression holds (0),
# or process pid has ended (1: what was to be seen may be over), or 30 s pass (2).
wait_stat_while() {
    local pid=$1 i
    for i in $(seq 1 600); do
        [ "$(stats_field "bool($2)")" = True ] && return 0
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.05
    done
    return 2
}

worker_pids() { stats_field '" ".join(str(s["pid"]) for s in d["slots"] if s["pid"] > 0)'; }

# Pids of every process whose environment says this server started it (pypool sets
# PYPOOL_PARENT_PID in each worker's environment).
children_of() {
    grep -lzx "PYPOOL_PARENT_PID=$1" /proc/[0-9]*/environ 2>/dev/null |
        sed 's|/proc/\([0-9]*\)/environ|\1|' | tr '\n' ' '
}

# stop_server <signal>: signals the server, checks exit status 0 and that no worker is left.
# SIGNALLED_AT_US: when the signal had been sent.
stop_server() {
    local sig=$1 pid=$SERVER_PID rc i
    kill "-$sig" "$pid"
    SIGNALLED_AT_US=$(now_us)
    for i in $(seq 1 300); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && fail "server still running 30 s after SIG$sig"
    wait "$pid"
    rc=$?
    SERVER_PID=
    [ "$rc" = 0 ] || fail "server exited with status $rc after SIG$sig, want 0"
    grep -q "shutting down" "$WORK/server.err" || fail "no shutdown message after SIG$sig"
    for i in $(seq 1 100); do # the server reaped them before exiting; /proc may lag a moment
        left=$(children_of "$pid")
        [ -z "$left" ] && break
        sleep 0.1
    done
    [ -z "$left" ] || fail "Python processes left after SIG$sig: $left"
    log "SIG$sig: exit 0, no Python process left"
}

# --- main instance -------------------------------------------------------------------------
command -v curl >/dev/null || die "curl is required"
start_server --workers 2 --timeout-ms 20000 --max-body-bytes 65536

log "healthz and stats"
req GET /healthz
expect_status 200 "GET /healthz"
json_check 'd["status"] == "ok" and d["ready"] == 2' "healthz"
req GET /stats
expect_status 200 "GET /stats"
json_check 'd["size"] == 2 and d["slot_count"] == 2 and len(d["slots"]) == 2' "stats size"
STATS_KEYS="idle busy starting backoff failed waiters calls remote_errors timeouts call_timeouts
restarts crashes crashes_signal crashes_exit recycles protocol_errors failed_starts ping_failures
leak_warnings sessions"
json_check "all(k in d for k in '''$STATS_KEYS'''.split())" "stats fields"
json_check 'all(s["state"] in ("idle", "busy") and s["pid"] > 0 for s in d["slots"])' "slots"

log "stateless handlers"
req POST /call/textstats --data '{"text": "The quick brown fox. The lazy dog sleeps! Fox?", "top": 2}'
expect_status 200 "textstats"
json_check 'd["words"] == 9 and d["sentences"] == 3 and d["top_words"][0] == ["fox", 2]' "textstats"
has_header X-Pypool-Worker || fail "textstats: no X-Pypool-Worker header"
req POST /call/score --data '{"query": "pyton", "candidates": ["java", "python", "cython"], "top": 1}'
expect_status 200 "score"
json_check 'd["results"][0]["candidate"] == "python" and d["compared"] == 3' "score"
printf 'bin\0ary\377' >"$WORK/binary"
req POST /call/echo --data-binary @"$WORK/binary"
expect_status 200 "echo binary"
cmp -s "$WORK/body" "$WORK/binary" || fail "echo changed a binary body"

log "errors: remote exceptions, timeouts, bad requests"
req POST /call/textstats --data 'not "json"'
expect_status 400 "bad input"
json_check 'd["type"] == "BadInput" and "JSON" in d["message"] and "traceback" not in d' \
    "bad input body"
req POST /call/textstats --data-binary $'{"text": "\xff\xfe"}'
expect_status 400 "bad input: invalid UTF-8"
json_check 'd["type"] == "BadInput"' "bad input: invalid UTF-8"
req POST /call/no_such_handler
expect_status 404 "unknown method"
json_check 'd["type"] == "NoSuchMethod"' "unknown method"
req POST /call/oops
expect_status 500 "a handler's own failure"
json_check 'd["type"] == "RuntimeError" and "traceback" not in d' "500 body"
grep -q "/" "$WORK/body" && fail "a 500 without --debug sent a path: $(cat "$WORK/body")"
req POST /call/slow -H 'X-Timeout-Ms: 1000' --data '{"ms": 5000}'
expect_status 504 "ETIMEDOUT"
json_check 'd["code"] == "PYPOOL_ETIMEDOUT"' "ETIMEDOUT body"
req POST /call/
expect_status 400 "empty method"
req POST '/call/bad%20name'
expect_status 400 "bad method name"
req GET /call/echo
expect_status 405 "GET /call"
grep -qi '^Allow: POST' "$WORK/headers" || fail "405 without Allow: POST"
req POST /stats
expect_status 405 "POST /stats"
req GET /session/abc
expect_status 405 "GET /session"
req GET /nowhere
expect_status 404 "unknown path"
head -c 70000 /dev/zero >"$WORK/big"
req POST /call/echo --data-binary @"$WORK/big"
expect_status 413 "body over the cap (Content-Length)"
req POST /call/echo -H 'Transfer-Encoding: chunked' --data-binary @"$WORK/big"
expect_status 413 "body over the cap (chunked)"
head -c 60000 /dev/zero >"$WORK/fits"
req POST /call/echo --data-binary @"$WORK/fits"
expect_status 200 "body under the cap"
cmp -s "$WORK/body" "$WORK/fits" || fail "echo of 60000 bytes differs"

log "sessions"
req POST /session/s1/call/cart_add --data '{"sku": "A1", "qty": 2, "price": 3.5}'
expect_status 200 "cart_add"
req POST /session/s1/call/cart_add --data '{"sku": "B2", "price": 1}'
json_check 'd["items"] == 3 and d["total"] == 8.0 and d["session"] == "s1"' "cart after two adds"
req DELETE /session/s1
expect_status 200 "DELETE /session"
req POST /session/s1/call/cart_show
json_check 'd["items"] == 0' "cart after DELETE"
req POST /call/cart_show
expect_status 400 "cart outside a session"
req POST '/session/bad%20id/call/cart_show'
expect_status 400 "bad session id"
session_load() { # <id>: five adds in a row
    local i
    for i in 1 2 3 4 5; do
        curl -s -m 30 -o /dev/null -X POST --data '{"sku": "X", "price": 2}' \
            "$BASE/session/$1/call/cart_add"
    done
}
pids=
for s in p q r t; do
    session_load "$s" &
    pids="$pids $!"
done
wait $pids # not a bare `wait`: that would wait for the server too
for s in p q r t; do
    req POST "/session/$s/call/cart_show"
    json_check 'd["items"] == 5 and d["total"] == 10.0' "concurrent session $s"
done

log "concurrent requests"
one_echo() { # <n>: prints "ok" if the reply is the request body
    local got
    got=$(curl -s -m 30 -X POST --data "message-$1" "$BASE/call/echo")
    [ "$got" = "message-$1" ] && echo ok || echo "bad $1: $got"
}
export -f one_echo
export BASE
seq 1 60 | xargs -P 16 -I{} bash -c 'one_echo {}' >"$WORK/echo.out"
[ "$(grep -c '^ok$' "$WORK/echo.out")" = 60 ] || fail "concurrent echo: $(grep -v '^ok$' "$WORK/echo.out" | head -5)"

log "SIGKILL a worker under load"
# Event-driven, on any machine, fast or slow: the load runs until told to stop ($WORK/load.stop);
# the kill comes once replies are flowing, the load goes on until enough replies arrived after
# the kill, and only then stops. LOAD_MAX requests per client and LOAD_SECONDS are safety nets
# only: a load that ends by them before the test told it to stop is a failure, never a pass.
LOAD_CLIENTS=8
LOAD_MAX=5000
LOAD_SECONDS=60
BEFORE_KILL=10 # replies before the kill: the load is flowing
# Replies after the kill: at most LOAD_CLIENTS of them were sent before it, so at least 20 were
# sent to a pool that had already lost a worker.
AFTER_KILL=$((LOAD_CLIENTS + 20))
CANDIDATES=$("$PY" -c 'import json
print(json.dumps({"query": "distributed worker pool for python",
                  "candidates": ["candidate number %d for a python worker pool" % i
                                 for i in range(60)]}))')
export CANDIDATES BASE WORK LOAD_MAX LOAD_SECONDS
load_client() { # <n>: score requests until $WORK/load.stop exists; one HTTP code per line
    local i end=$((SECONDS + LOAD_SECONDS))
    for ((i = 0; i < LOAD_MAX && SECONDS < end; i++)); do
        [ -e "$WORK/load.stop" ] && return 0
        curl -s -m 30 -o /dev/null -w '%{http_code}\n' -X POST --data "$CANDIDATES" \
            "$BASE/call/score" >>"$WORK/load.$1.codes"
    done
    [ -e "$WORK/load.stop" ] || touch "$WORK/load.exhausted"
}
export -f load_client
codes_so_far() { cat "$WORK"/load.*.codes 2>/dev/null | wc -l; }
load_running() {
    local pid
    for pid in "${load_pids[@]}"; do
        kill -0 "$pid" 2>/dev/null && return 0
    done
    return 1
}
# wait_codes <n>: waits until n replies are in; false if the load ended (by its safety nets).
wait_codes() {
    while [ "$(codes_so_far)" -lt "$1" ]; do
        [ -e "$WORK/load.exhausted" ] && return 1
        load_running || return 1
        sleep 0.05
    done
}
read -r signal_crashes0 restarts0 <<<"$(stats_field '"%d %d" % (d["crashes_signal"], d["restarts"])')"
rm -f "$WORK/load.stop" "$WORK/load.exhausted" "$WORK"/load.*.codes
load_pids=()
for n in $(seq 1 $LOAD_CLIENTS); do
    bash -c "load_client $n" &
    load_pids+=("$!")
done
wait_codes $BEFORE_KILL || fail "the load ended (safety nets: $LOAD_MAX requests or $LOAD_SECONDS s per client) before $BEFORE_KILL replies"
before=$(worker_pids)
victim=${before%% *}
kill -KILL "$victim" || fail "could not kill worker $victim"
done_at_kill=$(codes_so_far) # every reply counted from here on arrived after the kill
log "killed worker $victim (pids were: $before) after $done_at_kill replies"
wait_codes $((done_at_kill + AFTER_KILL)) ||
    fail "the load ended (safety nets) with $(($(codes_so_far) - done_at_kill)) of $AFTER_KILL replies after the kill"
touch "$WORK/load.stop"
wait "${load_pids[@]}"
cat "$WORK"/load.*.codes >"$WORK/load.codes"
total=$(wc -l <"$WORK/load.codes")
ok=$(grep -c '^200$' "$WORK/load.codes")
bad=$(grep -vc '^200$' "$WORK/load.codes")
other=$(grep -v '^200$' "$WORK/load.codes" | grep -vc '^502$')
log "load: $total replies ($((total - done_at_kill)) after the kill), $ok x 200, $bad other ($(grep -v '^200$' "$WORK/load.codes" | sort | uniq -c | tr '\n' ' '))"
[ "$((total - done_at_kill))" -ge "$AFTER_KILL" ] || fail "only $((total - done_at_kill)) replies after the kill"
[ "$other" = 0 ] || fail "load: failures other than 502 (the killed call)"
# A worker serves one call at a time (max_inflight 1): only the call running on the victim may
# fail; a request the victim never read is retried by the pool.
[ "$bad" -le 1 ] || fail "load: $bad failed requests, want at most the one call running on the victim"
# The victim's slot holds a new worker, and the pool counted the crash and the restart.
wait_stat "d['idle'] + d['busy'] == 2 and $victim not in [s['pid'] for s in d['slots']] and d['crashes_signal'] == $signal_crashes0 + 1 and d['restarts'] >= $restarts0 + 1" ||
    fail "killed worker $victim not replaced, or not counted: $(curl -s "$BASE/stats")"
after=$(worker_pids)
for i in $(seq 1 10); do
    req POST /call/whoami
    expect_status 200 "call $i after the crash"
done
log "after the kill: workers $after, server answering"

log "graceful SIGTERM: a request in flight still gets its reply"
# The slow call sleeps SLOW_MS from when it reached a worker, which is after SENT_US: if the
# SIGTERM went out before SENT_US + SLOW_MS, the call was in flight then, whatever the machine's
# speed. If it went out later (a very slow machine), the round proves nothing, and a new
# server gets a longer call: the check is never skipped and never depends on a guess.
graceful_round() { # <slow ms>: 0 if the SIGTERM certainly came while the call ran
    local slow_ms=$1 sent_us code
    sent_us=$(now_us)
    curl -s -m 60 -o "$WORK/inflight.body" -w '%{http_code}' -X POST --data "{\"ms\": $slow_ms}" \
        "$BASE/call/slow" >"$WORK/inflight.code" &
    local inflight=$!
    wait_stat_while "$inflight" 'd["busy"] == 1'
    [ $? = 2 ] && fail "the slow request never reached a worker"
    stop_server TERM
    wait "$inflight"
    code=$(cat "$WORK/inflight.code")
    [ "$code" = 200 ] || fail "request in flight during SIGTERM: HTTP $code, want 200"
    curl -s -m 5 -o /dev/null "$BASE/healthz" && fail "server still answers after SIGTERM"
    [ "$SIGNALLED_AT_US" -lt $((sent_us + slow_ms * 1000)) ]
}
slow_ms=2000
until graceful_round $slow_ms; do
    slow_ms=$((slow_ms * 2))
    if [ $slow_ms -gt 16000 ]; then # drain: --timeout-ms + 1 s
        fail "SIGTERM never reached the server while a slow call ran (machine too slow?)"
        break
    fi
    log "the slow call may have ended before SIGTERM: again with $slow_ms ms"
    start_server --workers 1 --timeout-ms 20000
done

# --- second instance: load shedding (max-waiters) and SIGINT -----------------------------
start_server --workers 1 --max-waiters 1 --timeout-ms 60000 --debug
log "--debug: tracebacks reach the client"
req POST /call/oops
expect_status 500 "a handler's own failure (--debug)"
json_check '"Traceback" in d["traceback"] and "handlers.py" in d["traceback"] and "cannot open" in d["message"]' \
    "500 body with --debug"
log "EBUSY: one worker, one waiter allowed, four concurrent slow calls"
one_slow() { # <n> <ms>
    curl -s -m 60 -o /dev/null -D "$WORK/busy.$1.headers" -w '%{http_code}\n' -X POST \
        --data "{\"ms\": $2}" "$BASE/call/slow"
}
# In order, each once the one before holds its place: 1 running, 2 waiting, then 3 and 4, which
# find the queue full. Call 1 holds the worker until at least SENT_US + ms (its sleep), and call
# 2 waits in the queue until then; if 3 and 4 were both answered before that instant, they
# were answered while the queue was full, and must have been refused. Otherwise (a very slow
# machine) the round proves nothing and runs again with longer calls.
ebusy_round() { # <ms>: 0 if conclusive (codes in $WORK/busy.<n>.code)
    local ms=$1 sent_us done_us p1 p2 p3 p4
    rm -f "$WORK"/busy.*
    sent_us=$(now_us)
    one_slow 1 "$ms" >"$WORK/busy.1.code" &
    p1=$!
    wait_stat_while "$p1" 'd["busy"] == 1'
    case $? in
    1) return 1 ;; # call 1 is over already
    2) fail "the first slow call never reached the worker" ;;
    esac
    one_slow 2 "$ms" >"$WORK/busy.2.code" &
    p2=$!
    wait_stat_while "$p1" 'd["waiters"] == 1'
    case $? in
    1) # call 1 is over already
        wait "$p2"
        return 1
        ;;
    2) fail "the second slow call never queued" ;;
    esac
    one_slow 3 "$ms" >"$WORK/busy.3.code" &
    p3=$!
    one_slow 4 "$ms" >"$WORK/busy.4.code" &
    p4=$!
    wait "$p3" "$p4"
    done_us=$(now_us)
    wait "$p1" "$p2"
    [ "$done_us" -lt $((sent_us + ms * 1000)) ]
}
busy_ms=1500
until ebusy_round $busy_ms; do
    busy_ms=$((busy_ms * 2))
    if [ $busy_ms -gt 12000 ]; then
        fail "EBUSY: calls 3 and 4 never came back while the queue was full (machine too slow?)"
        break
    fi
    log "calls 3 and 4 may have outlived the full queue: again with $busy_ms ms"
done
codes=$(cat "$WORK"/busy.*.code | tr '\n' ' ')
log "codes (calls 1-4): $codes"
for i in 1 2; do
    [ "$(cat "$WORK/busy.$i.code")" = 200 ] || fail "EBUSY: call $i got $(cat "$WORK/busy.$i.code"), want 200"
done
for i in 3 4; do
    [ "$(cat "$WORK/busy.$i.code")" = 503 ] || fail "EBUSY: call $i got $(cat "$WORK/busy.$i.code"), want 503"
    grep -qi '^Retry-After: 1' "$WORK/busy.$i.headers" || fail "503 without Retry-After (call $i)"
done
stop_server INT

if [ "$FAILURES" -ne 0 ]; then
    printf '%d check(s) failed\n' "$FAILURES"
    tail -n 20 "$WORK/server.err"
    exit 1
fi
log "all checks passed"
