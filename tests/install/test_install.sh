#!/usr/bin/env bash
# test_install.sh - the install tree works on its own, at any prefix, as a user builds against it.
#
#   test_install.sh <build dir> <python3 the build detected> <C compiler> <configure-time runtime dir>
#
# Installs the build into a fresh prefix, then, with nothing pointing back at the build tree:
# builds programs with pkg-config (shared and static) and with find_package(pypool), runs them
# against a Python module, and checks that the worker's runtime came from the prefix; imports the
# runtime through `pkg-config --variable=pythondir`; and checks that an install whose runtime is
# missing fails with PYPOOL_ESPAWN naming where it looked. Exit 77 (ctest: skipped) when a tool
# it needs is missing.
set -u
BUILD=${1:?usage: test_install.sh <build dir> <python3> <cc> <configure-time runtime dir>}
PY=${2:?python3}
CC=${3:?cc}
CONFIGURED_RUNTIME=${4:?configure-time runtime dir}
for tool in cmake pkg-config "$CC" "$PY"; do
    command -v "$tool" >/dev/null || { echo "SKIP: $tool is not installed"; exit 77; }
done
WORK=$(mktemp -d "${TMPDIR:-/tmp}/pypool_install_test.XXXXXX")
WORK=$(cd "$WORK" && pwd -P) # the library reports canonical paths
trap 'rm -rf "$WORK"' EXIT
FAILURES=0
fail() {
    printf 'FAIL: %s\n' "$*"
    FAILURES=$((FAILURES + 1))
}
log() { printf -- '--- %s\n' "$*"; }

PREFIX=$WORK/prefix
cmake --install "$BUILD" --prefix "$PREFIX" >"$WORK/install.log" 2>&1 ||
    { cat "$WORK/install.log"; echo "FATAL: cmake --install failed"; exit 1; }
PCDIR=$(dirname "$(find "$PREFIX" -name pypool.pc | head -n 1)")
[ -f "$PCDIR/pypool.pc" ] || { echo "FATAL: no pypool.pc installed"; exit 1; }
LIBDIR=$(dirname "$PCDIR")
export PKG_CONFIG_PATH=$PCDIR
# Nothing may lead the installed library back to the build tree.
unset PYPOOL_RUNTIME_DIR PYTHONPATH LD_LIBRARY_PATH CMAKE_PREFIX_PATH
grep -rqF "$BUILD" "$PCDIR/pypool.pc" "$LIBDIR/cmake/pypool" &&
    fail "pypool.pc or the CMake package names the build tree"

log "pkg-config answers relative to where the .pc is"
pythondir=$(pkg-config --variable=pythondir pypool)
[ "$(cd "$pythondir" 2>/dev/null && pwd -P)" = "$PREFIX/share/pypool/python" ] ||
    fail "pythondir is '$pythondir', want $PREFIX/share/pypool/python"
[ "$(cd "$(pkg-config --variable=libdir pypool)" 2>/dev/null && pwd -P)" = "$LIBDIR" ] ||
    fail "libdir is '$(pkg-config --variable=libdir pypool)', want $LIBDIR"
grep -q "^prefix=\${pcfiledir}" "$PCDIR/pypool.pc" || fail "pypool.pc does not use \${pcfiledir}"
(cd "$WORK" && PYTHONPATH=$pythondir "$PY" -c 'import pypool, pypool._wire') ||
    fail "PYTHONPATH=\$(pkg-config --variable=pythondir pypool) python3 -c 'import pypool' failed"
