//! The README's two set-up commands stay true: `.ci/run` runs the README's test command verbatim, and the
//! README's main command names files that the set-up script really produces.

use crate::common::root;

fn readme_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let setup = readme.split("## Set-up").nth(1).expect("README has a Set-up section");
    let setup = setup.split("\n## ").next().unwrap();
    setup.split("```sh\n").skip(1).map(|block| block.split("\n```").next().unwrap().trim().to_string()).collect()
}

#[test]
fn ci_runs_the_readme_test_command() {
    let commands = readme_commands();
    assert_eq!(commands.len(), 2, "the set-up is two commands: {commands:?}");
    let ci = std::fs::read_to_string(root().join(".ci/run")).unwrap();
    assert!(commands[1].contains("cargo test"), "{}", commands[1]);
    assert!(ci.lines().any(|l| l.trim() == commands[1]), ".ci/run must run `{}` verbatim", commands[1]);
}

#[test]
fn the_main_command_uses_paths_the_setup_script_prints() {
    let commands = readme_commands();
    let script = std::fs::read_to_string(root().join("scripts/fetch-test-models.sh")).unwrap();
    assert!(commands[0].starts_with("scripts/setup.sh && cargo run -- run "), "{}", commands[0]);
    for word in commands[0].split_whitespace().filter(|w| w.ends_with(".gguf")) {
        let file = word.rsplit('/').next().unwrap();
        assert!(script.contains(file), "{word} is not installed by fetch-test-models.sh");
    }
}
