#!/usr/bin/env bash
# Runs the whole test suite: (re)builds build/ with warnings as errors, runs CTest; with CI=true it
# also runs scripts/lint.sh (clang-format, clang-tidy, -Wthread-safety), builds and runs the suite under ASan+UBSan in build-asan/ and under ThreadSanitizer in
# build-tsan/, and runs each libFuzzer target briefly (scripts/fuzz.sh).
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
if [ "${CI:-}" = "true" ] || [ "${KVROUTE_LINT:-}" = "1" ]; then
  # clang-format on every source, clang-tidy (.clang-tidy) and clang's -Wthread-safety (ADR 0019).
  scripts/lint.sh
fi
if [ "${CI:-}" = "true" ] || [ "${KVROUTE_ASAN:-}" = "1" ]; then
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    run_suite build-asan -DCMAKE_BUILD_TYPE=Debug -DKVROUTE_SANITIZE=ON -DKVROUTE_BENCHMARKS=OFF
fi
if [ "${CI:-}" = "true" ] || [ "${KVROUTE_TSAN:-}" = "1" ]; then
  # Suppressions: tests/tsan.supp (only races inside uninstrumented system libraries, each with why).
  TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$PWD/tests/tsan.supp" \
    run_suite build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKVROUTE_TSAN=ON -DKVROUTE_BENCHMARKS=OFF
fi
if [ "${CI:-}" = "true" ] || [ "${KVROUTE_FUZZ:-}" = "1" ]; then
  # libFuzzer smoke run of every fuzz target (clang-14, ASan+UBSan, coverage-guided): 15 s each.
  scripts/fuzz.sh "${KVROUTE_FUZZ_SECONDS:-15}"
fi
