//! The run configuration: parrot's own TOML, or the original tool's `config.json` as-is, read into one validated
//! [`Config`]. Pure: [`Config::from_str`] takes text, so every rule is unit-tested without files.
//!
//! Both formats share one schema (the original's keys, plus parrot's `[assistant]`/`[user]` model tables and
//! `seed`), so an old `config.json` is simply a parrot config written in JSON. Unknown keys are errors that name the
//! key and its line, never silently ignored. Sampler fields accept the llama.cpp spelling and the vLLM/aphrodite and
//! koboldcpp spellings (`repetition_penalty`, `rep_pen`, `rep_pen_range`, `mirostat_mode`, …).
//!
//! Loading happens in two passes: the file is deserialized directly (so errors carry line and column), then turned
//! into a JSON value on which `--set key=value` overrides are applied and which is deserialized again — the same
//! mechanism a sweep grid uses.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::transcript::Speaker;

/// One opening message of the conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpeningMessage {
    /// `system`, `assistant` or `user`.
    pub role: Speaker,
    /// The message text (for assistant and user messages, including the speaker prefix).
    pub content: String,
}

/// Which samplers run, in which order. The default is llama-server's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SamplerStage {
    /// Repeat, frequency and presence penalties.
    Penalties,
    /// DRY ("don't repeat yourself").
    Dry,
    /// Top-k.
    TopK,
    /// Locally typical sampling.
    TypicalP,
    /// Nucleus (top-p).
    TopP,
    /// Min-p.
    MinP,
    /// Exclude top choices (XTC).
    Xtc,
    /// Temperature.
    Temperature,
}

/// llama-server's default sampler order.
pub const DEFAULT_ORDER: [SamplerStage; 8] = [
    SamplerStage::Penalties,
    SamplerStage::Dry,
    SamplerStage::TopK,
    SamplerStage::TypicalP,
    SamplerStage::TopP,
    SamplerStage::MinP,
    SamplerStage::Xtc,
    SamplerStage::Temperature,
];

/// Sampler settings for one role. Defaults are llama-server's, so an original config that leaves a field out gets
/// what the original got from its server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplerConfig {
    /// Temperature; 0 picks the most likely token.
    pub temperature: f64,
    /// Keep the k most likely tokens; 0 or negative (vLLM's -1) disables it.
    pub top_k: i32,
    /// Nucleus sampling threshold; 1 disables it.
    pub top_p: f64,
    /// Drop tokens less likely than `min_p` × the top token's probability; 0 disables it.
    pub min_p: f64,
    /// Locally typical sampling; 1 disables it. Also spelled `typical`.
    #[serde(alias = "typical")]
    pub typical_p: f64,
    /// CTRL repetition penalty; 1 disables it. Also spelled `repetition_penalty` (vLLM) and `rep_pen` (koboldcpp).
    #[serde(alias = "repetition_penalty", alias = "rep_pen")]
    pub repeat_penalty: f64,
    /// How many recent tokens the penalties look at; -1 means the whole context (as does any longer window, in
    /// process), 0 disables. Also `rep_pen_range`.
    #[serde(alias = "rep_pen_range")]
    pub repeat_last_n: i32,
    /// OpenAI-style frequency penalty; 0 disables it.
    pub frequency_penalty: f64,
    /// OpenAI-style presence penalty; 0 disables it.
    pub presence_penalty: f64,
    /// DRY multiplier; 0 disables DRY.
    pub dry_multiplier: f64,
    /// DRY base.
    pub dry_base: f64,
    /// DRY: repeated sequences up to this length are not penalised.
    pub dry_allowed_length: i32,
    /// DRY: how many recent tokens to scan; -1 means the whole context (as does any longer window, in process).
    /// Also `dry_range` (aphrodite).
    #[serde(alias = "dry_range")]
    pub dry_penalty_last_n: i32,
    /// DRY sequence breakers.
    pub dry_sequence_breakers: Vec<String>,
    /// XTC probability; 0 disables XTC.
    pub xtc_probability: f64,
    /// XTC threshold.
    pub xtc_threshold: f64,
    /// Mirostat version: 0 off, 2 for mirostat v2 (v1 is not supported). Also `mirostat_mode`.
    #[serde(alias = "mirostat_mode")]
    pub mirostat: u8,
    /// Mirostat target entropy.
    pub mirostat_tau: f64,
    /// Mirostat learning rate.
    pub mirostat_eta: f64,
    /// Fixed sampler seed; by default each conversation's seed is used.
    pub seed: Option<u32>,
    /// Strings that end a turn (cut before them). The original uses `["\n"]` to keep turns on one line.
    pub stop: Vec<String>,
    /// Sampler order. Default: llama-server's (penalties, dry, top_k, typical_p, top_p, min_p, xtc, temperature).
    /// Also spelled `sampler_order`.
    #[serde(alias = "sampler_order")]
    pub samplers: Vec<SamplerStage>,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            typical_p: 1.0,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            dry_multiplier: 0.0,
            dry_base: 1.75,
            dry_allowed_length: 2,
            dry_penalty_last_n: -1,
            dry_sequence_breakers: ["\n", ":", "\"", "*"].map(String::from).to_vec(),
            xtc_probability: 0.0,
            xtc_threshold: 0.1,
            mirostat: 0,
            mirostat_tau: 5.0,
            mirostat_eta: 0.1,
            seed: None,
            stop: Vec::new(),
            samplers: DEFAULT_ORDER.to_vec(),
        }
    }
}

