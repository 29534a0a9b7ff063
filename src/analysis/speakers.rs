//! Speaker-name prefixes inferred where the format records none.
//!
//! Chat JSON/JSONL and ShareGPT carry no `agent_prefix`/`user_prefix`, yet role-play transcripts (the original's
//! own among them) start each turn with the character's name (`Skye: …`). Without the prefix a turn that is only
//! `Skye:` is not empty and `Skye:` followed by spaces has no leading whitespace. So when a `Name:` opens most of a
//! speaker's generated turns, it is taken as that speaker's prefix and every detector uses it exactly as a
//! configured one. Pure: no I/O.

use std::collections::HashMap;

use super::{Conversation, Speaker};

/// The longest name (in characters, before the colon) taken as a speaker prefix.
pub const MAX_NAME_CHARS: usize = 32;
/// The most words a name may have.
pub const MAX_NAME_WORDS: usize = 4;
/// The fewest turns a name must open before it is inferred.
pub const MIN_TURNS: usize = 2;

/// The `Name:` a text opens with, if it looks like a speaker name: at most [`MAX_NAME_CHARS`] characters and
/// [`MAX_NAME_WORDS`] words before the colon, starting with a letter, without line breaks or sentence punctuation.
fn name_prefix(text: &str) -> Option<&str> {
    let colon = text.char_indices().take(MAX_NAME_CHARS + 1).find(|&(_, c)| c == ':')?.0;
    let name = &text[..colon];
    let ok = name.chars().next().is_some_and(char::is_alphabetic)
        && !name.ends_with(char::is_whitespace)
        && name.split_whitespace().count() <= MAX_NAME_WORDS
        && name.chars().all(|c| c.is_alphanumeric() || c == ' ' || c == '-' || c == '_' || c == '.' || c == '\'');
    ok.then(|| &text[..=colon])
}

/// The prefix inferred for `speaker`: the `Name:` that opens more than half of its generated turns (and at least
/// [`MIN_TURNS`]).
#[must_use]
pub fn infer_prefix(conv: &Conversation, speaker: Speaker) -> Option<String> {
    let turns: Vec<&str> =
        conv.messages.iter().filter(|m| m.speaker == speaker && !m.opening).map(|m| m.text.as_str()).collect();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for t in &turns {
        if let Some(p) = name_prefix(t) {
            *counts.entry(p).or_default() += 1;
        }
    }
    let (best, n) = counts.into_iter().max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(a.0)))?;
    (n >= MIN_TURNS && 2 * n > turns.len()).then(|| best.to_string())
}

/// The prefixes inferred for the speakers that have none: (assistant, user), `None` where the conversation has its
/// own or none could be inferred.
#[must_use]
pub fn inferred_prefixes(conv: &Conversation) -> (Option<String>, Option<String>) {
    let agent = conv.agent_prefix.is_none().then(|| infer_prefix(conv, Speaker::Assistant)).flatten();
    let user = conv.user_prefix.is_none().then(|| infer_prefix(conv, Speaker::User)).flatten();
    (agent, user)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::{analyze, formats};

    fn chat(turns: &[(&str, &str)]) -> Conversation {
        let lines: Vec<String> =
            turns.iter().map(|(role, text)| serde_json::json!({"role": role, "content": text}).to_string()).collect();
        formats::parse_reader(lines.join("\n").as_bytes(), "t.jsonl", None).unwrap()
    }

    #[test]
    fn a_name_opening_most_turns_is_inferred_and_a_colon_in_prose_is_not() {
        let c = chat(&[
            ("assistant", "Skye: Hello."),
            ("user", "Mark: Hi there."),
            ("assistant", "Skye: How are you?"),
            ("user", "Well, here is the thing: I am fine."),
            ("assistant", "Skye: Good."),
            ("user", "Ok."),
        ]);
        assert_eq!(infer_prefix(&c, Speaker::Assistant).as_deref(), Some("Skye:"));
        assert_eq!(infer_prefix(&c, Speaker::User), None);
    }

    #[test]
    fn a_name_only_turn_is_nothing_to_say_with_an_inferred_name() {
        let c = chat(&[
            ("assistant", "Skye: Hello, nice to see you."),
            ("user", "Mark: Hi."),
            ("assistant", "Skye: The park is lovely."),
            ("user", "Mark: Yes."),
            ("assistant", "Skye:"),
            ("user", "Mark: Hm?"),
            ("assistant", "Skye:"),
            ("user", "Mark: Hello?"),
            ("assistant", "Skye: "),
        ]);
        let a = analyze(&c);
        let d = &a.detectors["nothing_to_say"].assistant;
        assert!(d.detected, "{d:?}");
        assert_eq!(d.onset, Some(2));
    }

    #[test]
    fn spaces_after_an_inferred_name_are_leading_whitespace() {
        let c = chat(&[
            ("assistant", "Skye: Hello."),
            ("user", "Mark: Hi."),
            ("assistant", "Skye: Nice."),
            ("user", "Mark: Yes."),
            ("assistant", "Skye:    Well."),
            ("user", "Mark: Go on."),
            ("assistant", "Skye:\n\n\n   So."),
            ("user", "Mark: And?"),
            ("assistant", "Skye:        Um."),
        ]);
        let a = analyze(&c);
        let d = &a.detectors["leading_whitespace"].assistant;
        assert!(d.detected, "{d:?}");
        assert_eq!(d.onset, Some(2));
    }
}
