//! Tests of the page as a whole, on analyses built by hand (the analysis itself is tested in `analysis`).

use std::collections::BTreeMap;

use super::*;
use crate::analysis::{Detection, Format, LegacyScore, Message, Origin, PerSpeaker};

fn message(speaker: Speaker, text: &str) -> Message {
    Message {
        speaker,
        text: text.into(),
        prefix: None,
        opening: false,
        tokens: Some(10),
        max_tokens: None,
        stop_reason: None,
        tokens_so_far: None,
    }
}

fn origin() -> Origin {
    Origin {
        backend: Some("llama".into()),
        user_backend: Some("llama".into()),
        assistant_model: Some("/models/a.gguf".into()),
        user_model: Some("/m/u.gguf".into()),
    }
}

/// A conversation with `texts` alternating assistant/user, and its analysis with the given numbers.
fn item(source: &str, penalty: f64, texts: &[&str], density: f64, onset: Option<usize>) -> Item {
    let messages: Vec<Message> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| message(if i % 2 == 0 { Speaker::Assistant } else { Speaker::User }, t))
        .collect();
    let conversation = Conversation {
        source: source.into(),
        format: Format::Parrot,
        config: Some(serde_json::json!({"sampler": {"repeat_penalty": penalty, "temperature": 0.7}, "seed": 7})),
        origin: origin(),
        agent_prefix: None,
        user_prefix: None,
        messages: messages.clone(),
        tokens_per_s: Some(50.0),
        complete: true,
        warnings: Vec::new(),
    };
    let lengths: Vec<usize> = texts.iter().step_by(2).map(|t| t.chars().count()).collect();
    let mut detectors = BTreeMap::new();
    let detection = Detection {
        detected: onset.is_some(),
        severity: if onset.is_some() { 0.5 } else { 0.0 },
        onset,
        onset_message: onset.map(|k| 2 * k),
        onset_tokens: onset.map(|k| 20 * k as u64),
        evidence: vec![],
    };
    detectors.insert("single_turn_loop".to_string(), PerSpeaker { assistant: detection, user: Detection::default() });
    detectors.insert("word_soup".to_string(), PerSpeaker::default());
    let analysis = ConversationAnalysis {
        source: source.into(),
        format: Format::Parrot,
        messages: texts.len(),
        assistant_turns: lengths.len(),
        user_turns: texts.len() - lengths.len(),
        total_tokens: Some(10 * texts.len() as u64),
        tokens_per_s: Some(50.0),
        complete: true,
        origin: origin(),
        legacy: LegacyScore {
            character_count: lengths.iter().sum(),
            loop_score: 0,
            loop_density: density,
            avg_response_length: lengths.iter().sum::<usize>() as f64 / lengths.len().max(1) as f64,
            responses: lengths.len(),
            response_lengths: lengths,
            top_ngrams: vec![],
            complete: true,
        },
        detectors,
        metrics: PerSpeaker::default(),
        first_onset: onset,
        message_lengths: texts.iter().map(|t| t.chars().count()).collect(),
        message_speakers: messages.iter().map(|m| m.speaker).collect(),
        warnings: Vec::new(),
        embedding: None,
        judge: None,
    };
    Item { analysis, conversation: Some(conversation) }
}

fn two_sets() -> Vec<RunSet> {
    let a = RunSet {
        dir: "runs/pen11".into(),
        items: vec![
            item("runs/pen11/0.jsonl", 1.1, &["Hello there friend", "Hi", "How are you today", "Fine"], 0.1, None),
            item("runs/pen11/1.jsonl", 1.1, &["a b c d e f g", "x", "a b c d e f g", "x"], 0.5, Some(1)),
        ],
        problems: vec![],
    };
    let b = RunSet {
        dir: "runs/pen10".into(),
        items: vec![item("runs/pen10/0.jsonl", 1.0, &["loop loop", "loop", "loop loop", "loop"], 0.8, Some(0))],
        problems: vec![Problem { path: "runs/pen10/bad.jsonl".into(), error: "line 1 is not a parrot header".into() }],
    };
    vec![a, b]
}

