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
    println!("cargo:rustc-env=PARROT_LONG_VERSION={version} (commit {commit}{dirty}; features: {features})");
    println!("cargo:rustc-env=PARROT_GIT_COMMIT={commit}{dirty}");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/index");
    println!("cargo:rerun-if-changed=build.rs");
    cuda_shared_cublas();
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