impl SamplerConfig {
    fn validate(&self, section: &str) -> Result<()> {
        let check = |ok: bool, field: &str, rule: &str| {
            if ok {
                Ok(())
            } else {
                Err(anyhow!("{section}.{field} {rule}"))
            }
        };
        check(self.temperature >= 0.0 && self.temperature.is_finite(), "temperature", "must be 0 or more")?;
        check(self.top_p > 0.0 && self.top_p <= 1.0, "top_p", "must be in (0, 1]")?;
        check((0.0..=1.0).contains(&self.min_p), "min_p", "must be in [0, 1]")?;
        check(self.typical_p > 0.0 && self.typical_p <= 1.0, "typical_p", "must be in (0, 1]")?;
        check(self.repeat_penalty > 0.0 && self.repeat_penalty.is_finite(), "repeat_penalty", "must be above 0")?;
        check(self.repeat_last_n >= -1, "repeat_last_n", "must be -1 (whole context), 0 (off) or a token count")?;
        check(self.dry_multiplier >= 0.0, "dry_multiplier", "must be 0 (off) or more")?;
        check(self.dry_base >= 1.0, "dry_base", "must be at least 1")?;
        check(self.dry_penalty_last_n >= -1, "dry_penalty_last_n", "must be -1 (whole context) or more")?;
        check((0.0..=1.0).contains(&self.xtc_probability), "xtc_probability", "must be in [0, 1]")?;
        check(matches!(self.mirostat, 0 | 2), "mirostat", "must be 0 (off) or 2 (mirostat v2)")?;
        check(self.stop.iter().all(|s| !s.is_empty()), "stop", "must not contain an empty string")?;
        check(
            self.dry_sequence_breakers.iter().all(|s| !s.contains('\0')),
            "dry_sequence_breakers",
            "must not contain NUL characters",
        )?;
        check(!self.samplers.is_empty(), "samplers", "must name at least one sampler")?;
        Ok(())
    }
}

/// Settings for one model role, from the config's `[assistant]` or `[user]` table (flags override them).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Path of the GGUF file (or a registry name).
    pub model: Option<String>,
    /// Context size in tokens. Default: the assistant gets room for the whole budget, the user 2048.
    pub n_ctx: Option<u32>,
    /// Chat template: a `templates/` name (`gemma`, `chatml`, `llama3`) or a path to a Jinja file. Default: the
    /// template in the GGUF, else one chosen by the model's architecture.
    pub chat_template: Option<String>,
    /// CPU threads for this model. Default: all cores.
    pub threads: Option<u32>,
    /// Layers to offload to the GPU (GPU builds only). Default: all of them when a GPU backend is built.
    pub gpu_layers: Option<u32>,
}

