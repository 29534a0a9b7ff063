#!/usr/bin/env python3
"""Writes three synthetic run sets (parrot JSONL, records as in src/transcript.rs) for looking at the report:
`baseline` (repeat_penalty 1.0: most conversations fall into a single-turn loop early), `pen11` (1.1: about half,
later) and `dry08` (dry_multiplier 0.8: a few, late). Seeded, so the same files every time.

    scripts/report-demo-sets.py OUT_DIR && parrot report OUT_DIR/baseline OUT_DIR/pen11 OUT_DIR/dry08 --out report
"""
import glob, json, os, random, re, sys

# Healthy turns are prose sentences of this checkout's own documentation, each used once per conversation.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXT = " ".join(open(p, encoding="utf-8").read() for p in sorted(glob.glob(f"{ROOT}/docs/*.md")) + [f"{ROOT}/README.md"])
SENTENCES = sorted({s.strip() for s in re.split(r"(?<=[.!?])\s+", re.sub(r"[`*]", "", re.sub(r"\s+", " ", TEXT)))
                    if 40 <= len(s) <= 240 and not re.search(r"[|#<>{}\[\]]", s)})

def texts(rng, turns, loop_at):
    pool = rng.sample(SENTENCES, min(len(SENTENCES), 2 * turns + 2))
    out, looped = [], None
    for i in range(turns):
        k = i // 2
        if i % 2 == 0 and loop_at is not None and k >= loop_at:
            looped = looped or pool.pop() + " " + pool.pop()
            out.append(looped)
        else:
            out.append(pool.pop())
    return out

def write(path, sampler, seed, index, msgs):
    model = lambda name: {"path": f"/models/{name}.gguf", "file_size": 1000, "name": name,
                          "architecture": "llama", "n_ctx": 4096, "chat_template_source": "gguf"}
    lines = [{"type": "header", "format": "parrot-transcript", "format_version": 1, "parrot_version": "0.1.0",
              "started": "2026-01-01T00:00:00Z",
              "config": {"agent_prefix": "Skye:", "user_prefix": "Mark:", "total_tokens": 4096,
                         "turn_max_tokens": 256, "sampler": dict(sampler, temperature=0.7, seed=seed)},
              "assistant_model": model("gemma-3-270m"), "user_model": model("smollm2-135m"),
              "backend": "llama", "user_backend": "llama", "seed": seed, "conversation_index": index}]
    so_far, totals = 0, {"assistant": [0, 0, 0.0], "user": [0, 0, 0.0]}
    for i, text in enumerate(msgs):
        speaker = "assistant" if i % 2 == 0 else "user"
        prefix = "Skye:" if speaker == "assistant" else "Mark:"
        tokens = max(1, len(text) // 4)
        so_far += tokens
        ms = tokens * (18.0 + seed % 5)
        t = totals[speaker]; t[0] += 1; t[1] += tokens; t[2] += ms
        lines.append({"type": "turn", "index": i, "speaker": speaker, "text": f"{prefix} {text}", "prefix": prefix,
                      "opening": False, "tokens": tokens, "prompt_tokens": 100 + i * 10,
                      "prompt_tokens_evaluated": 10, "stop_reason": "eos", "max_tokens": 256,
                      "tokens_so_far": so_far,
                      "timings": {"prompt_ms": 5.0, "generation_ms": ms, "tokens_per_s": tokens * 1000.0 / ms}})
    tot = lambda s: {"turns": totals[s][0], "tokens": totals[s][1], "prompt_tokens": 0,
                     "prompt_tokens_evaluated": 0, "prompt_ms": 0.0, "generation_ms": totals[s][2]}
    lines.append({"type": "summary", "stop_reason": "budget", "messages": len(msgs), "total_tokens": so_far,
                  "wall_ms": 1000.0, "assistant": tot("assistant"), "user": tot("user")})
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        for l in lines:
            f.write(json.dumps(l) + "\n")

def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "demo-sets"
    sets = [("baseline", {"repeat_penalty": 1.0, "dry_multiplier": 0.0}, 0.75, (1, 5)),
            ("pen11", {"repeat_penalty": 1.1, "dry_multiplier": 0.0}, 0.5, (3, 9)),
            ("dry08", {"repeat_penalty": 1.0, "dry_multiplier": 0.8}, 0.15, (6, 11))]
    rng = random.Random(7)
    for name, sampler, share, (lo, hi) in sets:
        for i in range(24):
            loop_at = rng.randint(lo, hi) if rng.random() < share else None
            turns = 2 * rng.randint(10, 14)
            write(f"{out}/{name}/conversation-{i:03}.jsonl", sampler, 100 + i, i, texts(rng, turns, loop_at))

main()
