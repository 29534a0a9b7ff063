#!/usr/bin/env bash
# Prints what turn embeddings (`parrot analyze --embed MODEL`) cost per 1,000 turns with each test model, and what
# they find on the labelled set `tests/fixtures/meaning/` beside the lexical detectors alone: recall on the
# paraphrase loops, false positives on the healthy conversations, onset error (in the looping speaker's turns).
#
#   scripts/bench-embed.sh [PARROT_BINARY [LABELLED_SET_DIR]]  (default: target/release/parrot, else target/debug/parrot;
#                                                              tests/fixtures/meaning, with its labels.json)
#
# Cost = wall time, and CPU time (user + system), of `analyze --embed` minus that of the same `analyze` without it,
# divided by the turns embedded (every non-system message), model load included. Wall time needs a quiet machine;
# CPU time varies less on a busy one.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bin="${1:-}"
if [ -z "$bin" ]; then
  if [ -x target/release/parrot ]; then bin=target/release/parrot; else bin=target/debug/parrot; fi
fi
mapfile -t models < <(scripts/fetch-test-models.sh)
set_dir="${2:-tests/fixtures/meaning}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

run() { # name, extra args...
  local name=$1
  shift
  # GNU time: wall, user and system seconds (CPU seconds stay comparable on a busy machine; wall does not).
  /usr/bin/time -f "%e %U %S" -o "$tmp/$name.time" \
    "$bin" --quiet analyze --no-save --recompute --json "$@" "$set_dir"/*.jsonl >"$tmp/$name.json"
}

run lexical
run gemma --embed "${models[0]}"
run smollm2 --embed "${models[1]}"

python3 - "$tmp" "$set_dir/labels.json" <<'PY'
import json, sys
tmp, labels_path = sys.argv[1], sys.argv[2]
labels = {l["file"]: l for l in json.load(open(labels_path))}
def secs(name):
    wall, user, system = map(float, open(f"{tmp}/{name}.time").read().split()[-3:])
    return wall, user + system
base = secs("lexical")
print(f"{'detectors':<28} {'recall':>8} {'FP healthy':>11} {'onset |err| ≤ 2':>16} {'mean |err|':>11} {'s / 1k turns':>13} {'CPU s / 1k':>11}")
for name in ["lexical", "gemma", "smollm2"]:
    doc = json.load(open(f"{tmp}/{name}.json"))
    convs = [c for f in doc["folders"] for c in f["conversations"]]
    found = fp = within = 0
    errs = []
    turns = 0
    for c in convs:
        file = c["source"].split("/")[-1]
        label = labels[file]
        sem = c["detectors"]["semantic_repetition"]
        turns += sum(1 for s in c["message_speakers"] if s != "system")
        if label["loop"]:
            d = sem[label["speaker"]]
            if d["detected"]:
                found += 1
                err = abs(d["onset"] - label["onset"])
                errs.append(err)
                within += err <= 2
        elif sem["assistant"]["detected"] or sem["user"]["detected"]:
            fp += 1
    loops = sum(1 for l in labels.values() if l["loop"])
    healthy = len(labels) - loops
    wall, cpu = secs(name)
    cost = "" if name == "lexical" else f"{(wall - base[0]) / turns * 1e3:.1f}"
    cpu_cost = "" if name == "lexical" else f"{(cpu - base[1]) / turns * 1e3:.1f}"
    what = "lexical only" if name == "lexical" else f"+ --embed {name}"
    mean = f"{sum(errs) / len(errs):.2f}" if errs else "-"
    print(f"{what:<28} {found}/{loops:<6} {fp}/{healthy:<9} {within}/{found:<14} {mean:>11} {cost:>13} {cpu_cost:>11}")
print(f"(set: {loops} paraphrase loops, {healthy} healthy, {turns} turns; cost: wall and CPU (user + system) seconds minus "
      "the lexical run's, model load included)")
PY
