# testlib.sh - shell helpers shared by the HTTP example's tests (sourced, not run).
#
# The sourcing script sets SERVER (the pypool_httpd binary), SRC (examples/httpd), PY (python3
# for JSON checks) and WORK (its scratch directory), then sources this file. It gets: log, fail
# (counted in FAILURES), die, a cleanup trap (stray curls, the server and its workers, WORK),
# start_server, req, expect_status and json_check.

SERVER_PID=
BASE=
FAILURES=0

cleanup() {
    local pid
    for pid in $(jobs -p); do # curls still running after a failure
        [ "$pid" != "$SERVER_PID" ] && kill "$pid" 2>/dev/null
    done
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -KILL "$SERVER_PID" 2>/dev/null # workers follow: PR_SET_PDEATHSIG
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

log() { printf '%s\n' "--- $*"; }
fail() {
    printf 'FAIL: %s\n' "$*"
    FAILURES=$((FAILURES + 1))
}
die() {
    printf 'FATAL: %s\n' "$*"
    [ -f "$WORK/server.err" ] && tail -n 30 "$WORK/server.err"
    exit 1
}

# start_server <args...>: starts pypool_httpd on a free port; sets SERVER_PID and BASE.
start_server() {
    : >"$WORK/server.out"
    : >"$WORK/server.err"
    "$SERVER" --port 0 --python-path "$SRC" "$@" >"$WORK/server.out" 2>"$WORK/server.err" &
    SERVER_PID=$!
    local port= i
    for i in $(seq 1 300); do
        port=$(sed -n 's|.*listening on http://127\.0\.0\.1:\([0-9]*\)/.*|\1|p' "$WORK/server.out")
        [ -n "$port" ] && break
        kill -0 "$SERVER_PID" 2>/dev/null || die "server exited during startup"
        sleep 0.1
    done
    [ -n "$port" ] || die "server did not announce its port within 30 s"
    BASE="http://127.0.0.1:$port"
    log "server pid $SERVER_PID on $BASE ($*)"
}

# req <METHOD> <path> [curl args...]: sets STATUS; body in $WORK/body, headers in $WORK/headers.
req() {
    local method=$1 path=$2
    shift 2
    STATUS=$(curl -s -m 30 -X "$method" -o "$WORK/body" -D "$WORK/headers" -w '%{http_code}' \
        "$@" "$BASE$path")
}

expect_status() { # <want> <what>
    [ "$STATUS" = "$1" ] || fail "$2: HTTP $STATUS, want $1; body: $(head -c 400 "$WORK/body")"
}

# json_check <python expression over `d`> <what> [file]: evaluates it on the JSON in the file.
json_check() {
    "$PY" -c 'import json, sys
d = json.load(open(sys.argv[1], encoding="utf-8"))
sys.exit(0 if eval(sys.argv[2]) else 1)' "${3:-$WORK/body}" "$1" 2>"$WORK/json.err" ||
        fail "$2: check '$1' failed on $(head -c 400 "${3:-$WORK/body}") $(cat "$WORK/json.err")"
}
