#!/usr/bin/env bash
# Installs what parrot needs on a fresh Debian machine, then the two small test models.
#   - cmake and libclang-dev: llama.cpp's build and its bindgen bindings (llama-cpp-2)
#   - chromium: the report's browser test (headless)
#   - strace: the run folder's test that every turn is fsynced
#   - python3 + pip: the PyPI packages that ship the test models
#   - python3-venv: llama-cpp-python's server for the HTTP backend's tests (scripts/install-llama-cpp-python.sh;
#     PyPI has only its source, so this compiles llama.cpp once, ~10-15 minutes on two cores)
# With --tests it also installs llama-cpp-python's server (compiled from source once, then cached by pip), which
# only the HTTP backend's tests need. Safe to run again: it installs only what is missing (CI always refreshes apt).
set -euo pipefail
cd "$(dirname "$0")/.."
tests=false
[ "${1:-}" = "--tests" ] && tests=true
need=()
command -v cmake >/dev/null || need+=(cmake)
[ -e /usr/lib/llvm-14/lib/libclang.so ] || ls /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1 || need+=(libclang-dev)
command -v chromium >/dev/null || need+=(chromium)
command -v python3 >/dev/null || need+=(python3 python3-pip)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
command -v c++ >/dev/null || need+=(g++)
command -v curl >/dev/null || need+=(curl)
command -v strace >/dev/null || need+=(strace)
if [ "${#need[@]}" -gt 0 ] || [ "${CI:-}" = "true" ]; then
  need+=(cmake libclang-dev chromium python3-venv g++ curl strace)
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
./scripts/fetch-test-models.sh >/dev/null
if $tests; then
  ./scripts/install-llama-cpp-python.sh >/dev/null
fi
