//! Chat templates: the model's own Jinja template (from GGUF metadata) or one from `templates/`, rendered with
//! minijinja the way Hugging Face transformers renders them (`trim_blocks`, `lstrip_blocks`, Python string methods,
//! `raise_exception`, `bos_token`, `add_generation_prompt`). llama.cpp's built-in `apply_chat_template` only
//! pattern-matches known templates and silently renders others wrong, so parrot never uses it.
//!
//! **Strict alternation.** Some templates (Gemma's) raise unless roles alternate user/assistant starting with the
//! user, but the original tool's opening is system → assistant → user. When a template rejects that shape (probed
//! once, when the template is loaded), every message list is *repaired* before rendering:
//! 1. consecutive messages of the same role are joined with a blank line;
//! 2. if the first message after the system prompt is the assistant's, the system prompt becomes the first user
//!    message (Gemma would have put it into the first user turn anyway); with no system prompt, an empty user
//!    message is put first. No text is invented.
//!
//! The repair is decided once per template, so a conversation's prompts keep a stable prefix (KV-cache reuse).

use anyhow::{anyhow, bail, Context, Result};
use minijinja::{Environment, Error, ErrorKind, Value};
use serde::Serialize;

use crate::transcript::Speaker;

/// Templates shipped in `templates/`, by name.
pub const BUILTIN: [(&str, &str); 3] = [
    ("gemma", include_str!("../templates/gemma.jinja")),
    ("chatml", include_str!("../templates/chatml.jinja")),
    ("llama3", include_str!("../templates/llama3.jinja")),
];

/// The built-in template named `name`.
#[must_use]
pub fn builtin(name: &str) -> Option<&'static str> {
    let name = name.strip_suffix(".jinja").unwrap_or(name);
    let name = name.strip_prefix("templates/").unwrap_or(name);
    BUILTIN.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// The built-in template to use for a GGUF without one, chosen by `general.architecture`.
#[must_use]
pub fn for_architecture(arch: &str) -> &'static str {
    if arch.starts_with("gemma") {
        "gemma"
    } else if arch == "llama" {
        // Llama-architecture files without a template are mostly fine-tunes that speak ChatML; Llama 3 files
        // carry their own template.
        "chatml"
    } else {
        "chatml"
    }
}

/// One message given to a template.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: Speaker,
    /// The text.
    pub content: String,
}

impl ChatMessage {
    /// A message.
    pub fn new(role: Speaker, content: impl Into<String>) -> Self {
        ChatMessage { role, content: content.into() }
    }
}

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    /// Where it came from (`gguf`, `templates/gemma.jinja`, a file path), for the transcript header.
    pub source: String,
    bos_token: String,
    eos_token: String,
    /// Whether messages are repaired for strict alternation (see the module docs).
    pub strict_alternation: bool,
    /// Template instructions one render may run.
    fuel: u64,
}

fn raise_exception(msg: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, msg))
}

/// The current UTC time in `fmt`. chrono's `to_string()` panics on an invalid specifier; writing the format
/// through `fmt::Write` turns that into an error the template reports.
fn strftime_now(fmt: String) -> Result<String, Error> {
    use std::fmt::Write as _;
    let mut out = String::new();
    write!(out, "{}", chrono::Utc::now().format(&fmt))
        .map_err(|_| Error::new(ErrorKind::InvalidOperation, format!("strftime_now: invalid format {fmt:?}")))?;
    Ok(out)
}

/// Template instructions one render may run. Rendering a long conversation takes a few dozen per message; the
/// limit only stops templates that loop without end (a template is untrusted: it comes from the GGUF file or the
/// server).
const FUEL: u64 = 20_000_000;

/// The longest prompt a template may render, in bytes: far above any context window, far below memory trouble.
const MAX_RENDERED: usize = 64 << 20;
/// The largest chat template file read (1 MiB; real templates are a few KiB).
const MAX_TEMPLATE_BYTES: u64 = 1 << 20;

