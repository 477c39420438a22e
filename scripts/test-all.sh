#!/usr/bin/env bash
# test-all.sh - builds and runs every test variant of pypool, one after the other, stopping at
# the first failure (what .ci/run calls):
#   normal  -O2 -g (RelWithDebInfo): every ctest suite (Criterion, Python runtime, stress_smoke,
#           hygiene, bench/examples tests)
#   asan    -fsanitize=address,undefined, UBSan non-recoverable, LeakSanitizer on: the Criterion
#           suites, stress_smoke, hygiene (and whatever else registers in that build)
#   tsan    -fsanitize=thread: stress_tsan (60 s of chaos; Criterion cannot start under TSan)
#   fuzz    clang, -fsanitize=fuzzer + address,undefined: fuzz_frame, fuzz_reply (60 s each)
#
# Usage: scripts/test-all.sh [normal] [asan] [tsan] [fuzz]     (default: all four, that order)
# Environment: PYPOOL_CI_BUILD_ROOT (default build-ci), PYPOOL_CI_JOBS (default nproc),
#              PYPOOL_FUZZ_SECONDS (default 60), PYPOOL_STRESS_TOLERANCE_MS (stress lateness).
# Each variant builds in $PYPOOL_CI_BUILD_ROOT/<variant>; tests run with -j1 because the Python
# worker tests are timing-sensitive on 2 cores. Every ctest test carries a TIMEOUT.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

build_root=${PYPOOL_CI_BUILD_ROOT:-build-ci}
jobs=${PYPOOL_CI_JOBS:-$(nproc)}
fuzz_seconds=${PYPOOL_FUZZ_SECONDS:-60}
variants=("$@")
if ((${#variants[@]} == 0)); then
  variants=(normal asan tsan fuzz)
fi
for v in "${variants[@]}"; do
  case "$v" in
    normal | asan | tsan | fuzz) ;;
    *) echo "test-all: unknown variant '$v' (normal, asan, tsan, fuzz)" >&2; exit 2 ;;
  esac
done

# ---- packages (Debian 12), installed only if one is missing --------------------------------
need=(cmake make gcc pkg-config protobuf-c-compiler libprotobuf-c-dev protobuf-compiler
      python3-protobuf libcriterion-dev clang libclang-rt-14-dev python3-dev gnuplot-nox
      libmicrohttpd-dev curl prometheus)
missing=()
for pkg in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "test-all: installing missing packages: ${missing[*]}"
  sudo_cmd=()
  if [[ $(id -u) -ne 0 ]]; then
    sudo_cmd=(sudo)
  fi
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}"
fi

# ---- stages -------------------------------------------------------------------------------
summary=()
t_all=$(date +%s)

fmt_secs() {
  printf '%dm%02ds' $(($1 / 60)) $(($1 % 60))
}

# run_stage NAME CMD...: runs, times, and stops everything on failure with a clear message.
run_stage() {
  local name=$1
  shift
  echo
  echo "==== test-all: $name ===="
  local t0 rc=0
  t0=$(date +%s)
  "$@" || rc=$?
  local took=$(($(date +%s) - t0))
  if ((rc != 0)); then
    echo
    echo "test-all: FAILED at stage '$name' (exit $rc, after $(fmt_secs "$took"))." >&2
    echo "test-all: command: $*" >&2
    echo "test-all: stages done before it:" >&2
    printf '  %s\n' "${summary[@]:-none}" >&2
    exit 1
  fi
  summary+=("$(printf '%-24s %s' "$name" "$(fmt_secs "$took")")")
  echo "==== test-all: $name passed in $(fmt_secs "$took") ===="
}

configure_and_build() {
  local dir=$1
  shift
  cmake -S "$repo" -B "$dir" "$@" &&
    cmake --build "$dir" -j "$jobs"
}

run_ctest() {
  local dir=$1
  shift
  ctest --test-dir "$dir" --output-on-failure --no-tests=error -j1 "$@"
}

for v in "${variants[@]}"; do
  dir=$build_root/$v
  case "$v" in
    normal)
      run_stage "normal: build" configure_and_build "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DPYPOOL_SANITIZE= -DPYPOOL_FUZZ=OFF
      run_stage "normal: tests" run_ctest "$dir"
      ;;
    asan)
      run_stage "asan+ubsan: build" configure_and_build "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DPYPOOL_SANITIZE=address,undefined -DPYPOOL_FUZZ=OFF -DPYPOOL_ASSERTIONS=ON
      run_stage "asan+ubsan: tests" run_ctest "$dir"
      ;;
    tsan)
      run_stage "tsan: build" configure_and_build "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DPYPOOL_SANITIZE=thread -DPYPOOL_FUZZ=OFF
      run_stage "tsan: stress" run_ctest "$dir" -R '^stress_tsan$'
      ;;
    fuzz)
      run_stage "fuzz: build" configure_and_build "$dir" -DCMAKE_C_COMPILER=clang \
        -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPYPOOL_SANITIZE=address,undefined -DPYPOOL_FUZZ=ON \
        -DPYPOOL_FUZZ_SECONDS="$fuzz_seconds"
      run_stage "fuzz: fuzzers" run_ctest "$dir" -R '^fuzz_'
      ;;
  esac
done

echo
echo "==== test-all: every stage passed in $(fmt_secs $(($(date +%s) - t_all))) ===="
printf '  %s\n' "${summary[@]}"
