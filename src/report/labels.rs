//! Run-set labels: a run set is named by what differs between it and the others (`repeat_penalty=1.0`,
//! `assistant_model=gemma`, `backend=http:koboldcpp`), not by its folder name, because the folder name is whatever
//! the user typed while the configs record what was actually run.
//!
//! Every conversation contributes *facts* (its config flattened to dotted keys, its models and backend); a run set
//! keeps the facts all of its conversations agree on; the facts whose values differ between run sets make the
//! labels. Facts that vary within a run set (seeds, start times) say nothing about the set and are left out.

use std::collections::{BTreeMap, BTreeSet};

/// A conversation's or a run set's facts: dotted key → displayed value.
pub type Facts = BTreeMap<String, String>;

/// Keys that identify one conversation rather than a setting, so they never name a run set.
const PER_CONVERSATION: &[&str] = &["seed", "conversation_index", "started", "parrot_version", "output", "out_dir"];

/// The longest value shown in a label; longer ones (system prompts) are cut with an ellipsis.
const MAX_VALUE_CHARS: usize = 32;
/// The most `key=value` pairs in one label; the rest are counted (`+3 more`) and listed in the page header.
const MAX_LABEL_PAIRS: usize = 4;
/// Value of a key a conversation does not have.
const UNSET: &str = "(unset)";
/// Value of a key whose conversations disagree.
const MIXED: &str = "(mixed)";

/// Flattens a config into `facts` under `prefix`: objects recurse with dotted keys, everything else is one value
/// (strings unquoted, arrays as compact JSON).
pub fn flatten_config(prefix: &str, value: &serde_json::Value, facts: &mut Facts) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten_config(&key, v, facts);
            }
        }
        serde_json::Value::String(s) => {
            facts.insert(prefix.to_string(), s.clone());
        }
        other => {
            facts.insert(prefix.to_string(), other.to_string());
        }
    }
}

/// Whether a key names a per-conversation detail (its last segment is one of [`PER_CONVERSATION`]).
fn is_per_conversation(key: &str) -> bool {
    let last = key.rsplit('.').next().unwrap_or(key);
    PER_CONVERSATION.contains(&last) || last.ends_with("_seed")
}

/// The facts shared by every conversation of a run set: a key whose value differs between them gets the value
/// `(mixed)`; a key missing from some gets `(unset)` for those.
#[must_use]
pub fn common_facts(conversations: &[Facts]) -> Facts {
    let keys: BTreeSet<&String> = conversations.iter().flat_map(BTreeMap::keys).collect();
    let mut out = Facts::new();
    for key in keys {
        if is_per_conversation(key) {
            continue;
        }
        let mut values = conversations.iter().map(|f| f.get(key).map_or(UNSET, String::as_str));
        let first = values.next().unwrap_or(UNSET);
        let value = if values.all(|v| v == first) { first } else { MIXED };
        out.insert(key.clone(), value.to_string());
    }
    out
}

/// Values that say nothing about a setting: a key some sets lack (another format) or whose conversations disagree.
fn is_definite(value: &str) -> bool {
    value != UNSET && value != MIXED
}

/// The keys that at least two run sets give different definite values, most telling first (models, backend,
/// sampler settings, then the rest, each in key order).
#[must_use]
pub fn varied_keys(sets: &[Facts]) -> Vec<String> {
    let keys: BTreeSet<&String> = sets.iter().flat_map(BTreeMap::keys).collect();
    let mut out: Vec<String> = keys
        .into_iter()
        .filter(|key| {
            let values: BTreeSet<&str> =
                sets.iter().filter_map(|f| f.get(*key)).map(String::as_str).filter(|v| is_definite(v)).collect();
            values.len() > 1
        })
        .cloned()
        .collect();
    out.sort_by_key(|k| (rank(k), k.clone()));
    out
}

/// Sort rank of a key in labels: what a reader compares first.
fn rank(key: &str) -> u8 {
    if key.ends_with("_model") {
        0
    } else if key.ends_with("backend") {
        1
    } else if key.starts_with("sampler.") {
        2
    } else if key.starts_with("user_sampler.") {
        3
    } else {
        4
    }
}

/// The name a key is shown under: its last segment when that is unambiguous among `keys`, else the full path.
fn short_key<'a>(key: &'a str, keys: &[String]) -> &'a str {
    let last = key.rsplit('.').next().unwrap_or(key);
    let clashes = keys.iter().filter(|k| k.rsplit('.').next() == Some(last)).count();
    if clashes > 1 {
        key
    } else {
        last
    }
}

/// Shortens a value for display: one line, at most [`MAX_VALUE_CHARS`] characters.
#[must_use]
pub fn short_value(value: &str) -> String {
    let one_line = value.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > MAX_VALUE_CHARS {
        let cut: String = one_line.chars().take(MAX_VALUE_CHARS - 1).collect();
        format!("{cut}…")
    } else {
        one_line
    }
}

/// One varied key with its value in every run set, for the page's "what differs" line.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Variation {
    /// The key as shown.
    pub key: String,
    /// Its (shortened) value in each run set, in run-set order.
    pub values: Vec<String>,
}