ls "$pythondir"/pypool/__pycache__/*.pyc >/dev/null 2>&1 || fail "the runtime was not byte-compiled"

mkdir -p "$WORK/mod" "$WORK/app"
cat >"$WORK/mod/inst_mod.py" <<'PYEOF'
import pypool

@pypool.handler
def where(payload, ctx):
    return pypool.__file__.encode()
PYEOF
cat >"$WORK/app/app.c" <<'CEOF'
#include <pypool.h>
#include <stdio.h>
#include <string.h>

/* argv[1]: python_path; prints the runtime file the worker imported pypool from */
int main(int argc, char **argv)
{
    pypool_config cfg;
    pypool_config_init(&cfg);
    cfg.module = "inst_mod";
    cfg.python_path = argc > 1 ? argv[1] : ".";
    cfg.size = 1;
    pypool *p;
    int rc = pypool_create(&cfg, &p);
    if (rc != PYPOOL_OK) {
        fprintf(stderr, "create: %s: %s\n", pypool_strerror(rc), pypool_last_error());
        return rc == PYPOOL_ESPAWN ? 3 : 1;
    }
    pypool_result r;
    rc = pypool_call(p, "where", "", 0, 10000, &r);
    if (rc == PYPOOL_OK)
        printf("%.*s\n", (int)r.len, (char *)r.data);
    else
        fprintf(stderr, "call: %s: %s\n", pypool_strerror(rc), r.error_message);
    pypool_result_free(&r);
    pypool_destroy(p);
    return rc == PYPOOL_OK ? 0 : 1;
}
CEOF

