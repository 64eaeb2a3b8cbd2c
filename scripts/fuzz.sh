#!/usr/bin/env bash
# Builds the libFuzzer targets with clang-14 in build-fuzz/ and runs each for SECONDS (default 20) from
# its seed corpus. Any crash, leak, sanitizer report or invariant abort fails the script; the crashing
# input is left in build-fuzz/artifacts/.
#
#   scripts/fuzz.sh            # all targets, 20 s each
#   scripts/fuzz.sh 300        # longer runs
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH="${1:-20}"
JOBS="${JOBS:-$(nproc)}"
TARGETS=(tokenizer_encode_fuzz chat_template_fuzz kv_events_decode_fuzz prom_parser_fuzz http_parser_fuzz
  epp_processor_fuzz kube_objects_fuzz auth_keys_fuzz
  replication_decode_fuzz)

cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++-14 \
  -DKVROUTE_FUZZ=ON -DKVROUTE_BENCHMARKS=OFF >/dev/null
cmake --build build-fuzz -j "$JOBS" --target "${TARGETS[@]}"

seed_dir() {
  case "$1" in
    tokenizer_encode_fuzz) echo src/tokenizer/testdata/fuzz_corpus ;;
    chat_template_fuzz) echo src/chat_template/testdata/fuzz_corpus ;;
    kv_events_decode_fuzz) echo src/kv_events/testdata ;;
    prom_parser_fuzz) echo src/metrics/testdata ;;
    http_parser_fuzz) echo src/http/testdata/fuzz_corpus ;;
    kube_objects_fuzz) echo src/discovery/testdata/fuzz_corpus ;;
    auth_keys_fuzz) echo src/auth/testdata/fuzz_corpus ;;
    replication_decode_fuzz) echo src/replication/testdata/fuzz_corpus ;;
  esac
}

mkdir -p build-fuzz/artifacts
for t in "${TARGETS[@]}"; do
  work="build-fuzz/corpus/$t"
  mkdir -p "$work"
  seeds="$(seed_dir "$t")"
  [ -d "$seeds" ] || seeds=""
  echo "== $t: ${SECONDS_EACH}s"
  ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    "build-fuzz/$(find build-fuzz/src -name "$t" -type f -printf '%P\n' | head -1 | sed 's|^|src/|')" \
    -max_total_time="$SECONDS_EACH" -max_len=8192 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix=build-fuzz/artifacts/"$t"- "$work" $seeds 2>&1 | tail -n 12
done
