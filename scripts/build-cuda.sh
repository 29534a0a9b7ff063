#!/usr/bin/env bash
# Builds parrot with llama.cpp's CUDA backend using only NVIDIA's PyPI wheels: no system CUDA toolkit, no root.
#
#   scripts/build-cuda.sh                      # GPU visible: compiles for it ("native"); otherwise llama.cpp's list
#   PARROT_CUDA_ARCHS=90-real scripts/build-cuda.sh   # one architecture (H100/H200): far shorter build
#   scripts/build-cuda.sh --bench generate            # another target (here the generation benchmark) instead
#
# Output: target/cuda/release/parrot (stripped). At run time it needs the CUDA driver (libcuda.so.1, from the
# NVIDIA driver) and cuBLAS 13 (libcublas.so.13, libcublasLt.so.13). It looks for cuBLAS next to itself, in this
# checkout's .cuda folder, then on LD_LIBRARY_PATH: e.g. a PyTorch install's site-packages/nvidia/cu13/lib.
# Without a GPU the binary still runs, on the CPU.
#
# Why the detours:
#   - The wheels are a full toolkit once merged into one folder (nvcc, cicc/nvvm, crt and CCCL headers, cudart,
#     cuBLAS); we pin 13.0, the CUDA version of the oldest 13.x driver, so the binary runs on any CUDA 13 driver.
#   - llama-cpp-sys-2 links cuBLAS statically on Linux (cublas_static, cublasLt_static, culibos), but NVIDIA ships
#     those archives only in its full toolkit, not on PyPI. We give the linker empty archives under those names
#     and link the shared cuBLAS from the wheel instead.
#   - PyPI has no libcuda.so link stub, so the build uses the `cuda-no-vmm` feature: llama.cpp then takes GPU memory
#     from its own pool rather than the driver's virtual-memory API, and the binary needs no driver to link.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
py="$root/.cuda/py"
tk="$py/nvidia/cu13"
shim="$root/.cuda/link/lib64"

if [ ! -x "$tk/bin/nvcc" ] || [ ! -e "$tk/lib/libcublas.so.13" ]; then
  python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$py" \
    nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-cuda-runtime==13.0.96 \
    nvidia-cuda-cccl==13.0.85 nvidia-cublas==13.0.2.14 >&2
fi
# The layout CMake's FindCUDAToolkit and nvcc's own profile expect: unversioned .so names and a lib64 folder.
ln -sfn lib "$tk/lib64"
for lib in cudart cublas cublasLt; do ln -sf "lib$lib.so.13" "$tk/lib/lib$lib.so"; done
mkdir -p "$shim"
for lib in cublas_static cublasLt_static culibos; do
  [ -e "$shim/lib$lib.a" ] || ar rcs "$shim/lib$lib.a"
done

if [ -z "${PARROT_CUDA_ARCHS:-}" ] && command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
  PARROT_CUDA_ARCHS=native
fi
if [ -n "${PARROT_CUDA_ARCHS:-}" ]; then
  export CMAKE_CUDA_ARCHITECTURES="$PARROT_CUDA_ARCHS"
fi
# CUDA_LIBRARY_PATH lists toolkit roots: llama-cpp-sys-2 searches the lib64 folder of each.
export CUDA_PATH="$tk" CUDACXX="$tk/bin/nvcc" CUDA_LIBRARY_PATH="$tk:$(dirname "$shim")"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"

# The binary usually runs on another machine than the one that builds it: a named baseline every x86-64 server of
# the last decade has (AVX2, FMA, F16C), never `target-cpu=native` (docs/build.md).
if [ -z "${RUSTFLAGS+set}" ] && [ "$(uname -m)" = x86_64 ]; then
  export RUSTFLAGS="-C target-cpu=x86-64-v3"
fi

# build.rs links the shared cuBLAS of this folder into every binary (see its cuda_shared_cublas).
export PARROT_CUDA_SHARED_CUBLAS="$tk/lib"
if [ "$#" -gt 0 ]; then
  cargo build --locked --release --features cuda-no-vmm --target-dir "$root/target/cuda" "$@"
else
  cargo build --locked --release --features cuda-no-vmm --target-dir "$root/target/cuda" --bin parrot
  strip "$root/target/cuda/release/parrot"
  echo "$root/target/cuda/release/parrot"
fi