#[test]
fn summary_values_come_from_the_analyses() {
    let sets = two_sets();
    let phen = phenomena(&sets);
    assert_eq!(phen, vec!["single_turn_loop", "word_soup"]);
    let s = summarize(&sets[0], &phen);
    assert_eq!(s.samples, 2);
    let expected_len = (sets[0].items[0].analysis.legacy.avg_response_length
        + sets[0].items[1].analysis.legacy.avg_response_length)
        / 2.0;
    assert_eq!(s.avg_response_length, Some(expected_len));
    assert_eq!(s.avg_loop_density, Some(0.3));
    assert_eq!(s.rates, vec![Some(0.5), Some(0.0)]);
    assert_eq!(s.tokens_per_s, Some(50.0));
    // The one conversation that broke did so at onset 1 (one clean assistant turn): the median is that onset.
    assert_eq!(s.median_onset_turns, Some(1.0));
    let empty = summarize(&RunSet { dir: "e".into(), items: vec![], problems: vec![] }, &phen);
    assert_eq!((empty.samples, empty.avg_loop_density, empty.median_onset_turns), (0, None, None));
}

#[test]
fn models_and_engines_are_facts_even_without_the_text() {
    let mut it = item("runs/x/0.jsonl", 1.1, &["a", "b"], 0.0, None);
    it.conversation = None;
    let facts = conversation_facts(&it);
    assert_eq!(facts.get("assistant_model").map(String::as_str), Some("a.gguf"));
    assert_eq!(facts.get("user_model").map(String::as_str), Some("u.gguf"));
    assert_eq!(facts.get("backend").map(String::as_str), Some("llama"));
    assert_eq!(facts.get("user_backend").map(String::as_str), Some("llama"));
    assert!(!facts.contains_key("seed"), "the config needs the text");
}

#[test]
fn labels_come_from_the_config_difference() {
    let (labels, vars) = run_set_labels(&two_sets());
    assert_eq!(labels, vec!["pen11 · repeat_penalty=1.1", "pen10 · repeat_penalty=1.0"]);
    assert_eq!(vars.len(), 1);
}

#[test]
fn folder_names_are_the_shortest_path_ends_that_differ() {
    assert_eq!(folder_names(&["runs/a", "runs/b/"]), ["a", "b"]);
    assert_eq!(folder_names(&["x/a/out", "y/b/out", "z/c"]), ["a/out", "b/out", "c"]);
    assert_eq!(folder_names(&["./out", "out2"]), ["out", "out2"]);
}

#[test]
fn page_has_every_part() {
    let sets = two_sets();
    let html = render(&sets, &Options::default()).unwrap().index;
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert_eq!(html.matches("<circle class=\"pt\"").count(), 3, "one scatter point per conversation");
    for id in
        ["fig-scatter", "fig-onset-turns", "fig-onset-tokens", "summary-table", "files-table", "c-0", "c-1", "c-2"]
    {
        assert!(html.contains(&format!("id=\"{id}\"")), "missing {id}");
    }
    assert_eq!(html.matches("class=\"chart hist\"").count(), 4);
    assert_eq!(html.matches("class=\"chart heatmap\"").count(), 3);
    assert_eq!(html.matches("class=\"chart timeline\"").count(), 3);
    assert!(html.contains("repeat_penalty=1.1") && html.contains("1.1 → 1.0"));
    assert!(html.contains("runs&#x2f;pen10&#x2f;bad.jsonl: line 1 is not a parrot header"));
    assert!(!html.contains("src=\"http") && !html.contains("href=\"http"), "no network resources");
    // The repeated assistant message is highlighted.
    assert!(html.contains("<mark class=\"rep\" title=\"first seen in message #0\">a b c d e f g</mark>"));
}