/// Labels for every run set (same order as `sets`), and the variations they come from.
///
/// `names` are the fallbacks (folder names): used when nothing differs, and appended when two sets would
/// otherwise get the same label.
#[must_use]
pub fn labels(sets: &[Facts], names: &[String]) -> (Vec<String>, Vec<Variation>) {
    let keys = varied_keys(sets);
    let variations: Vec<Variation> = keys
        .iter()
        .map(|k| Variation {
            key: short_key(k, &keys).to_string(),
            values: sets.iter().map(|f| short_value(f.get(k).map_or(UNSET, String::as_str))).collect(),
        })
        .collect();
    let mut labels: Vec<String> = (0..sets.len())
        .map(|i| {
            let pairs: Vec<String> = variations
                .iter()
                .filter(|v| is_definite(&v.values[i]))
                .map(|v| format!("{}={}", v.key, v.values[i]))
                .collect();
            let mut label = pairs.iter().take(MAX_LABEL_PAIRS).cloned().collect::<Vec<_>>().join(", ");
            if pairs.len() > MAX_LABEL_PAIRS {
                label.push_str(&format!(" +{} more", pairs.len() - MAX_LABEL_PAIRS));
            }
            label
        })
        .collect();
    for (i, label) in labels.iter_mut().enumerate() {
        if label.is_empty() {
            label.clone_from(&names[i]);
        }
    }
    let snapshot = labels.clone();
    for (i, label) in labels.iter_mut().enumerate() {
        if snapshot.iter().filter(|l| **l == snapshot[i]).count() > 1 && *label != names[i] {
            label.push_str(&format!(" ({})", names[i]));
        }
    }
    (labels, variations)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(pairs: &[(&str, &str)]) -> Facts {
        pairs.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect()
    }

    #[test]
    fn flattens_nested_config() {
        let mut f = Facts::new();
        let cfg = serde_json::json!({"sampler": {"repeat_penalty": 1.1, "stop": ["\n"]}, "agent_prefix": "Skye:"});
        flatten_config("", &cfg, &mut f);
        assert_eq!(f["sampler.repeat_penalty"], "1.1");
        assert_eq!(f["sampler.stop"], "[\"\\n\"]");
        assert_eq!(f["agent_prefix"], "Skye:");
    }

    #[test]
    fn seeds_and_mixed_values_do_not_name_a_set() {
        let common = common_facts(&[
            facts(&[("seed", "1"), ("sampler.temperature", "0.7"), ("note", "a")]),
            facts(&[("seed", "2"), ("sampler.temperature", "0.7"), ("note", "b")]),
        ]);
        assert!(!common.contains_key("seed"));
        assert_eq!(common["sampler.temperature"], "0.7");
        assert_eq!(common["note"], "(mixed)");
    }

    #[test]
    fn labels_name_only_what_differs() {
        let a = facts(&[("sampler.repeat_penalty", "1.1"), ("sampler.temperature", "0.7"), ("backend", "llama")]);
        let b = facts(&[("sampler.repeat_penalty", "1.0"), ("sampler.temperature", "0.7"), ("backend", "llama")]);
        let (labels, vars) = labels(&[a, b], &["runs/a".into(), "runs/b".into()]);
        assert_eq!(labels, vec!["repeat_penalty=1.1", "repeat_penalty=1.0"]);
        assert_eq!(vars, vec![Variation { key: "repeat_penalty".into(), values: vec!["1.1".into(), "1.0".into()] }]);
    }

    #[test]
    fn ambiguous_last_segments_keep_the_full_path() {
        let a = facts(&[("sampler.top_k", "40"), ("user_sampler.top_k", "40")]);
        let b = facts(&[("sampler.top_k", "20"), ("user_sampler.top_k", "10")]);
        let (labels, _) = labels(&[a, b], &["a".into(), "b".into()]);
        assert_eq!(labels[1], "sampler.top_k=20, user_sampler.top_k=10");
    }

    #[test]
    fn identical_sets_fall_back_to_folder_names() {
        let a = facts(&[("x", "1")]);
        let (labels, vars) = labels(&[a.clone(), a], &["one".into(), "two".into()]);
        assert_eq!(labels, vec!["one", "two"]);
        assert!(vars.is_empty());
    }

    #[test]
    fn unset_and_mixed_values_do_not_make_a_difference() {
        let parrot = facts(&[("sampler.repeat_penalty", "1.1"), ("backend", "llama"), ("note", "(mixed)")]);
        let legacy = facts(&[("sampler.repeat_penalty", "1.0"), ("api_url", "http://x"), ("note", "a")]);
        let (labels, vars) = labels(&[parrot, legacy], &["p".into(), "l".into()]);
        assert_eq!(labels, vec!["repeat_penalty=1.1", "repeat_penalty=1.0"]);
        assert_eq!(vars.len(), 1);
    }

    #[test]
    fn labels_are_capped_and_models_come_first() {
        let a = facts(&[("assistant_model", "a"), ("k1", "1"), ("k2", "1"), ("k3", "1"), ("k4", "1"), ("k5", "1")]);
        let b = facts(&[("assistant_model", "b"), ("k1", "2"), ("k2", "2"), ("k3", "2"), ("k4", "2"), ("k5", "2")]);
        let (labels, vars) = labels(&[a, b], &["a".into(), "b".into()]);
        assert_eq!(labels[0], "assistant_model=a, k1=1, k2=1, k3=1 +2 more");
        assert_eq!(vars.len(), 6);
    }

    #[test]
    fn long_values_are_cut() {
        assert_eq!(short_value(&"x".repeat(100)).chars().count(), MAX_VALUE_CHARS);
        assert_eq!(short_value("a\n b"), "a b");
    }
}
