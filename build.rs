//! Embeds the version, the git commit and the enabled features into `parrot --version`.

use std::process::Command;

fn main() {
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map_or_else(|| "unknown".to_string(), |s| s.trim().to_string());
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .is_some_and(|o| o.status.success() && !o.stdout.is_empty());
    let mut features: Vec<String> = std::env::vars()
        .filter_map(|(k, _)| k.strip_prefix("CARGO_FEATURE_").map(|f| f.to_lowercase().replace('_', "-")))
        .filter(|f| f != "default")
        .collect();
    features.sort();
    let features = if features.is_empty() { "none".to_string() } else { features.join(",") };
    let dirty = if dirty { "-dirty" } else { "" };
    let cpu = cpu_variant();
    println!(
        "cargo:rustc-env=PARROT_LONG_VERSION={version} (commit {commit}{dirty}; features: {features}; cpu: {cpu})"
    );
    println!("cargo:rustc-env=PARROT_CPU={cpu}");
    println!("cargo:rustc-env=PARROT_GIT_COMMIT={commit}{dirty}");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/index");
    println!("cargo:rerun-if-changed=build.rs");
    cuda_shared_cublas();
}

/// The CPU code this build runs: the `target-cpu` RUSTFLAGS name (`default` when none) and the vector extensions
/// that enabled, which llama.cpp's kernels were built with too (llama-cpp-sys-2 passes `native` on as GGML_NATIVE,
/// named features as GGML_AVX2 and the like). With none of them on x86-64, llama.cpp uses its own non-native
/// fallback, AVX/AVX2/FMA/F16C (docs/build.md).
fn cpu_variant() -> String {
    println!("cargo:rerun-if-env-changed=CARGO_ENCODED_RUSTFLAGS");
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let target_cpu = flags
        .split('\x1f')
        .rev()
        .find_map(|f| f.split("target-cpu=").nth(1))
        .map_or_else(|| "default".to_string(), str::to_string);
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let features = std::env::var("CARGO_CFG_TARGET_FEATURE").unwrap_or_default();
    // The extensions llama.cpp's CPU kernels choose between, widest last.
    const VECTOR: &[&str] = &[
        "sse4.2",
        "avx",
        "f16c",
        "fma",
        "avx2",
        "avxvnni",
        "avx512f",
        "avx512bw",
        "avx512vnni",
        "avx512bf16",
        "avx512fp16",
        "neon",
        "dotprod",
        "i8mm",
        "sve",
        "sve2",
    ];
    let enabled: Vec<&str> = VECTOR.iter().copied().filter(|v| features.split(',').any(|f| f == *v)).collect();
    let units = match (enabled.is_empty(), arch.as_str()) {
        (true, "x86_64") => "llama.cpp fallback: avx avx2 fma f16c".to_string(),
        (true, _) => "baseline".to_string(),
        (false, _) => enabled.join(" "),
    };
    format!("{arch} {target_cpu} [{units}]")
}

/// With `PARROT_CUDA_SHARED_CUBLAS=DIR` (set by `scripts/build-cuda.sh`), links the shared cuBLAS of DIR into every
/// binary of the package: llama-cpp-sys-2 asks for static cuBLAS, which NVIDIA's PyPI wheels do not ship, so the
/// script satisfies those names with empty archives and the real code comes from here. `--no-as-needed` keeps the
/// libraries even though the linker sees them before the objects that use them; the run path finds them later.
fn cuda_shared_cublas() {
    println!("cargo:rerun-if-env-changed=PARROT_CUDA_SHARED_CUBLAS");
    let Ok(dir) = std::env::var("PARROT_CUDA_SHARED_CUBLAS") else { return };
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() || dir.is_empty() {
        return;
    }
    let args = [
        format!("-L{dir}"),
        "-Wl,--no-as-needed".into(),
        "-lcublas".into(),
        "-lcublasLt".into(),
        "-Wl,--as-needed".into(),
        format!("-Wl,-rpath,$ORIGIN:{dir}"),
    ];
    for arg in args {
        println!("cargo:rustc-link-arg={arg}");
    }
}