/// A whole configuration, as written in the file (all defaults applied).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Opening messages, in order.
    pub conversation: Vec<OpeningMessage>,
    /// Text every assistant turn is forced to start with (e.g. `Skye:`); kept in the stored turn.
    pub agent_prefix: String,
    /// Text every user turn is forced to start with (e.g. `Mark: "`).
    pub user_prefix: String,
    /// The user model's own system prompt.
    pub user_system: String,
    /// How many of the most recent messages the user model sees.
    pub user_memory: usize,
    /// Tokens credited to the opening messages.
    pub initial_tokens: u64,
    /// Stop once `initial_tokens` plus all generated tokens reach this.
    pub total_tokens: u64,
    /// Per-turn generation limit.
    pub turn_max_tokens: u32,
    /// The assistant's sampler.
    pub sampler: SamplerConfig,
    /// The user's sampler; defaults to `sampler`.
    pub user_sampler: Option<SamplerConfig>,
    /// The assistant's HTTP endpoint (original tool; used by `--backend http`).
    pub api_url: Option<String>,
    /// The user's HTTP endpoint (original tool).
    pub user_api_url: Option<String>,
    /// Hugging Face tokenizer of the assistant (original tool; in-process runs use the GGUF's own template).
    pub tokenizer: Option<String>,
    /// Hugging Face tokenizer of the user (original tool).
    pub user_tokenizer: Option<String>,
    /// The assistant model's settings.
    pub assistant: ModelConfig,
    /// The user model's settings.
    pub user: ModelConfig,
    /// Seed of the first conversation (`--seed` overrides; conversation i uses seed + i).
    pub seed: Option<u32>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            conversation: Vec::new(),
            agent_prefix: String::new(),
            user_prefix: String::new(),
            user_system: String::new(),
            user_memory: 9,
            initial_tokens: 0,
            total_tokens: 2048,
            turn_max_tokens: 512,
            sampler: SamplerConfig::default(),
            user_sampler: None,
            api_url: None,
            user_api_url: None,
            tokenizer: None,
            user_tokenizer: None,
            assistant: ModelConfig::default(),
            user: ModelConfig::default(),
            seed: None,
        }
    }
}

/// The syntax of a config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    /// parrot's TOML.
    Toml,
    /// JSON, as the original tool's `config.json`.
    Json,
}

impl Syntax {
    /// Guesses the syntax from the file name, then from the content.
    #[must_use]
    pub fn detect(path: &Path, text: &str) -> Syntax {
        match path.extension().and_then(|e| e.to_str()) {
            Some("json") => Syntax::Json,
            Some("toml") => Syntax::Toml,
            _ if text.trim_start().starts_with('{') => Syntax::Json,
            _ => Syntax::Toml,
        }
    }
}

/// The largest config file read (16 MiB: a config is settings and an opening conversation, not a corpus).
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// Reads a file of at most `max` bytes, never more than `max` + 1 bytes of it: the one bounded whole-file read
/// for the files parrot reads whole (configs, records, registries, a transcript to continue).
///
/// # Errors
/// When the file cannot be opened or read (the [`std::io::Error`] is the error's root, so a caller can tell a
/// missing file), or is larger than `max` (the message gives the bound).
pub fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?.take(max.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        let bound = if max >= 1 << 20 { format!("{} MiB", max >> 20) } else { format!("{max} bytes") };
        bail!("the file is larger than {bound}, the most parrot reads of it");
    }
    Ok(bytes)
}

/// Whether `e` (from [`read_bounded`]) says that the file does not exist.
#[must_use]
pub fn is_not_found(e: &anyhow::Error) -> bool {
    e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound)
}

/// Reads a UTF-8 text file of at most `max` bytes, never more than `max` + 1 bytes of it ([`read_bounded`]).
///
/// # Errors
/// When the file cannot be read, is larger, or is not UTF-8 (the message says which).
pub fn read_bounded_text(path: &Path, max: u64) -> Result<String> {
    let bytes = read_bounded(path, max)?;
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count() + 1;
        anyhow!("line {line} is not valid UTF-8")
    })
}

