#!/usr/bin/env bash
# Compares one parrot build on the GPU and on the CPU: the same conversations (same config, seed and budget) with
# every layer offloaded, then with none, first one conversation at a time and then P in parallel. Prints llama.cpp's
# own lines about the device and the offload, and the generation speed read from the transcripts' summaries.
#
#   scripts/gpu-vs-cpu.sh PARROT_BINARY ASSISTANT_MODEL USER_MODEL [TOKENS] [P]
#
# TOKENS is each conversation's budget (default 1024); P the conversations in flight for the parallel run (default 8).
# The transcripts and logs stay in $OUT_DIR (default: a new temporary folder).
set -euo pipefail
bin="$1"; assistant="$2"; user="$3"; tokens="${4:-1024}"; p="${5:-8}"
out="${OUT_DIR:-$(mktemp -d)}"
mkdir -p "$out"
"$bin" --version

speeds() {
  python3 - "$@" <<'PY'
import json, sys
wall = float(sys.argv[2]) - float(sys.argv[1])
files = sys.argv[3:]
tok = {"assistant": 0, "user": 0}
ms = {"assistant": 0.0, "user": 0.0}
total = 0
for f in files:
    last = json.loads(open(f).read().splitlines()[-1])
    assert last["type"] == "summary", f"{f} did not finish"
    total += last["total_tokens"]
    for s in tok:
        tok[s] += last[s]["tokens"]
        ms[s] += last[s]["generation_ms"]
rate = lambda s: tok[s] / ms[s] * 1000 if ms[s] else 0.0
print(f"  {len(files)} conversation(s), {total} tokens in {wall:.2f} s wall ({total / wall:.1f} tokens/s overall); "
      f"generation: assistant {rate('assistant'):.1f} tok/s, user {rate('user'):.1f} tok/s per conversation")
PY
}

run() {  # name, gpu layers, conversations, parallel
  local dir="$out/$1"
  rm -rf "$dir"
  local t0 t1
  t0=$(date +%s.%N)
  "$bin" run -q -vv --assistant-model "$assistant" --user-model "$user" --total-tokens "$tokens" \
    --gpu-layers "$2" -n "$3" --parallel "$4" --out "$dir" 2> "$dir.log" || { tail -20 "$dir.log"; return 1; }
  t1=$(date +%s.%N)
  echo "$1 (--gpu-layers $2, -n $3, --parallel $4):"
  sed -e 's/\x1b\[[0-9;]*m//g' "$dir.log" \
    | grep -E "ggml_cuda_init: found|Device 0:|offloaded [0-9]+/[0-9]+ layers|(CUDA0|CPU_Mapped) model buffer size" \
    | sed -e 's/.*llama-cpp-2: *//' -e 's/ *module=.*//' -e 's/^/  llama.cpp: /' | sort | uniq -c || true
  speeds "$t0" "$t1" "$dir"/conversation-*.jsonl
}

run gpu 999 1 1
run cpu 0 1 1
run gpu-parallel 999 "$p" "$p"
run cpu-parallel 0 "$p" "$p"