/// A `fmt::Write` that fails once more than [`MAX_RENDERED`] bytes are written.
struct Capped(String, bool);

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > MAX_RENDERED {
            self.1 = true;
            return Err(std::io::Error::other(format!("the rendered prompt is too large (over {MAX_RENDERED} bytes)")));
        }
        // minijinja writes whole UTF-8 strings.
        self.0.push_str(&String::from_utf8_lossy(buf));
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl ChatTemplate {
    /// Compiles `text` and probes whether it needs alternation repair.
    ///
    /// # Errors
    /// When the template does not compile, or cannot render the original tool's opening even after repair.
    pub fn new(text: &str, source: impl Into<String>, bos_token: &str, eos_token: &str) -> Result<Self> {
        Self::with_fuel(text, source, bos_token, eos_token, FUEL)
    }

    /// [`ChatTemplate::new`] with a step limit of `fuel` per render.
    fn with_fuel(text: &str, source: impl Into<String>, bos_token: &str, eos_token: &str, fuel: u64) -> Result<Self> {
        let source = source.into();
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        minijinja_contrib::add_to_environment(&mut env);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.set_fuel(Some(fuel));
        env.add_template_owned("chat", text.to_string())
            .map_err(|e| anyhow!("chat template '{source}' does not compile: {e}"))?;
        let mut t = ChatTemplate {
            env,
            source,
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
            strict_alternation: false,
            fuel,
        };
        let probe = [
            ChatMessage::new(Speaker::System, "s"),
            ChatMessage::new(Speaker::Assistant, "a"),
            ChatMessage::new(Speaker::User, "u"),
        ];
        if t.render_raw(&probe, true).is_err() {
            t.strict_alternation = true;
            t.render(&probe, true).with_context(|| {
                format!("chat template '{}' cannot render a system → assistant → user conversation", t.source)
            })?;
        }
        Ok(t)
    }

    fn render_raw(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let tmpl = self.env.get_template("chat")?;
        let mut out = Capped(String::new(), false);
        let ctx = minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
        };
        tmpl.render_captured_to(ctx, &mut out).map(drop).map_err(|e| {
            let why = if e.kind() == ErrorKind::OutOfFuel {
                format!("it ran more than {} steps (does it loop without end?)", self.fuel)
            } else if out.1 {
                format!("the rendered prompt is too large (over {MAX_RENDERED} bytes)")
            } else {
                e.to_string()
            };
            anyhow!("chat template '{}' failed: {why}", self.source)
        })?;
        Ok(out.0)
    }

    /// Renders `messages`, repairing them first if the template demands strict alternation.
    ///
    /// # Errors
    /// When the template raises or fails.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        if self.strict_alternation {
            self.render_raw(&repair_alternation(messages), add_generation_prompt)
        } else {
            self.render_raw(messages, add_generation_prompt)
        }
    }
}

/// Applies the alternation repair described in the module docs.
#[must_use]
pub fn repair_alternation(messages: &[ChatMessage]) -> Vec<ChatMessage> {
    let mut merged: Vec<ChatMessage> = Vec::with_capacity(messages.len() + 1);
    for m in messages {
        match merged.last_mut() {
            Some(last) if last.role == m.role => {
                last.content.push_str("\n\n");
                last.content.push_str(&m.content);
            }
            _ => merged.push(m.clone()),
        }
    }
    let first_turn = usize::from(merged.first().is_some_and(|m| m.role == Speaker::System));
    if merged.get(first_turn).is_some_and(|m| m.role == Speaker::Assistant) {
        if first_turn == 1 {
            merged[0].role = Speaker::User;
        } else {
            merged.insert(0, ChatMessage::new(Speaker::User, ""));
        }
    }
    merged
}