/// A message quoting the file (a key, a value) kept on one line: control characters (a newline in a quoted key)
/// are written as escapes.
fn one_line(message: &str) -> String {
    message.chars().map(|c| if c.is_control() { c.escape_debug().to_string() } else { c.to_string() }).collect()
}

/// 1-based line and column (in characters) of byte `offset` in `text`. An offset inside a multi-byte character
/// (a parser's span is input-derived) is that character's position, never a slice inside it.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = text.get(..end).unwrap_or_default();
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().unwrap_or_default().chars().count() + 1;
    (line, col)
}

impl Config {
    /// Parses and validates a config. `name` (the file name) prefixes error messages.
    ///
    /// # Errors
    /// A one-line message `NAME:LINE:COL: problem` for syntax errors, unknown keys and wrong types, or
    /// `NAME: key rule` for values out of range.
    pub fn from_str(text: &str, syntax: Syntax, name: &str) -> Result<Config> {
        let config: Config = match syntax {
            Syntax::Toml => toml::from_str(text).map_err(|e| {
                let (line, col) = e.span().map_or((0, 0), |s| line_col(text, s.start));
                anyhow!("{name}:{line}:{col}: {}", one_line(e.message().trim()))
            })?,
            Syntax::Json => serde_json::from_str(text).map_err(|e| {
                let msg = e.to_string();
                let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
                anyhow!("{name}:{}:{}: {}", e.line(), e.column(), one_line(&msg))
            })?,
        };
        config.validate().map_err(|e| anyhow!("{name}: {}", one_line(&e.to_string())))?;
        Ok(config)
    }

    /// Reads a config file (TOML, or JSON by extension or content).
    ///
    /// # Errors
    /// When the file cannot be read or is invalid; the message names the file.
    pub fn load(path: &Path) -> Result<Config> {
        let text = read_bounded_text(path, MAX_CONFIG_BYTES)
            .with_context(|| format!("could not read config file '{}'", path.display()))?;
        Config::from_str(&text, Syntax::detect(path, &text), &path.display().to_string())
    }

    /// Applies `key.path=value` overrides (the value is parsed as JSON, else taken as a string), then validates.
    ///
    /// # Errors
    /// When a key does not exist or a value has the wrong type; the message names the override.
    pub fn with_overrides(&self, overrides: &[String]) -> Result<Config> {
        if overrides.is_empty() {
            return Ok(self.clone());
        }
        let mut value = serde_json::to_value(self)?;
        for item in overrides {
            let (key, raw) = item
                .split_once('=')
                .ok_or_else(|| anyhow!("--set '{item}': expected KEY=VALUE, e.g. sampler.repeat_penalty=1.1"))?;
            let parsed = serde_json::from_str(raw.trim()).unwrap_or_else(|_| serde_json::Value::String(raw.into()));
            set_path(&mut value, key.trim(), parsed).map_err(|e| anyhow!("--set '{item}': {e}"))?;
            let config: Config = serde_json::from_value(value.clone()).map_err(|e| anyhow!("--set '{item}': {e}"))?;
            config.validate().map_err(|e| anyhow!("--set '{item}': {e}"))?;
        }
        Ok(serde_json::from_value(value)?)
    }

    /// Checks the rules that types cannot express.
    ///
    /// # Errors
    /// A message naming the key and the rule.
    pub fn validate(&self) -> Result<()> {
        if self.user_memory == 0 {
            bail!("user_memory must be at least 1 (the user model must see the assistant's last turn)");
        }
        if self.turn_max_tokens == 0 {
            bail!("turn_max_tokens must be at least 1");
        }
        if self.total_tokens <= self.initial_tokens {
            bail!(
                "total_tokens ({}) must be larger than initial_tokens ({}), or nothing would be generated",
                self.total_tokens,
                self.initial_tokens
            );
        }
        self.sampler.validate("sampler")?;
        if let Some(s) = &self.user_sampler {
            s.validate("user_sampler")?;
        }
        for (section, m) in [("assistant", &self.assistant), ("user", &self.user)] {
            if m.n_ctx == Some(0) {
                bail!("{section}.n_ctx must be at least 1");
            }
            if m.threads == Some(0) {
                bail!("{section}.threads must be at least 1");
            }
        }
        Ok(())
    }

