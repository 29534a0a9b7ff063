#!/usr/bin/env bash
# Installs llama-cpp-python's OpenAI-compatible server (`python -m llama_cpp.server`) from PyPI into a git-ignored
# virtual environment of this checkout, for the HTTP backend's real-server tests (tests/it/http.rs) and benchmark.
# PyPI ships llama-cpp-python only as a source distribution, so pip compiles llama.cpp: about 10-15 minutes on two
# cores. Safe to run again: it does nothing when the server already imports.
#
# Prints the venv's python on success; tests find it at <repo>/.venv-lcp/bin/python or $PARROT_LCP_PYTHON.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${PARROT_LCP_VENV:-$root/.venv-lcp}"
version=0.3.36
py="$venv/bin/python"
if [ -x "$py" ] && "$py" -c 'import llama_cpp.server.app' >/dev/null 2>&1; then
  echo "$py"
  exit 0
fi
python3 -m venv "$venv"
"$py" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
# Only the CPU backend, without the multimodal (llava/mtmd) library: the build is long enough as it is. Not
# `-march=native`: on a CPU that reports AMX, a native build runs AMX tile instructions that a virtual machine may
# not enable for the process (`ldtilecfg` then faults, killing the server at its first matrix product, as on this
# project's Sapphire Rapids VMs); AVX2/FMA/F16C run on every x86-64 machine of the last decade.
export CMAKE_ARGS="${CMAKE_ARGS:--DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON}"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
"$py" -m pip install --disable-pip-version-check "llama-cpp-python[server]==$version" >&2
"$py" -c 'import llama_cpp.server.app' >&2
echo "$py"
