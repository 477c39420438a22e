#!/usr/bin/env bash
# The main job: installs what is missing (Debian 12), builds pypool in release mode and runs the
# benchmark harness's default scenario set (pypool-bench --quick). Extra arguments go to
# pypool-bench, e.g. scripts/bench.sh --json out.json --plot plots/
set -euo pipefail
cd "$(dirname "$0")/.."

need=(cmake gcc pkg-config protobuf-c-compiler libprotobuf-c-dev protobuf-compiler python3-protobuf
      python3-dev libcriterion-dev gnuplot-nox)
missing=()
for pkg in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

build=${PYPOOL_BENCH_BUILD_DIR:-build-bench-release}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF -DPYPOOL_BUILD_EXAMPLES=OFF >/dev/null
cmake --build "$build" -j"$(nproc)" --target pypool-bench >/dev/null
if (($# == 0)); then
  set -- --quick
fi
exec "$build/bench/pypool-bench" "$@"