#[test]
fn model_text_is_escaped_everywhere() {
    let evil = "<script>alert(1)</script> </textarea> \"onload=alert(2) &amp; &lt;b&gt; 'x'";
    let mut sets = two_sets();
    sets[0].items[0] = item("runs/<img src=x onerror=alert(3)>.jsonl", 1.1, &[evil, evil, evil, "ok"], 0.2, Some(1));
    sets[0].items[0].analysis.detectors.get_mut("single_turn_loop").unwrap().assistant.evidence =
        vec![crate::analysis::Evidence { turns: vec![0], text: evil.into() }];
    let html = render(&sets, &Options::default()).unwrap().index;
    assert!(!html.contains("<script>alert"));
    assert!(!html.contains("</textarea>"));
    assert!(!html.contains("\"onload="));
    assert!(!html.contains("<img src=x"));
    assert!(!html.contains("&amp; &lt;b&gt;"), "entities must be escaped, not passed through");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;"));
    assert!(html.contains("&amp;amp; &amp;lt;b&amp;gt;"));
    // Only our own sorting script is a script.
    assert_eq!(html.matches("<script").count(), 1);
}

#[test]
fn large_reports_give_each_conversation_a_page_and_keep_it_escaped() {
    let evil = "<script>alert(1)</script> </textarea> \"onload=alert(2) &amp;";
    let mut sets = two_sets();
    sets[1].items[0] = item("runs/pen10/<b>.jsonl", 1.0, &[evil, "fine", evil], 0.1, Some(2));
    let out = render(&sets, &Options { inline_max: 2, ..Options::default() }).unwrap();
    // Three conversations > 2: the index keeps the table and the charts, each conversation moves to its page.
    assert_eq!(out.pages.len(), 3);
    let names: Vec<&str> = out.pages.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["conversations/c-0.html", "conversations/c-1.html", "conversations/c-2.html"]);
    assert_eq!(out.index.matches("<section class=\"conv\"").count(), 0);
    assert_eq!(out.index.matches("<circle class=\"pt\"").count(), 3);
    for name in &names {
        assert!(out.index.contains(&format!("<a href=\"{name}\"")), "the table and the scatter link {name}");
    }
    for (_, page) in &out.pages {
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert_eq!(page.matches("<section class=\"conv\"").count(), 1);
        assert!(page.contains("class=\"chart timeline\"") && page.contains("href=\"../index.html#files\""));
        assert!(!page.contains("<script") && !page.contains("</textarea>") && !page.contains("\"onload="));
    }
    assert!(out.pages[2].1.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;"));
    assert!(out.index.contains("&lt;b&gt;.jsonl") && !out.index.contains("<b>.jsonl"));
    // At the limit everything stays inline.
    let inline = render(&sets, &Options { inline_max: 3, ..Options::default() }).unwrap();
    assert!(inline.pages.is_empty());
    assert_eq!(inline.index.matches("<section class=\"conv\"").count(), 3);
}

#[test]
fn empty_input_still_renders_and_says_so() {
    let html = render(&[], &Options::default()).unwrap().index;
    assert!(html.contains("No run folders were given."));
    let empty = vec![RunSet { dir: "runs/empty".into(), items: vec![], problems: vec![] }];
    let html = render(&empty, &Options::default()).unwrap().index;
    assert!(html.contains("None of the run folders holds a conversation"));
    assert!(html.contains("runs&#x2f;empty: no conversations could be read from this run set"));
    assert_eq!(problems(&empty).len(), 1);
}