/// Loads the template named by config (`name` is a built-in name or a file path), or else the GGUF's own, or else
/// the built-in one for the architecture. Returns the template text and its source label.
///
/// # Errors
/// When a named template is neither built in nor a readable file.
pub fn select(configured: Option<&str>, from_gguf: Option<&str>, arch: Option<&str>) -> Result<(String, String)> {
    if let Some(name) = configured {
        if let Some(text) = builtin(name) {
            let short = name.trim_start_matches("templates/").trim_end_matches(".jinja");
            return Ok((text.to_string(), format!("templates/{short}.jinja")));
        }
        let path = std::path::Path::new(name);
        if !path.is_file() {
            let names: Vec<&str> = BUILTIN.iter().map(|(n, _)| *n).collect();
            bail!("chat template '{name}' is neither a built-in template ({}) nor a file", names.join(", "));
        }
        let text = crate::config::read_bounded_text(path, MAX_TEMPLATE_BYTES)
            .with_context(|| format!("could not read chat template '{name}'"))?;
        return Ok((text, name.to_string()));
    }
    if let Some(text) = from_gguf.filter(|t| !t.trim().is_empty()) {
        return Ok((text.to_string(), "gguf".to_string()));
    }
    let name = for_architecture(arch.unwrap_or(""));
    Ok((builtin(name).unwrap_or_default().to_string(), format!("templates/{name}.jinja")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opening() -> Vec<ChatMessage> {
        vec![
            ChatMessage::new(Speaker::System, "Be Skye."),
            ChatMessage::new(Speaker::Assistant, "Skye: Hey sport!"),
            ChatMessage::new(Speaker::User, "Mark: \"Hi.\""),
        ]
    }

    #[test]
    fn gemma_needs_and_gets_alternation_repair() {
        let t = ChatTemplate::new(builtin("gemma").unwrap(), "templates/gemma.jinja", "<bos>", "<eos>").unwrap();
        assert!(t.strict_alternation);
        let out = t.render(&opening(), true).unwrap();
        assert_eq!(
            out,
            "<bos><start_of_turn>user\nBe Skye.<end_of_turn>\n<start_of_turn>model\nSkye: Hey sport!<end_of_turn>\n\
             <start_of_turn>user\nMark: \"Hi.\"<end_of_turn>\n<start_of_turn>model\n"
        );
    }

    #[test]
    fn chatml_renders_any_order_unrepaired() {
        let t = ChatTemplate::new(builtin("chatml").unwrap(), "chatml", "", "").unwrap();
        assert!(!t.strict_alternation);
        let out = t.render(&opening(), true).unwrap();
        assert!(out.starts_with("<|im_start|>system\nBe Skye.<|im_end|>\n<|im_start|>assistant\nSkye: Hey"), "{out}");
        assert!(out.ends_with("<|im_start|>assistant\n"), "{out}");
    }

    #[test]
    fn repair_merges_runs_and_never_invents_text() {
        let msgs = vec![
            ChatMessage::new(Speaker::Assistant, "a1"),
            ChatMessage::new(Speaker::Assistant, "a2"),
            ChatMessage::new(Speaker::User, "u"),
        ];
        let r = repair_alternation(&msgs);
        assert_eq!(r.len(), 3);
        assert_eq!(r[0], ChatMessage::new(Speaker::User, ""));
        assert_eq!(r[1].content, "a1\n\na2");
    }

    #[test]
    fn python_string_methods_and_raise_exception_work() {
        let src = "{% if messages[0].content.startswith('x') %}{{ raise_exception('bad start') }}{% endif %}\
                   {{ messages[0].content.upper() }}";
        let t = ChatTemplate::new(src, "inline", "", "");
        // The probe starts with "s", so it compiles and renders.
        let t = t.unwrap();
        assert_eq!(t.render(&[ChatMessage::new(Speaker::User, "abc")], false).unwrap(), "ABC");
        let err = t.render(&[ChatMessage::new(Speaker::User, "xyz")], false).unwrap_err().to_string();
        assert!(err.contains("bad start"), "{err}");
    }

    #[test]
    fn select_prefers_config_then_gguf_then_architecture() {
        assert_eq!(select(Some("gemma"), Some("x"), None).unwrap().1, "templates/gemma.jinja");
        assert_eq!(select(None, Some("x"), Some("gemma3")).unwrap().1, "gguf");
        assert_eq!(select(None, None, Some("gemma3")).unwrap().1, "templates/gemma.jinja");
        assert!(select(Some("no-such-template"), None, None).unwrap_err().to_string().contains("built-in"));
    }

    #[test]
    fn strftime_now_with_a_bad_format_is_an_error_not_a_panic() {
        // chrono panics in `to_string()` on an invalid specifier; a template from a GGUF must not crash parrot.
        let t = ChatTemplate::new("{{ strftime_now('%Y') }}{{ messages[0].content }}", "inline", "", "").unwrap();
        assert!(t.render(&[ChatMessage::new(Speaker::User, "x")], false).unwrap().ends_with('x'));
        let err = ChatTemplate::new("{{ strftime_now('%Q%') }}", "inline", "", "").err().expect("bad format fails");
        assert!(format!("{err:#}").contains("strftime_now"), "{err:#}");
    }

    #[test]
    fn a_template_that_loops_forever_runs_out_of_fuel() {
        // Nested loops over a large range: without a step limit this renders for hours.
        let src = "{% for a in range(100000) %}{% for b in range(100000) %}{% for c in range(100000) %}x\
                   {% endfor %}{% endfor %}{% endfor %}";
        // A small limit keeps the test fast; the real one is only larger.
        let err = ChatTemplate::with_fuel(src, "inline", "", "", 100_000).err().expect("runs out of fuel");
        assert!(format!("{err:#}").contains("steps"), "{err:#}");
    }

    #[test]
    fn a_template_whose_output_is_huge_is_an_error() {
        let src = "{{ 'x' * 100000000 }}";
        let err = ChatTemplate::new(src, "inline", "", "").err().expect("output too large");
        assert!(format!("{err:#}").contains("too large"), "{err:#}");
    }
}
