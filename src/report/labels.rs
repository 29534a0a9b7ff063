//! Run-set labels: the shortest description that tells the run sets apart. A label starts with the set's folder
//! (or sweep cell) name, the name its author chose and sees on disk, and goes on with the settings that differ
//! between the sets (`repeat_penalty=1.0`, `assistant_model=gemma`, `backend=http:koboldcpp`), because the configs
//! record what was actually run. A setting the name already spells (a sweep cell `sampler.top_k=40`) is not
//! repeated.
//!
//! One model under two names is one model: a parrot transcript records the GGUF's `general.name` ("Gemma 3
//! 270m") where the original tool's log records the file ("gemma-3-270m-q4_k_m.gguf"). [`same_model`] compares
//! such names normalised (see there), so the labels do not claim that the models differ.
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
const MAX_LABEL_PAIRS: usize = 3;
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

/// Whether a model description is a file name (the original tool's logs, or a GGUF without `general.name`)
/// rather than a model's own name.
fn is_file_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    [".gguf", ".ggml", ".bin", ".safetensors"].iter().any(|ext| lower.ends_with(ext))
}

/// A model name in lower-case words: split at anything but letters and digits (a `.` between digits stays:
/// `3.1`), the file extension dropped, and from a quantization word on (`q4`, `iq3`, `f16`, `bf16`, …) nothing
/// kept: the quantization names a file, not a model.
fn model_words(name: &str) -> Vec<String> {
    let lower = name.trim().to_lowercase();
    let stem = if is_file_name(&lower) { lower.rsplit_once('.').map_or(lower.as_str(), |(s, _)| s) } else { &lower };
    let chars: Vec<char> = stem.chars().collect();
    let mut words = Vec::new();
    let mut word = String::new();
    for (i, &c) in chars.iter().enumerate() {
        let digit_dot =
            c == '.' && i > 0 && chars[i - 1].is_ascii_digit() && chars.get(i + 1).is_some_and(char::is_ascii_digit);
        if c.is_alphanumeric() || digit_dot {
            word.push(c);
        } else if !word.is_empty() {
            words.push(std::mem::take(&mut word));
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    let is_quant = |w: &str| {
        let digits_after = |p: &str| w.strip_prefix(p).is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()));
        digits_after("q") || digits_after("iq") || ["f16", "f32", "bf16", "fp16", "fp32", "fp8"].contains(&w)
    };
    let end = words.iter().position(|w| is_quant(w)).unwrap_or(words.len());
    words.truncate(end);
    words
}

/// The words of a model name up to its parameter count (`270m`, `135m`, `7b`, `1.5b`): family, version and
/// size, what a `general.name` and a file name of the same model share. `None` without a parameter count.
fn model_identity(words: &[String]) -> Option<&[String]> {
    let is_size = |w: &str| {
        w.len() > 1
            && w.ends_with(['m', 'b'])
            && w[..w.len() - 1].chars().all(|c| c.is_ascii_digit() || c == '.')
            && w.starts_with(|c: char| c.is_ascii_digit())
    };
    words.iter().position(|w| is_size(w)).map(|i| &words[..=i])
}

/// Whether two model descriptions name one model: the same text; or the same words (case, separators and
/// quantization ignored) when one is a model's name and the other a file name; or, for such a pair, the same
/// family, version and parameter count ("Smollm2 135M 8k Lc100K" and "SmolLM2-135M-Instruct.Q4_1.gguf"). Two
/// file names (or two names) must match exactly: `q4_k_m` and `q8_0` files are different models to compare.
#[must_use]
pub fn same_model(a: &str, b: &str) -> bool {
    if a.trim().eq_ignore_ascii_case(b.trim()) {
        return true;
    }
    if is_file_name(a) == is_file_name(b) {
        return false;
    }
    let (wa, wb) = (model_words(a), model_words(b));
    if !wa.is_empty() && wa == wb {
        return true;
    }
    matches!((model_identity(&wa), model_identity(&wb)), (Some(x), Some(y)) if x == y)
}

