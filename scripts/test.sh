#!/usr/bin/env bash
# Runs the whole test suite: (re)builds build/ with warnings as errors, runs CTest; with CI=true it
# also builds and runs the suite under ASan+UBSan in build-asan/.
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS="${JOBS:-$(nproc)}"

run_suite() {
  local dir="$1"; shift
  cmake -S . -B "$dir" -G Ninja "$@" -DKVROUTE_WERROR=ON
  cmake --build "$dir" -j "$JOBS"
  ctest --test-dir "$dir" --output-on-failure -j "$JOBS"
}

run_suite build -DCMAKE_BUILD_TYPE=RelWithDebInfo
if [ "${CI:-}" = "true" ] || [ "${KVROUTE_ASAN:-}" = "1" ]; then
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    run_suite build-asan -DCMAKE_BUILD_TYPE=Debug -DKVROUTE_SANITIZE=ON -DKVROUTE_BENCHMARKS=OFF
fi
