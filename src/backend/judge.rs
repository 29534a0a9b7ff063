//! The engines of the analysis judge ([`crate::analysis::judge::JudgeEngine`]): a GGUF run in-process through the
//! same llama.cpp backend as conversations ([`LlamaJudge`], llama.cpp's grammar sampler), or a model served over
//! HTTP ([`HttpJudge`], the grammar or JSON schema sent in the request). Both decode greedily.
//!
//! Their boundary: rendering the judge's two messages with the model's chat template, constraining and running one
//! generation, and naming the model for the cache. Prompts, windows, parsing and the cache are the pure core's.

use std::sync::atomic::AtomicBool;

use anyhow::Result;
use serde_json::{json, Map, Value};

use super::http::{ApiKey, Flavor, HttpBackend, HttpOptions};
use super::{Backend, GenRequest};
use crate::analysis::judge::{self, JudgeEngine};
use crate::chat_template::ChatMessage;
use crate::config::SamplerConfig;
use crate::transcript::Speaker;

/// How a `--judge-url` server is asked for constrained output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum JudgeFlavor {
    /// llama.cpp's `llama-server`: `/completion` with the judge's GBNF `grammar`.
    #[value(name = "llama-server")]
    LlamaServer,
    /// An OpenAI-compatible `/v1/completions` server: `response_format` with the JSON schema (vLLM, aphrodite),
    /// and the GBNF `grammar` that llama-cpp-python reads.
    Openai,
    /// vLLM's `/v1/completions` with `guided_json` (versions that predate `response_format` on completions).
    Vllm,
}

impl JudgeFlavor {
    /// The protocol the server speaks otherwise.
    #[must_use]
    pub fn http(self) -> Flavor {
        match self {
            JudgeFlavor::LlamaServer => Flavor::LlamaServer,
            JudgeFlavor::Openai | JudgeFlavor::Vllm => Flavor::Openai,
        }
    }

    /// The request fields that constrain the answer to a verdict.
    #[must_use]
    pub fn constraint(self) -> Map<String, Value> {
        let fields = match self {
            JudgeFlavor::LlamaServer => json!({"grammar": judge::grammar()}),
            JudgeFlavor::Openai => json!({
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "verdict", "strict": true, "schema": judge::schema()}
                },
                "grammar": judge::grammar(),
            }),
            JudgeFlavor::Vllm => json!({"guided_json": judge::schema()}),
        };
        match fields {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    /// The flavor's name on the command line.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            JudgeFlavor::LlamaServer => "llama-server",
            JudgeFlavor::Openai => "openai",
            JudgeFlavor::Vllm => "vllm",
        }
    }
}

/// The judge's two messages.
fn messages(system: &str, user: &str) -> [ChatMessage; 2] {
    [ChatMessage::new(Speaker::System, system), ChatMessage::new(Speaker::User, user)]
}

/// A judge served over HTTP.
pub struct HttpJudge {
    backend: HttpBackend,
    id: String,
    greedy: SamplerConfig,
}

impl HttpJudge {
    /// Connects to the server (which reports its model, context size and chat template, unless `template` names
    /// one).
    ///
    /// # Errors
    /// When the server cannot be reached or reports too little (one line naming the URL).
    pub fn connect(url: &str, flavor: JudgeFlavor, template: Option<String>, api_key: Option<String>) -> Result<Self> {
        let opts = HttpOptions {
            chat_template: template,
            api_key: ApiKey::new(api_key),
            ..HttpOptions::new(url, flavor.http())
        };
        let backend = HttpBackend::connect(opts)?.with_extra_body(flavor.constraint());
        let served = backend.describe().name.unwrap_or_else(|| url.to_string());
        Ok(HttpJudge {
            id: format!("http:{}:{served}", flavor.as_str()),
            backend,
            greedy: SamplerConfig { temperature: 0.0, top_k: 1, stop: Vec::new(), ..SamplerConfig::default() },
        })
    }
}

impl JudgeEngine for HttpJudge {
    fn model_id(&self) -> String {
        self.id.clone()
    }

    fn complete(&mut self, system: &str, user: &str) -> Result<String> {
        let prompt = self.backend.render(&messages(system, user))?;
        let cancel = AtomicBool::new(false);
        let req = GenRequest {
            prompt: &prompt,
            max_tokens: judge::MAX_OUTPUT_TOKENS,
            sampler: &self.greedy,
            seed: 0,
            cancel: &cancel,
        };
        Ok(self.backend.generate(&req, &mut |_| {})?.text)
    }
}

#[cfg(feature = "llama")]
pub use in_process::LlamaJudge;

#[cfg(feature = "llama")]
mod in_process {
    use std::path::{Path, PathBuf};

    use anyhow::{Context, Result};

    use super::messages;
    use crate::analysis::judge::{self, JudgeEngine};
    use crate::backend::llama::{LlamaBackend, LoadOptions};
    use crate::backend::Backend;

    /// Context of the judge: a window's prompt (five messages of at most 600 characters and the instructions) plus
    /// the longest answer the grammar allows.
    const JUDGE_CTX: u32 = 4096;

    /// A GGUF judge run in-process. The model is loaded at the first window it judges, so a run served wholly from
    /// the cache loads nothing.
    pub struct LlamaJudge {
        path: PathBuf,
        id: String,
        opts: LoadOptions,
        loaded: Option<LlamaBackend>,
    }

    impl LlamaJudge {
        /// Checks the GGUF (before llama.cpp sees it) and names it for the cache: `gguf:FILE_NAME:SIZE`.
        ///
        /// # Errors
        /// When the file is missing, not GGUF or truncated (one line naming it).
        pub fn new(path: &Path, threads: Option<u32>, gpu_layers: Option<u32>, verbose: u8) -> Result<Self> {
            let info = crate::gguf::inspect(path).with_context(|| format!("--judge '{}'", path.display()))?;
            let name = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into());
            Ok(LlamaJudge {
                path: path.to_path_buf(),
                id: format!("gguf:{name}:{}", info.file_size),
                opts: LoadOptions {
                    n_ctx: None,
                    default_ctx: JUDGE_CTX,
                    threads,
                    gpu_layers,
                    chat_template: None,
                    verbose,
                    n_seq: 1,
                },
                loaded: None,
            })
        }
    }

    impl JudgeEngine for LlamaJudge {
        fn model_id(&self) -> String {
            self.id.clone()
        }

        fn complete(&mut self, system: &str, user: &str) -> Result<String> {
            if self.loaded.is_none() {
                self.loaded = Some(LlamaBackend::load(&self.path, &self.opts)?);
            }
            let Some(model) = self.loaded.as_mut() else { unreachable!("loaded just above") };
            let prompt = model.render(&messages(system, user))?;
            model.generate_with_grammar(&prompt, &judge::grammar(), judge::MAX_OUTPUT_TOKENS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_flavor_constrains_the_answer() {
        let l = JudgeFlavor::LlamaServer.constraint();
        assert_eq!(l["grammar"], Value::String(judge::grammar()));
        let o = JudgeFlavor::Openai.constraint();
        assert_eq!(o["response_format"]["json_schema"]["schema"], judge::schema());
        assert!(o.contains_key("grammar"), "llama-cpp-python reads `grammar`");
        assert_eq!(JudgeFlavor::Vllm.constraint()["guided_json"], judge::schema());
        assert_eq!(JudgeFlavor::Vllm.http(), Flavor::Openai);
    }
}