/// Whether the definite `values` of `key` differ between run sets (models compared with [`same_model`]).
fn values_differ(key: &str, values: &BTreeSet<&str>) -> bool {
    if key.ends_with("_model") {
        let v: Vec<&str> = values.iter().copied().collect();
        v.iter().enumerate().any(|(i, a)| v[i + 1..].iter().any(|b| !same_model(a, b)))
    } else {
        values.len() > 1
    }
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
            values_differ(key, &values)
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

/// The fewest of the varied `keys` that tell the run sets apart as far as their settings can: greedily, the key
/// that splits the sets into the most groups (the most telling first on a tie), until no key splits further. The
/// page's "what differs" line still lists every varied key.
fn separating_keys<'a>(sets: &[Facts], keys: &'a [String]) -> Vec<&'a String> {
    // A set's value of a key, with one spelling per model (see `same_model`).
    let value = |set: usize, key: &str| -> String {
        let v = sets[set].get(key).map_or(UNSET, String::as_str);
        if key.ends_with("_model") {
            (0..set)
                .filter_map(|j| sets[j].get(key))
                .find(|w| same_model(w, v))
                .map_or_else(|| v.to_string(), Clone::clone)
        } else {
            v.to_string()
        }
    };
    let groups = |chosen: &[&String]| -> usize {
        let tuples: BTreeSet<Vec<String>> =
            (0..sets.len()).map(|i| chosen.iter().map(|k| value(i, k)).collect()).collect();
        tuples.len()
    };
    let mut chosen: Vec<&String> = Vec::new();
    let mut current = 1;
    while current < sets.len() {
        let best = keys
            .iter()
            .filter(|k| !chosen.contains(k))
            .map(|k| {
                let mut with = chosen.clone();
                with.push(k);
                (groups(&with), k)
            })
            .fold(None::<(usize, &String)>, |best, (g, k)| match best {
                Some((bg, _)) if bg >= g => best,
                _ => Some((g, k)),
            });
        match best {
            Some((g, k)) if g > current => {
                chosen.push(k);
                current = g;
            }
            _ => break,
        }
    }
    chosen
}

/// Whether the name `name` already says `key=value` (a sweep cell's folder is named by its overrides).
fn name_says(name: &str, key: &str, short: &str, value: &str) -> bool {
    name.split(',').any(|part| part == format!("{key}={value}") || part == format!("{short}={value}"))
}

