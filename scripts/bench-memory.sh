#!/usr/bin/env bash
# Peak resident memory (GNU time's "Maximum resident set size") of `parrot analyze` and `parrot report` on two
# generated parrot transcripts (issue #15: memory bounded by design, at most 1 GiB each):
#   big   — one transcript of about 200 MB (24,000 turns of about 8.5 kB, over a 26-word vocabulary: the worst case
#           for the loop score, which stops at its work bound there; a loop now and then);
#   long  — one conversation of 100,000 messages (about 200 bytes each).
# The inputs are generated into a temporary folder and removed afterwards; nothing is committed.
#
#   scripts/bench-memory.sh [PARROT (target/debug/parrot)]
#
# Prints one line per command: input, command, peak RSS in MiB (as GNU time counts it: the largest resident set
# of the process), wall seconds.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${1:-$root/target/debug/parrot}"
[ -x /usr/bin/time ] || { echo "bench-memory: /usr/bin/time (GNU time) is needed: apt-get install time" >&2; exit 2; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

python3 - "$tmp" <<'PY'
import json, random, sys
out = sys.argv[1]
random.seed(15)
words = ("harbour boat morning sea wind sail rope island gull tide net fish bread coffee market light stone "
         "bridge river letter window garden story song night road lamp").split()
def header(i):
    model = {"path": "/models/m.gguf", "file_size": 1000, "name": "m", "architecture": "llama", "n_ctx": 4096,
             "chat_template_source": "gguf"}
    return {"type": "header", "format": "parrot-transcript", "format_version": 1, "parrot_version": "0.1.0",
            "started": "2026-01-01T00:00:00Z", "config": {"agent_prefix": "Skye:", "user_prefix": "Mark:"},
            "assistant_model": model, "user_model": model, "backend": "llama", "user_backend": "llama", "seed": 1,
            "conversation_index": i}
def totals(turns, so_far):
    return {"turns": turns // 2, "tokens": so_far // 2, "prompt_tokens": 100 * turns // 2,
            "prompt_tokens_evaluated": 10 * turns // 2, "prompt_ms": 1.0, "generation_ms": 1.0}
def write(path, turns, size):
    so_far = 0
    with open(path, "w") as f:
        f.write(json.dumps(header(0)) + "\n")
        last = ""
        for i in range(turns):
            user = i % 2 == 1
            prefix = "Mark:" if user else "Skye:"
            if i % 50 == 49:
                text = last  # a loop now and then
            else:
                n = max(1, size // 7 + random.randint(-5, 5))
                text = prefix + " " + " ".join(random.choice(words) for _ in range(n))
            last = text
            tokens = max(1, len(text) // 4)
            so_far += tokens
            f.write(json.dumps({"type": "turn", "index": i, "speaker": "user" if user else "assistant",
                                "text": text, "prefix": prefix, "opening": False, "tokens": tokens,
                                "prompt_tokens": 100, "prompt_tokens_evaluated": 10, "stop_reason": "eos",
                                "max_tokens": 4096, "tokens_so_far": so_far}) + "\n")
        f.write(json.dumps({"type": "summary", "stop_reason": "max_tokens", "messages": turns,
                            "total_tokens": so_far, "wall_ms": 1.0,
                            "assistant": totals(turns, so_far), "user": totals(turns, so_far)}) + "\n")
import os
os.makedirs(f"{out}/big"); os.makedirs(f"{out}/long")
write(f"{out}/big/conversation-000.jsonl", 24_000, 10_000)
write(f"{out}/long/conversation-000.jsonl", 100_000, 200)
PY

measure() { # LABEL COMMAND...
  local label="$1"; shift
  /usr/bin/time -v -o "$tmp/time.txt" "$@" >/dev/null 2>"$tmp/err.txt" || true
  local kib wall
  kib=$(awk -F: '/Maximum resident set size/ { gsub(/ /, "", $2); print $2 }' "$tmp/time.txt")
  wall=$(awk '/Elapsed \(wall clock\)/ { print $NF }' "$tmp/time.txt")
  printf '%-44s peak RSS %6.0f MiB  wall %s\n' "$label" "$(echo "$kib / 1024" | bc -l)" "$wall"
  if grep -q . "$tmp/err.txt"; then sed 's/^/    stderr: /' "$tmp/err.txt" | head -3; fi
}
for set in big long; do
  f="$tmp/$set/conversation-000.jsonl"
  mb=$(du -m "$f" | cut -f1)
  measure "analyze $set ($mb MB, $(($(wc -l <"$f") - 2)) messages)" "$bin" analyze --no-save "$f"
  measure "report  $set ($mb MB)" "$bin" report --no-save --out "$tmp/report-$set" "$f"
done
