#!/usr/bin/env bash
# Style and static checks the suite enforces (scripts/test.sh runs this in CI; ADR 0019):
#   1. clang-format-14 --dry-run on every C++ source and header (.clang-format);
#   2. clang-tidy-14 with the checks in .clang-tidy over every library source, compiled as the clang
#      build compiles it (-Wthread-safety with -Werror: GUARDED_BY fields touched without their
#      mutex fail). build-lint/ is configured with clang-14 for its compile database; nothing is
#      built there.
#
#   scripts/lint.sh            # both
#   scripts/lint.sh format     # only clang-format
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS="${JOBS:-$(nproc)}"
what="${1:-all}"

mapfile -t sources < <(git ls-files 'src/*.cc' 'src/*.h' 'apps/*.cc' 'apps/*.h' |
  grep -v '^src/tokenizer/unicode_tables.cc$')  # generated tables
echo "== clang-format: ${#sources[@]} files"
clang-format-14 --dry-run -Werror "${sources[@]}"

if [ "$what" = "format" ]; then exit 0; fi
cmake -S . -B build-lint -G Ninja -DCMAKE_CXX_COMPILER=clang++-14 -DKVROUTE_BENCHMARKS=OFF \
  -DKVROUTE_WERROR=ON >/dev/null
# The epp's protoc-generated headers, which its sources include.
cmake --build build-lint --target kvroute_epp_proto_gen >/dev/null
mapfile -t units < <(git ls-files 'src/*.cc' 'apps/*.cc' | grep -v '_test\.cc$\|_bench\.cc$\|_fuzz\.cc$\|epp_load\.cc$')
echo "== clang-tidy: ${#units[@]} translation units"
set +e
printf '%s\n' "${units[@]}" | xargs -P "$JOBS" -n 2 clang-tidy-14 -p build-lint --quiet \
  >build-lint/clang-tidy.log 2>&1
status=$?
set -e
grep -v '^[0-9]* warnings\( and [0-9]* errors\)\? generated\.$\|^Suppressed [0-9]* warnings\|^Use -header-filter' \
  build-lint/clang-tidy.log || true
if [ "$status" -ne 0 ]; then
  echo "lint: clang-tidy found errors (above; build-lint/clang-tidy.log)"
  exit 1
fi
echo "lint: clean"