/// Labels for every run set (same order as `sets`), and the variations they come from.
///
/// `names` are the run sets' folder (or sweep cell) names, told apart already (see `report::run_set_labels`):
/// each label is its name, then ` · ` and up to [`MAX_LABEL_PAIRS`] settings that differ between the sets and
/// that the name does not already spell.
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
    let chosen = separating_keys(sets, &keys);
    let labels: Vec<String> = (0..sets.len())
        .map(|i| {
            let name = &names[i];
            let pairs: Vec<String> = keys
                .iter()
                .zip(&variations)
                .filter(|(k, _)| chosen.contains(k))
                .filter(|(_, v)| is_definite(&v.values[i]))
                .filter(|(k, v)| {
                    let raw = sets[i].get(*k).map_or("", String::as_str);
                    !name_says(name, k, &v.key, raw)
                })
                .map(|(_, v)| format!("{}={}", v.key, v.values[i]))
                .collect();
            if pairs.is_empty() {
                return name.clone();
            }
            let mut label =
                format!("{name} · {}", pairs.iter().take(MAX_LABEL_PAIRS).cloned().collect::<Vec<_>>().join(", "));
            if pairs.len() > MAX_LABEL_PAIRS {
                label.push_str(&format!(" +{} more", pairs.len() - MAX_LABEL_PAIRS));
            }
            label
        })
        .collect();
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
        let (labels, vars) = labels(&[a, b], &["a".into(), "b".into()]);
        assert_eq!(labels, vec!["a · repeat_penalty=1.1", "b · repeat_penalty=1.0"]);
        assert_eq!(vars, vec![Variation { key: "repeat_penalty".into(), values: vec!["1.1".into(), "1.0".into()] }]);
    }

    #[test]
    fn ambiguous_last_segments_keep_the_full_path() {
        let a = facts(&[("sampler.top_k", "40"), ("user_sampler.top_k", "40")]);
        let b = facts(&[("sampler.top_k", "20"), ("user_sampler.top_k", "10")]);
        let (labels, _) = labels(&[a, b], &["a".into(), "b".into()]);
        // One of the two keys tells the sets apart; the more telling one (the assistant's sampler) is shown.
        assert_eq!(labels[1], "b · sampler.top_k=20");
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
        assert_eq!(labels, vec!["p · repeat_penalty=1.1", "l · repeat_penalty=1.0"]);
        assert_eq!(vars.len(), 1);
    }

    #[test]
    fn labels_keep_the_fewest_keys_that_tell_the_sets_apart() {
        let a = facts(&[("assistant_model", "a"), ("k1", "1"), ("k2", "1"), ("k3", "1")]);
        let b = facts(&[("assistant_model", "a"), ("k1", "2"), ("k2", "2"), ("k3", "1")]);
        let c = facts(&[("assistant_model", "b"), ("k1", "2"), ("k2", "2"), ("k3", "1")]);
        let (labels, vars) = labels(&[a, b, c], &["a".into(), "b".into(), "c".into()]);
        // k2 says nothing k1 does not; the model comes first.
        assert_eq!(
            labels,
            ["a · assistant_model=a, k1=1", "b · assistant_model=a, k1=2", "c · assistant_model=b, k1=2"]
        );
        assert_eq!(vars.len(), 3, "the page's line still lists every difference");
        // Five sets that each differ from the first in one key need four keys: the label is capped.
        let sets: Vec<Facts> = (0..5)
            .map(|i| {
                facts(&[
                    ("k1", if i == 1 { "1" } else { "0" }),
                    ("k2", if i == 2 { "1" } else { "0" }),
                    ("k3", if i == 3 { "1" } else { "0" }),
                    ("k4", if i == 4 { "1" } else { "0" }),
                ])
            })
            .collect();
        let names: Vec<String> = (0..5).map(|i| format!("s{i}")).collect();
        assert_eq!(super::labels(&sets, &names).0[0], "s0 · k1=0, k2=0, k3=0 +1 more");
    }

    #[test]
    fn one_model_under_two_names_gives_one_label() {
        // A parrot transcript records `general.name`, the original tool's log the file: the same two models.
        let parrot = facts(&[
            ("assistant_model", "Gemma 3 270m"),
            ("user_model", "Smollm2 135M 8k Lc100K Mix1 Ep2"),
            ("sampler.repeat_penalty", "1.1"),
        ]);
        let legacy = facts(&[
            ("assistant_model", "gemma-3-270m-q4_k_m.gguf"),
            ("user_model", "SmolLM2-135M-Instruct.Q4_1.gguf"),
            ("sampler.repeat_penalty", "1.1"),
        ]);
        let (labels, vars) = labels(&[parrot, legacy], &["parrot-run".into(), "original-run".into()]);
        assert_eq!(labels, vec!["parrot-run", "original-run"]);
        assert!(vars.is_empty(), "{vars:?}");
    }

    #[test]
    fn model_names_compare_normalised_but_files_and_sizes_stay_apart() {
        assert!(same_model("Gemma 3 270m", "models/gemma-3-270m-q4_k_m.gguf".rsplit('/').next().unwrap()));
        assert!(same_model("Llama 3.1 8B Instruct", "llama-3.1-8b-instruct-Q8_0.gguf"));
        assert!(same_model("x.gguf", "X.GGUF"));
        // Two files of one model in two quantizations are two things to compare; so are two sizes.
        assert!(!same_model("gemma-3-270m-q4_k_m.gguf", "gemma-3-270m-q8_0.gguf"));
        assert!(!same_model("Gemma 3 270m", "gemma-3-1b-q4_k_m.gguf"));
        assert!(!same_model("Qwen2.5 0.5B", "Qwen2.5 1.5B"));
        assert!(!same_model("Gemma 3 270m", "smollm2-135m.gguf"));
        // Different models still name the sets.
        let a = facts(&[("assistant_model", "Gemma 3 270m")]);
        let b = facts(&[("assistant_model", "smollm2-135m.gguf")]);
        let (labels, _) = labels(&[a, b], &["a".into(), "b".into()]);
        assert_eq!(labels, vec!["a · assistant_model=Gemma 3 270m", "b · assistant_model=smollm2-135m.gguf"]);
    }

    #[test]
    fn a_sweep_cell_name_is_not_repeated_by_its_settings() {
        let a = facts(&[("sampler.repeat_penalty", "1.1"), ("sampler.top_k", "40")]);
        let b = facts(&[("sampler.repeat_penalty", "1.0"), ("sampler.top_k", "40")]);
        let names = ["sampler.repeat_penalty=1.1".to_string(), "sampler.repeat_penalty=1.0".to_string()];
        let (labels, vars) = labels(&[a, b], &names);
        assert_eq!(labels, names.to_vec());
        assert_eq!(vars.len(), 1);
    }

    #[test]
    fn long_values_are_cut() {
        assert_eq!(short_value(&"x".repeat(100)).chars().count(), MAX_VALUE_CHARS);
        assert_eq!(short_value("a\n b"), "a b");
    }
}
