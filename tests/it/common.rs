//! Helpers shared by the integration tests.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// The `parrot` binary built for these tests.
pub fn parrot() -> Command {
    Command::new(env!("CARGO_BIN_EXE_parrot"))
}

/// Runs `parrot` with `args` and returns its output.
pub fn run(args: &[&str]) -> Output {
    parrot().args(args).output().expect("could not start the parrot binary")
}

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Standard output as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Standard error as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
