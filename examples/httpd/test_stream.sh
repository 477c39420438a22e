#!/usr/bin/env bash
# test_stream.sh - streamed replies (POST /stream/<method>) and host calls (the server's
# key/value store reached from Python with ctx.host), driven with curl.
#
#   test_stream.sh <pypool_httpd binary> <examples/httpd source dir> [python3]
#
# One server with one worker, so "the same worker serves the next request" is a pid to compare.
# Every wait is for an event (a chunk in a file, a counter in /stats, a process ending), each
# bounded by a generous safety net that fails the test instead of hanging it; no check depends
# on how long something takes.
set -u

SERVER=${1:?usage: test_stream.sh <pypool_httpd> <source dir> [python3]}
SRC=${2:?usage: test_stream.sh <pypool_httpd> <source dir> [python3]}
PY=${3:-python3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/pypool_stream_test.XXXXXX")
KV_MAX_KEYS=4

# shellcheck source=testlib.sh
. "$SRC/testlib.sh"

# wait_until <what> <command...>: polls the command until it succeeds; fails after 30 s.
wait_until() {
    local what=$1 i
    shift
    for i in $(seq 1 600); do
        "$@" && return 0
        sleep 0.05
    done
    fail "waited 30 s for: $what"
    return 1
}

stats_field() { # <python expression over d> -> printed
    curl -s -m 10 "$BASE/stats" | "$PY" -c 'import json, sys
d = json.load(sys.stdin)
print(eval(sys.argv[1]))' "$1"
}
stat_holds() { [ "$(stats_field "bool($1)")" = True ]; }

# chunks <file>: the chunks of a raw (curl --raw) chunked body as a JSON object:
# {"chunks": [str, ...], "complete": bool (the final empty chunk arrived)}.
chunks() {
    "$PY" - "$1" <<'EOF'
import json, sys
raw, chunks, complete = open(sys.argv[1], "rb").read(), [], False
while raw:
    head, sep, rest = raw.partition(b"\r\n")
    if not sep:
        break
    size = int(head.split(b";")[0], 16)
    if size == 0:
        complete = True
        break
    if len(rest) < size + 2:
        break
    chunks.append(rest[:size].decode("utf-8", "replace"))
    raw = rest[size + 2:]
print(json.dumps({"chunks": chunks, "complete": complete}))
EOF
}
chunk_count() { chunks "$1" | "$PY" -c 'import json, sys; print(len(json.load(sys.stdin)["chunks"]))'; }
has_chunks() { [ "$(chunk_count "$1")" -ge "$2" ]; } # <file> <n>

# stream_bg <file> <path> <json body>: curl -N --raw in the background, its pid in STREAM_PID;
# the raw body in <file>, headers in <file>.headers.
stream_bg() {
    local file=$1 path=$2 body=$3
    : >"$file"
    curl -s -N --raw -m 60 -X POST -D "$file.headers" -o "$file" --data "$body" "$BASE$path" &
    STREAM_PID=$!
}
running() { kill -0 "$1" 2>/dev/null; }
ended() { ! running "$1"; }

command -v curl >/dev/null || die "curl is required"
start_server --workers 1 --timeout-ms 30000 --kv-max-keys "$KV_MAX_KEYS"
req POST /call/whoami
expect_status 200 "whoami"
WORKER=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["pid"])' "$WORK/body")
read -r crashes0 restarts0 <<<"$(stats_field '"%d %d" % (d["crashes"], d["restarts"])')"
log "worker pid $WORKER"

log "a stream: one HTTP chunk per yielded word, in order, complete"
stream_bg "$WORK/s1" /stream/tokens '{"text": "one two three four five", "delay_ms": 5}'
wait "$STREAM_PID"
rc=$?
[ "$rc" = 0 ] || fail "stream: curl exit $rc"
grep -q '^HTTP/1.1 200' "$WORK/s1.headers" || fail "stream: $(head -1 "$WORK/s1.headers")"
grep -qi '^Transfer-Encoding: chunked' "$WORK/s1.headers" || fail "stream: not chunked"
grep -qi "^X-Pypool-Worker: $WORKER" "$WORK/s1.headers" || fail "stream: no X-Pypool-Worker: $WORKER"
chunks "$WORK/s1" >"$WORK/s1.json"
json_check 'd["chunks"] == ["one ", "two ", "three ", "four ", "five\n"] and d["complete"]' \
    "chunks of the stream" "$WORK/s1.json"