    /// The user's sampler (falls back to the assistant's, as in the original).
    #[must_use]
    pub fn user_sampler(&self) -> &SamplerConfig {
        self.user_sampler.as_ref().unwrap_or(&self.sampler)
    }
}

/// Sets `value[a][b]… = new` for the dotted `key`, refusing keys that do not already exist (so typos are caught
/// here with a list of the valid keys, before serde's message).
fn set_path(value: &mut serde_json::Value, key: &str, new: serde_json::Value) -> Result<()> {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().filter(|s| !s.is_empty()).ok_or_else(|| anyhow!("empty key"))?;
    let mut cur = value;
    let mut walked = String::new();
    for part in parts {
        if cur.get(part).is_some_and(serde_json::Value::is_null) && part == "user_sampler" {
            // `user_sampler` is absent by default: start it from the assistant's sampler, as the original does.
            let base = cur.get("sampler").cloned().unwrap_or_default();
            cur[part] = base;
        }
        cur = match cur.get_mut(part) {
            Some(v) if v.is_object() => v,
            _ => bail!("unknown key '{walked}{part}'"),
        };
        walked.push_str(part);
        walked.push('.');
    }
    let obj = cur.as_object_mut().ok_or_else(|| anyhow!("'{walked}' is not a table"))?;
    if !obj.contains_key(last) {
        let mut valid: Vec<&str> = obj.keys().map(String::as_str).collect();
        valid.sort_unstable();
        bail!("unknown key '{walked}{last}'; valid keys here: {}", valid.join(", "));
    }
    obj.insert(last.to_string(), new);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGINAL: &str = include_str!("../tests/fixtures/broken-record-config.json");

    #[test]
    fn issue_15_an_error_quoting_the_file_stays_one_line() {
        // Found by the property tests: a key holding a newline was quoted raw, splitting the message.
        let err = Config::from_str("{\"sampler\": {\"a\\nb\": 1}}", Syntax::Json, "c.json").unwrap_err().to_string();
        assert!(err.starts_with("c.json:1:") && err.contains("unknown field `a\\nb`") && !err.contains('\n'), "{err}");
    }

    #[test]
    fn issue_15_a_config_file_is_read_only_up_to_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.toml");
        let file = std::fs::File::create(&big).unwrap();
        file.set_len(MAX_CONFIG_BYTES + 1).unwrap();
        let err = format!("{:#}", Config::load(&big).unwrap_err());
        assert!(err.contains("big.toml") && err.contains("larger than 16 MiB"), "{err}");
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, b"seed = 1\n# \xff\n").unwrap();
        let err = format!("{:#}", Config::load(&bad).unwrap_err());
        assert!(err.contains("bad.toml") && err.contains("line 2 is not valid UTF-8"), "{err}");
    }

    #[test]
    fn the_original_config_json_loads_unchanged() {
        let c = Config::from_str(ORIGINAL, Syntax::Json, "config.json").unwrap();
        assert_eq!(c.conversation.len(), 3);
        assert_eq!(c.conversation[0].role, Speaker::System);
        assert_eq!(c.agent_prefix, "Skye:");
        assert_eq!(c.user_prefix, "Mark: \"");
        assert_eq!(c.user_memory, 9);
        assert_eq!(c.total_tokens, 8192);
        assert_eq!(c.sampler.repeat_last_n, 2048);
        assert_eq!(c.sampler.top_k, 0);
        assert_eq!(c.sampler.stop, vec!["\n".to_string()]);
        assert_eq!(c.user_sampler(), &c.sampler);
        assert_eq!(c.api_url.as_deref(), Some("http://127.0.0.1:8081"));
    }

    #[test]
    fn vllm_and_kobold_spellings_are_accepted() {
        let c = Config::from_str(
            r#"{"sampler": {"repetition_penalty": 1.2, "top_k": -1}, "user_sampler": {"rep_pen": 1.3, "rep_pen_range": 99}}"#,
            Syntax::Json,
            "c.json",
        )
        .unwrap();
        assert!((c.sampler.repeat_penalty - 1.2).abs() < 1e-6);
        assert_eq!(c.sampler.top_k, -1);
        assert!((c.user_sampler().repeat_penalty - 1.3).abs() < 1e-6);
        assert_eq!(c.user_sampler().repeat_last_n, 99);
    }

    #[test]
    fn unknown_keys_name_the_key_and_line() {
        let err = Config::from_str("total_tokens = 100\ntemprature = 1.0\n", Syntax::Toml, "c.toml").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("c.toml:2:1:"), "{msg}");
        assert!(msg.contains("temprature"), "{msg}");
        assert!(!msg.contains('\n'), "one line: {msg}");
        let err = Config::from_str("{\n  \"sampler\": {\"temp\": 1}\n}", Syntax::Json, "c.json").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("c.json:2:"), "{msg}");
        assert!(msg.contains("`temp`"), "{msg}");
    }

    #[test]
    fn wrong_types_and_ranges_are_errors() {
        let msg = Config::from_str("total_tokens = \"many\"", Syntax::Toml, "c.toml").unwrap_err().to_string();
        assert!(msg.starts_with("c.toml:1:16:"), "{msg}");
        let msg = Config::from_str("[sampler]\ntop_p = 1.5", Syntax::Toml, "c.toml").unwrap_err().to_string();
        assert_eq!(msg, "c.toml: sampler.top_p must be in (0, 1]");
        let msg = Config::from_str("user_memory = 0", Syntax::Toml, "c.toml").unwrap_err().to_string();
        assert!(msg.contains("user_memory"), "{msg}");
    }

    /// #15: a TOML error's span is a byte offset; next to (or inside) a multi-byte character it must still give a
    /// line and column, never slice the text inside the character.
    #[test]
    fn syntax_errors_beside_multi_byte_characters_name_the_line() {
        let heads =
            ["", "a = ", "a = 1", "a = [", "a = {", "[", "[a", "a.", "a = \"", "a = 'x' ", "a = 0x", "a = 1979-05-27T"];
        for c in ["é", "€", "😀", "\u{200b}"] {
            for head in heads {
                for text in [format!("{head}{c}"), format!("{head}{c}{c} = 1\n"), format!("x = \"{c}\"\n{head}{c}{c}")]
                {
                    let Err(e) = Config::from_str(&text, Syntax::Toml, "c.toml") else { continue };
                    let msg = e.to_string();
                    assert!(msg.starts_with("c.toml:") && !msg.contains('\n'), "{text:?}: {msg}");
                }
            }
        }
        // The column of an offset inside a character is that character's.
        assert_eq!(line_col("x\n\u{e9}\u{e9}", 3), (2, 1));
        assert_eq!(line_col("x\n\u{e9}\u{e9}", 4), (2, 2), "columns count characters");
        assert_eq!(line_col("\u{1F600}", 2), (1, 1));
    }

    #[test]
    fn overrides_set_existing_keys_only() {
        let c = Config::default();
        let c2 = c.with_overrides(&["sampler.repeat_penalty=1.1".into(), "agent_prefix=Skye:".into()]).unwrap();
        assert!((c2.sampler.repeat_penalty - 1.1).abs() < 1e-6);
        assert_eq!(c2.agent_prefix, "Skye:");
        let c3 = c.with_overrides(&["user_sampler.temperature=0.5".into()]).unwrap();
        assert!((c3.user_sampler().temperature - 0.5).abs() < 1e-6);
        let msg = c.with_overrides(&["sampler.repeat_penality=1".into()]).unwrap_err().to_string();
        assert!(msg.contains("unknown key 'sampler.repeat_penality'") && msg.contains("repeat_penalty"), "{msg}");
        let msg = c.with_overrides(&["sampler.top_p=2".into()]).unwrap_err().to_string();
        assert!(msg.contains("top_p"), "{msg}");
    }
}
