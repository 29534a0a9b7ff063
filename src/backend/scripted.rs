//! A scripted backend: replies from a fixed list, one token per whitespace-separated word. It drives the
//! conversation driver's unit tests (memory window, budgets, stop rules) deterministically and fast. It is never a
//! stand-in for testing a real backend: those tests use llama.cpp with the real small models.

use std::sync::atomic::Ordering;

use anyhow::{bail, Result};

use super::{find_stop, Backend, GenRequest, Generation, Interrupted};
use crate::chat_template::{ChatMessage, ChatTemplate};
use crate::transcript::{ModelRecord, StopReason};

/// A backend that answers with scripted replies, in order, cycling.
pub struct Scripted {
    replies: Vec<String>,
    next: usize,
    n_ctx: u32,
    template: ChatTemplate,
    /// Every prompt it was asked to generate from, in order.
    pub prompts: Vec<String>,
}

impl Scripted {
    /// A scripted backend with a ChatML template.
    ///
    /// # Panics
    /// Never: the built-in template compiles.
    #[must_use]
    pub fn new(replies: &[&str], n_ctx: u32) -> Self {
        let template = ChatTemplate::new(crate::chat_template::builtin("chatml").unwrap_or_default(), "chatml", "", "")
            .expect("the built-in ChatML template compiles");
        Scripted {
            replies: replies.iter().map(|s| (*s).to_string()).collect(),
            next: 0,
            n_ctx,
            template,
            prompts: vec![],
        }
    }
}

impl Backend for Scripted {
    fn describe(&self) -> ModelRecord {
        ModelRecord {
            path: "scripted".into(),
            file_size: None,
            name: None,
            architecture: None,
            n_ctx: self.n_ctx,
            chat_template_source: self.template.source.clone(),
        }
    }
    fn name(&self) -> String {
        "scripted".into()
    }
    fn n_ctx(&self) -> u32 {
        self.n_ctx
    }
    fn render(&self, messages: &[ChatMessage]) -> Result<String> {
        self.template.render(messages, true)
    }
    fn count_tokens(&self, prompt: &str) -> Result<u32> {
        Ok(u32::try_from(prompt.split_whitespace().count())?)
    }
    fn reset(&mut self) {
        self.next = 0;
    }
    fn generate(&mut self, req: &GenRequest<'_>, on_piece: &mut dyn FnMut(&str)) -> Result<Generation> {
        if req.cancel.load(Ordering::Relaxed) {
            return Err(Interrupted.into());
        }
        if self.replies.is_empty() {
            bail!("scripted backend has no replies");
        }
        self.prompts.push(req.prompt.to_string());
        let reply = self.replies[self.next % self.replies.len()].clone();
        self.next += 1;
        let mut text = String::new();
        let mut tokens = 0;
        let mut stop_reason = StopReason::Eos;
        for word in reply.split_inclusive(' ') {
            if tokens == req.max_tokens {
                stop_reason = StopReason::MaxTokens;
                break;
            }
            tokens += 1;
            let start = text.len();
            text.push_str(word);
            if let Some(at) = find_stop(&text, &req.sampler.stop, start) {
                text.truncate(at);
                on_piece(&text[start.min(at)..]);
                stop_reason = StopReason::StopString;
                break;
            }
            on_piece(word);
        }
        let prompt_tokens = self.count_tokens(req.prompt)?;
        Ok(Generation {
            text,
            tokens,
            prompt_tokens,
            prompt_tokens_evaluated: prompt_tokens,
            stop_reason,
            prompt_ms: 0.0,
            generation_ms: 1.0,
            endpoint: None,
        })
    }
}