got=$(curl -s -N -m 30 -X POST --data '{"text": "a b c", "delay_ms": 0}' "$BASE/stream/tokens")
[ "$got" = "a b c" ] || fail "stream decoded by curl: '$got'" # $(...) drops the last newline
got=$(curl -s -N -m 30 -X POST --data 'plain value' "$BASE/stream/echo")
[ "$got" = "plain value" ] || fail "a plain handler as a stream (one chunk): '$got'"
req POST /session/st1/stream/tokens --data '{"text": "in a session", "delay_ms": 0}'
expect_status 200 "stream in a session"
[ "$(cat "$WORK/body")" = "in a session" ] || fail "session stream: '$(cat "$WORK/body")'"

log "streaming, proved by events: the first word arrives before the last is produced"
# The handler yields "first ", then waits until the key "gate1" exists in the server's
# key/value store; the test creates it only after it saw "first " arrive. So "first " reached
# the client while "third" did not exist yet, whatever the machine's speed.
stream_bg "$WORK/s2" /stream/tokens '{"text": "first second third", "delay_ms": 0, "gate": "gate1"}'
gated=$STREAM_PID
wait_until "the first chunk of the gated stream" has_chunks "$WORK/s2" 1
chunks "$WORK/s2" >"$WORK/s2.json"
json_check 'd["chunks"] == ["first "] and not d["complete"]' "before the gate opens" "$WORK/s2.json"
running "$gated" || fail "the gated stream ended before its gate opened"
req PUT /kv/gate1 --data open
expect_status 200 "PUT /kv/gate1"
wait_until "the gated stream to end" ended "$gated"
wait "$gated"
rc=$?
[ "$rc" = 0 ] || fail "gated stream: curl exit $rc"
chunks "$WORK/s2" >"$WORK/s2.json"
json_check 'd["chunks"] == ["first ", "second ", "third\n"] and d["complete"]' \
    "after the gate opened" "$WORK/s2.json"
req DELETE /kv/gate1
expect_status 200 "DELETE /kv/gate1"

log "a client that goes away: the stream is closed, the worker serves the next request"
cancels0=$(stats_field 'd["cancels"]')
stream_bg "$WORK/s3" /stream/tokens '{"max_tokens": 1000000, "delay_ms": 10}'
endless=$STREAM_PID
wait_until "three chunks of the endless stream" has_chunks "$WORK/s3" 3
stat_holds 'd["busy"] == 1' || fail "the endless stream does not hold the worker"
kill -TERM "$endless"
wait "$endless"
log "client gone after $(chunk_count "$WORK/s3") chunks"
# The server notices when a write fails, closes the stream (Cancel): the generator is closed
# at its next yield, the worker finishes the request and is idle again, alive.
wait_until "the stream's cancel (stats: cancels, idle)" \
    stat_holds "d['cancels'] == $cancels0 + 1 and d['idle'] == 1 and d['inflight'] == 0"
req POST /call/whoami
expect_status 200 "whoami after the disconnect"
json_check "d['pid'] == $WORKER" "the same worker serves after the disconnect"
stat_holds "d['crashes'] == $crashes0 and d['restarts'] == $restarts0" ||
    fail "the worker was killed or restarted: $(curl -s "$BASE/stats")"

log "errors before the first chunk map like /call"
req POST /stream/tokens --data '{"delay_ms": -1}'
expect_status 400 "stream: BadInput"
json_check 'd["type"] == "BadInput" and "delay_ms" in d["message"]' "stream: BadInput body"
req POST /stream/no_such_handler
expect_status 404 "stream: unknown method"
json_check 'd["type"] == "NoSuchMethod"' "stream: NoSuchMethod body"
req POST /stream/oops
expect_status 500 "stream: a handler's own failure"
json_check 'd["type"] == "RuntimeError" and "traceback" not in d' "stream: 500 body"
grep -q "/" "$WORK/body" && fail "stream: a 500 without --debug sent a path: $(cat "$WORK/body")"
req GET /stream/tokens
expect_status 405 "GET /stream"
req POST /stream/
expect_status 400 "stream: empty method"

log "host calls: handlers use the server's key/value store (C) through ctx.host"
req POST /call/remember --data '{"key": "color", "value": "blue \u00e9"}'
expect_status 200 "remember"
json_check 'd["key"] == "color" and d["stored"] == 7' "remember reply"
req GET /kv/color # straight from the C store: no Python involved
expect_status 200 "GET /kv/color"
[ "$(cat "$WORK/body")" = "blue é" ] || fail "the C store holds '$(cat "$WORK/body")'"
req PUT /kv/size --data 'XL'
expect_status 200 "PUT /kv/size"
req POST /call/recall --data '{"key": "size"}'
expect_status 200 "recall of a value PUT in C"
json_check 'd["key"] == "size" and d["value"] == "XL"' "recall reply"
req POST /session/h1/call/recall --data '{"key": "color"}'
expect_status 200 "recall in a session"
json_check 'd["value"] == "blue \u00e9"' "recall in a session"

