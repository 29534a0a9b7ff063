//! The README's two set-up commands stay true: `.ci/run` runs the README's test command verbatim, and the
//! README's main command names models that the registry knows.

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
fn the_main_command_names_models_of_the_registry() {
    let commands = readme_commands();
    assert!(commands[0].starts_with("scripts/setup.sh && cargo run -- run "), "{}", commands[0]);
    let registry = parrot::models::load_registry(None).unwrap();
    let words: Vec<&str> = commands[0].split_whitespace().collect();
    for flag in ["--assistant-model", "--user-model"] {
        let i = words.iter().position(|w| *w == flag).unwrap_or_else(|| panic!("{flag} missing"));
        let name = words[i + 1];
        assert!(registry.get(name).is_some(), "{name} is not in models.toml");
    }
}