#[test]
fn twenty_run_sets_get_twenty_distinct_legend_entries() {
    let sets: Vec<RunSet> = (0..20)
        .map(|i| RunSet {
            dir: format!("runs/{i}"),
            items: vec![item(&format!("runs/{i}/0.jsonl"), 1.0 + f64::from(i) / 100.0, &["a", "b"], 0.0, None)],
            problems: vec![],
        })
        .collect();
    let html = render(&sets, &Options::default()).unwrap().index;
    let legend = &html[html.find("id=\"legend\"").unwrap()..html.find("id=\"summary-table\"").unwrap()];
    assert_eq!(legend.matches("<li").count(), 20);
    let swatches: BTreeSet<&str> =
        legend.split("<svg class=\"swatch\"").skip(1).map(|s| &s[..s.find("</svg>").unwrap()]).collect();
    assert_eq!(swatches.len(), 20);
    assert!(html.contains("repeat_penalty=1.19"));
}

#[test]
fn rates_carry_intervals_and_the_baseline_comparison_is_said_in_words() {
    let html = render(&two_sets(), &Options::default()).unwrap().index;
    // 1 of 2 conversations: Wilson 95% interval 9–91%.
    assert!(html.contains("50%<span class=\"ci\" title=\"Wilson 95% interval\">9–91%</span>"), "no interval");
    let diff = &html[html.find("id=\"differences\"").expect("no differences section")..];
    assert!(diff.contains("against the baseline <strong>"), "baseline not named");
    assert!(diff.contains("single_turn_loop more often than baseline: 100% vs 50% (p = 1.000"), "{}", &diff[..2000]);
    assert!(diff.contains("breaks "), "no log-rank sentence");
    assert!(!diff[..diff.find("</ul>").unwrap()].contains("class=\"significant\""), "2 vs 1 conversations is noise");
}

/// `--png` draws the summary figures against the same baseline as the page: with `--baseline` the second set,
/// the legends say "baseline" under the second set's label, not the first's.
#[test]
fn the_png_figures_are_tested_against_the_chosen_baseline() {
    let sets = two_sets();
    let notes = |baseline: usize| -> Vec<String> {
        let figures = summary_figures(&sets, false, baseline);
        let Some((_, Figure::Scatter { legend, .. })) =
            figures.iter().find(|(_, f)| matches!(f, Figure::Scatter { .. }))
        else {
            panic!("no scatter figure")
        };
        legend.iter().map(|e| e.note.clone()).collect()
    };
    assert_eq!(notes(0)[0], "baseline");
    let second = notes(1);
    assert_eq!(second[1], "baseline", "{second:?}");
    assert_ne!(second[0], "baseline", "{second:?}");
}

/// #16: every cell of the summary table that has a test against the baseline carries its ★ when the test is
/// significant — the rate of any phenomenon and the median first break in tokens too, not only the phenomena and
/// the median in turns.
#[test]
fn the_any_rate_and_the_token_median_are_marked_when_significant() {
    let texts = ["a b c d", "e f", "g h i j", "k l", "m n o p", "q r", "s t u v", "w x", "y z a b", "c d"];
    let set = |dir: &str, onset: Option<usize>| RunSet {
        dir: dir.into(),
        items: (0..30).map(|k| item(&format!("{dir}/{k}.jsonl"), 1.0, &texts, 0.1, onset)).collect(),
        problems: vec![],
    };
    let html = render(&[set("runs/base", Some(1)), set("runs/dry", None)], &Options::default()).unwrap().index;
    let table = &html[html.find("id=\"summary-table\"").unwrap()..];
    let row = &table[table.find("<tr data-set=\"1\"").unwrap()..];
    let row = &row[..row.find("</tr>").unwrap()];
    let cells: Vec<&str> = row.split("<td").skip(1).collect();
    let marked: Vec<usize> = (0..cells.len()).filter(|&k| cells[k].contains("class=\"significant\"")).collect();
    // Columns: label, conversations, response length, loop density, single_turn_loop, any, median onset (turns),
    // median onset (tokens), tokens/s. Every one with a test is marked; the others are not.
    assert_eq!(marked, [4, 5, 6, 7], "{row}");
    let base = &table[table.find("<tr data-set=\"0\"").unwrap()..];
    assert!(!base[..base.find("</tr>").unwrap()].contains("class=\"significant\""), "the baseline is never marked");
}