log "host function failures become error replies"
req POST /call/recall --data '{"key": "never-set"}'
expect_status 404 "recall of a missing key (HostError 404 -> NotFound)"
json_check 'd["type"] == "NotFound"' "missing key body"
req POST /call/remember --data '{"key": "bad key!", "value": "x"}'
expect_status 400 "remember with a bad key (HostError 400 -> BadInput)"
json_check 'd["type"] == "BadInput"' "bad key body"
big=$("$PY" -c 'print("x" * 70000)')
req POST /call/remember --data "{\"key\": \"big\", \"value\": \"$big\"}"
expect_status 400 "remember a value over 64 KiB (HostError 413 -> BadInput)"
# The store is full (KV_MAX_KEYS): the handler does not handle that code, so HostError reaches
# the server as the handler's failure, a 500 that names only the exception's type.
nkeys=2 # color, size
for k in $(seq $((nkeys + 1)) "$KV_MAX_KEYS"); do
    req PUT "/kv/fill$k" --data x
    expect_status 200 "PUT /kv/fill$k"
done
req POST /call/remember --data '{"key": "one-too-many", "value": "x"}'
expect_status 500 "remember into a full store (HostError 507, unhandled)"
json_check 'd["type"] == "HostError" and "traceback" not in d' "full store body"
req PUT /kv/one-too-many --data x
expect_status 507 "PUT into a full store"
req POST /call/remember --data '{"key": "color", "value": "red"}'
expect_status 200 "remember over an existing key in a full store"
req POST /call/recall --data '{"key": "color"}'
json_check 'd["value"] == "red"' "recall after the overwrite"
req GET /kv/bad%20key
expect_status 400 "GET /kv with a bad key"
req POST /kv/color
expect_status 405 "POST /kv"

log "a host call from inside a stream"
# The gate of the stream above is a ctx.host("kv_get") loop; here its key exists from the start.
req PUT /kv/color --data set
got=$(curl -s -N -m 30 -X POST --data '{"text": "x y", "delay_ms": 0, "gate": "color"}' \
    "$BASE/stream/tokens")
[ "$got" = "x y" ] || fail "stream with an open gate: '$got'"

log "a failure after the first chunk cuts the response short"
# The gate's host call fails with a code the handler does not expect (400: the store refuses
# the key "bad key!"), so the generator raises after its first word.
stream_bg "$WORK/s4" /stream/tokens '{"text": "only then", "delay_ms": 0, "gate": "bad key!"}'
wait_until "the failing stream to end" ended "$STREAM_PID"
wait "$STREAM_PID"
rc=$?
grep -q '^HTTP/1.1 200' "$WORK/s4.headers" || fail "failing stream: $(head -1 "$WORK/s4.headers")"
[ "$rc" != 0 ] || fail "a stream that failed mid-way looked complete to curl"
chunks "$WORK/s4" >"$WORK/s4.json"
json_check 'd["chunks"] == ["only "] and not d["complete"]' "failing stream" "$WORK/s4.json"
wait_until "the mid-stream failure in the server's log" \
    grep -q "stream tokens (worker $WORKER) failed after 1 chunk" "$WORK/server.err"
req POST /call/whoami
json_check "d['pid'] == $WORKER" "the same worker after a failed stream"
stat_holds "d['crashes'] == $crashes0 and d['restarts'] == $restarts0" ||
    fail "the worker was killed or restarted: $(curl -s "$BASE/stats")"

log "SIGTERM: exit 0, no Python process left"
kill -TERM "$SERVER_PID"
wait_until "the server to exit after SIGTERM" ended "$SERVER_PID"
wait "$SERVER_PID"
rc=$?
[ "$rc" = 0 ] || fail "server exited with status $rc after SIGTERM"
# Reaped before the server exited; /proc may lag a moment.
no_workers_left() { ! grep -qzx "PYPOOL_PARENT_PID=$1" /proc/[0-9]*/environ 2>/dev/null; }
wait_until "no Python process of the server left" no_workers_left "$SERVER_PID"
SERVER_PID=

if [ "$FAILURES" -ne 0 ]; then
    printf '%d check(s) failed\n' "$FAILURES"
    tail -n 20 "$WORK/server.err"
    exit 1
fi
log "all checks passed"