# check_runs <program> <what>: it runs, and its worker's runtime is the prefix's.
check_runs() {
    local out
    out=$(cd "$WORK" && "$1" "$WORK/mod" 2>"$WORK/run.err") ||
        { fail "$2: $(cat "$WORK/run.err")"; return; }
    case "$out" in
    "$PREFIX"/share/pypool/python/pypool/*) log "$2: runtime $out" ;;
    *) fail "$2: the worker's runtime is '$out', not under $PREFIX/share/pypool/python" ;;
    esac
}

log "a program built with pkg-config"
# shellcheck disable=SC2046
"$CC" "$WORK/app/app.c" -o "$WORK/app/app_pc" $(pkg-config --cflags --libs pypool) \
    -Wl,-rpath,"$(pkg-config --variable=libdir pypool)" 2>"$WORK/cc.err" ||
    fail "pkg-config build: $(cat "$WORK/cc.err")"
[ -x "$WORK/app/app_pc" ] && check_runs "$WORK/app/app_pc" "pkg-config program"

log "a program built with pkg-config --static (libpypool.a), in <prefix>/bin"
mkdir -p "$PREFIX/bin"
# shellcheck disable=SC2046
"$CC" "$WORK/app/app.c" -o "$PREFIX/bin/app_pc_static" $(pkg-config --cflags pypool) \
    $(pkg-config --static --libs pypool | sed 's/-lpypool\b/-l:libpypool.a/') \
    2>"$WORK/cc.err" || fail "pkg-config --static build: $(cat "$WORK/cc.err")"
if [ -x "$PREFIX/bin/app_pc_static" ]; then
    (LC_ALL=C readelf -d "$PREFIX/bin/app_pc_static" 2>/dev/null || true) | grep -q 'libpypool' &&
        fail "the --static program needs libpypool.so"
    check_runs "$PREFIX/bin/app_pc_static" "pkg-config --static program"
fi

log "a program built with find_package(pypool)"
mkdir -p "$WORK/cmk"
cat >"$WORK/cmk/CMakeLists.txt" <<'CMEOF'
cmake_minimum_required(VERSION 3.16)
project(pypool_user C)
find_package(pypool REQUIRED)
add_executable(app_cmake ../app/app.c)
target_link_libraries(app_cmake PRIVATE pypool::pypool)
add_executable(app_static ../app/app.c)
target_link_libraries(app_static PRIVATE pypool::pypool_static)
file(WRITE ${CMAKE_BINARY_DIR}/pythondir.txt "${pypool_PYTHONDIR}")
CMEOF
if cmake -S "$WORK/cmk" -B "$WORK/cmk/build" -DCMAKE_PREFIX_PATH="$PREFIX" \
    -DCMAKE_C_COMPILER="$CC" >"$WORK/cmk.log" 2>&1 &&
    cmake --build "$WORK/cmk/build" >>"$WORK/cmk.log" 2>&1; then
    [ "$(cd "$(cat "$WORK/cmk/build/pythondir.txt")" 2>/dev/null && pwd -P)" = \
        "$PREFIX/share/pypool/python" ] ||
        fail "pypool_PYTHONDIR is '$(cat "$WORK/cmk/build/pythondir.txt")'"
    check_runs "$WORK/cmk/build/app_cmake" "find_package program (shared)"
    # The static library finds the runtime relative to the program: put it in <prefix>/bin.
    cp "$WORK/cmk/build/app_static" "$PREFIX/bin/"
    check_runs "$PREFIX/bin/app_static" "find_package program (static, in <prefix>/bin)"
else
    fail "find_package build: $(tail -n 20 "$WORK/cmk.log")"
fi

log "PYPOOL_RUNTIME_DIR overrides the search"
out=$(cd "$WORK" && PYPOOL_RUNTIME_DIR="$pythondir" "$WORK/app/app_pc" "$WORK/mod" 2>&1) ||
    fail "with PYPOOL_RUNTIME_DIR: $out"
out=$(cd "$WORK" && PYPOOL_RUNTIME_DIR="$WORK/nowhere" "$WORK/app/app_pc" "$WORK/mod" 2>&1)
rc=$?
[ "$rc" = 3 ] || fail "PYPOOL_RUNTIME_DIR=<no runtime>: exit $rc, want 3 (ESPAWN): $out"
case "$out" in
*"looked in: $WORK/nowhere (PYPOOL_RUNTIME_DIR)"*) ;;
*) fail "PYPOOL_RUNTIME_DIR=<no runtime>: the error does not name it: $out" ;;
esac

log "a missing runtime is PYPOOL_ESPAWN naming where it looked"
if [ -e "$CONFIGURED_RUNTIME/pypool/pypool_pb2.py" ]; then
    # The configure-time install directory is the last resort, and it exists on this machine.
    log "skipped: $CONFIGURED_RUNTIME holds a runtime, so an install without one still finds it"
else
    cp -a "$PREFIX" "$WORK/broken"
    rm -rf "$WORK/broken/share/pypool"
    BROKEN_LIBDIR=$WORK/broken/${LIBDIR#"$PREFIX"/}
    "$CC" "$WORK/app/app.c" -o "$WORK/app/app_broken" -I"$WORK/broken/include" \
        -L"$BROKEN_LIBDIR" -lpypool -Wl,-rpath,"$BROKEN_LIBDIR" ||
        fail "build against the broken prefix"
    (cd "$WORK" && "$WORK/app/app_broken" "$WORK/mod") >/dev/null 2>"$WORK/broken.err"
    rc=$?
    [ "$rc" = 3 ] || fail "missing runtime: exit $rc, want 3 (ESPAWN): $(cat "$WORK/broken.err")"
    grep -qF "$WORK/broken/share/pypool/python (relative to $BROKEN_LIBDIR/" "$WORK/broken.err" ||
        fail "the error does not name where it looked: $(cat "$WORK/broken.err")"
    grep -qF "$CONFIGURED_RUNTIME" "$WORK/broken.err" ||
        fail "the error does not name the configure-time directory: $(cat "$WORK/broken.err")"
    grep -q "PYPOOL_RUNTIME_DIR" "$WORK/broken.err" ||
        fail "the error does not name PYPOOL_RUNTIME_DIR"
    # The static program moved out of <prefix>/bin looks relative to itself, too.
    (cd "$WORK" && "$WORK/broken/bin/app_static" "$WORK/mod") >/dev/null 2>"$WORK/broken.err"
    rc=$?
    [ "$rc" = 3 ] || fail "static, missing runtime: exit $rc: $(cat "$WORK/broken.err")"
    grep -qF "$WORK/broken/share/pypool/python (relative to $WORK/broken/bin/app_static)" \
        "$WORK/broken.err" || fail "static: the error does not name where it looked: $(cat "$WORK/broken.err")"
    log "$(cat "$WORK/broken.err")"
fi

if [ "$FAILURES" -ne 0 ]; then
    echo "$FAILURES failed"
    exit 1
fi
echo "--- all install checks passed"