/// #15: a reused `analysis.json` is input. An onset far past the conversation's messages (its tick mapped past
/// `i32`) still renders the page, with and without the conversation's text.
#[test]
fn issue_15_a_saved_analysis_with_onsets_past_the_messages_renders() {
    for onset in [1usize << 40, usize::MAX / 2, usize::MAX] {
        let mut sets = two_sets();
        let mut v = serde_json::to_value(&sets[0].items[1].analysis).unwrap();
        v["detectors"]["single_turn_loop"]["assistant"]["onset_message"] = onset.into();
        sets[0].items[1].analysis = serde_json::from_value(v).unwrap();
        render(&sets, &Options::default()).unwrap();
        sets[0].items[1].conversation = None;
        let (timeline, _) = conversation_figures(&sets[0].items[1]);
        assert!(timeline.svg().unwrap().starts_with("<svg"));
    }
}

/// #15: every number of a reused `analysis.json` is input. Extreme ones (negative densities, lengths and counts at
/// the top of their types, values near f64::MAX) still render the page and the summary figures.
#[test]
fn issue_15_a_saved_analysis_with_extreme_numbers_renders() {
    let huge = serde_json::json!(u64::MAX);
    for (density, length) in [(-1e300, -5.0), (1e308, 1.7e308), (f64::MAX, f64::MAX), (0.5, 1e300)] {
        let mut sets = two_sets();
        for item in &mut sets[0].items {
            let mut v = serde_json::to_value(&item.analysis).unwrap();
            v["legacy"]["loop_density"] = density.into();
            v["legacy"]["avg_response_length"] = length.into();
            v["legacy"]["response_lengths"] = serde_json::json!([u64::MAX, 0, 1]);
            v["legacy"]["character_count"] = huge.clone();
            v["message_lengths"] = serde_json::json!([u64::MAX, u64::MAX, 3, 4]);
            v["tokens_per_s"] = length.into();
            v["total_tokens"] = huge.clone();
            v["first_onset"] = huge.clone();
            v["messages"] = huge.clone();
            v["assistant_turns"] = huge.clone();
            v["user_turns"] = huge.clone();
            let d = &mut v["detectors"]["single_turn_loop"]["assistant"];
            d["detected"] = true.into();
            d["severity"] = density.into();
            d["onset"] = huge.clone();
            d["onset_message"] = huge.clone();
            d["onset_tokens"] = huge.clone();
            item.analysis = serde_json::from_value(v).unwrap();
        }
        render(&sets, &Options::default()).unwrap();
        for (_, figure) in summary_figures(&sets, false, 0) {
            assert!(figure.svg().unwrap().starts_with("<svg"));
        }
    }
}

#[test]
fn issue_15_a_huge_transcript_is_shown_up_to_a_bounded_size() {
    // Two messages of 3 MiB: the second crosses the 4 MiB the viewer shows, so the page holds the first whole,
    // the second cut, nothing of the third, and says so.
    let big = |c: &str| format!("{} ", c.repeat(7)).repeat(3 << 17);
    let (a, b) = (big("a"), big("b"));
    let c = "the last message, never shown";
    let set = RunSet {
        dir: "runs/huge".into(),
        items: vec![item("runs/huge/0.jsonl", 1.1, &[&a, &b, c], 0.1, None)],
        problems: vec![],
    };
    let page = render(&[set], &Options::default()).unwrap().index;
    assert!(page.contains("Shown up to message #1: a page shows at most 4 MiB"), "no note");
    assert!(!page.contains(c));
    assert!(page.len() < 6 << 20, "{} bytes", page.len());
    let small = render(&two_sets(), &Options::default()).unwrap().index;
    assert!(!small.contains("Shown up to message"));
}
