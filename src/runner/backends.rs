//! Each role's backend, opened once: the one place that matches on [`BackendSpec`], builds llama.cpp's
//! [`LoadOptions`] and the HTTP options, and keeps loaded models across the cells of a sweep.
//!
//! A role's [`OpenBackend`] is either an in-process model (borrowed from the [`Backends`] cache, reloaded only when its
//! options change) or an HTTP connection. Opening an HTTP role connects to every endpoint of its fleet and checks
//! that they serve the same model with the same context size, so an unreachable or mismatched server fails here,
//! before any transcript is written.

use anyhow::{anyhow, Result};

use crate::backend::http::{check_sampler, ApiKey, HttpBackend, HttpOptions};
use crate::backend::Backend;
use crate::settings::{BackendSpec, Console, Role, Settings};

#[cfg(feature = "llama")]
use crate::backend::llama::{LlamaBackend, LoadOptions};

/// One role's opened backend.
pub enum OpenBackend<'a> {
    /// An in-process model, kept in [`Backends`].
    #[cfg(feature = "llama")]
    Llama(&'a mut LlamaBackend),
    /// An HTTP server or fleet ([`HttpBackend::replica`] gives the HTTP workers one each). It borrows nothing (the
    /// marker keeps the lifetime when the in-process variant is compiled out).
    Http(Box<HttpBackend>, std::marker::PhantomData<&'a ()>),
}

impl OpenBackend<'_> {
    /// The backend, for the conversation loop.
    pub fn backend(&mut self) -> &mut dyn Backend {
        match self {
            #[cfg(feature = "llama")]
            OpenBackend::Llama(m) => &mut **m,
            OpenBackend::Http(b, _) => &mut **b,
        }
    }
}

/// In-process models kept loaded between jobs (the cells of a sweep), one per role.
#[derive(Default)]
pub struct Backends {
    #[cfg(feature = "llama")]
    llama: [Option<(String, LlamaBackend)>; 2],
}

impl Backends {
    /// Opens both roles' backends for `settings` (models already resolved to files), with room for `parallel`
    /// conversations at once in-process. Sampler settings an HTTP engine cannot honour are warned about here.
    ///
    /// # Errors
    /// A model that does not load, KV caches that would not fit in memory, a server that cannot be reached, or a
    /// sampler setting the engine cannot express.
    pub fn pair(
        &mut self,
        console: &Console,
        s: &Settings,
        parallel: u32,
    ) -> Result<(OpenBackend<'_>, OpenBackend<'_>)> {
        #[cfg(feature = "llama")]
        {
            let both_llama = !s.assistant.backend.is_http() && !s.user.backend.is_http();
            if both_llama {
                check_parallel_fits(s, parallel)?;
            }
            let [a, u] = &mut self.llama;
            let a = open(console, s, Role::Assistant, a, parallel)?;
            let u = open(console, s, Role::User, u, parallel)?;
            Ok((a, u))
        }
        #[cfg(not(feature = "llama"))]
        {
            let _ = (console, parallel);
            Ok((open_http(s, Role::Assistant, true)?, open_http(s, Role::User, true)?))
        }
    }
}

#[cfg(feature = "llama")]
fn open<'a>(
    console: &Console,
    s: &Settings,
    role: Role,
    slot: &'a mut Option<(String, LlamaBackend)>,
    n_seq: u32,
) -> Result<OpenBackend<'a>> {
    if s.role(role).backend.is_http() {
        return open_http(s, role, true);
    }
    let path = s
        .role(role)
        .model
        .as_deref()
        .ok_or_else(|| anyhow!("no {0} model: pass --{0}-model PATH or set `model` under [{0}]", role.as_str()))?;
    let options = load_options(console, s, role, n_seq);
    let key = format!("{path:?}|{options:?}");
    if slot.as_ref().is_none_or(|(k, _)| *k != key) {
        *slot = None;
        *slot = Some((key, LlamaBackend::load(path, &options)?));
    }
    let (_, model) = slot.as_mut().ok_or_else(|| anyhow!("the {} model vanished", role.as_str()))?;
    Ok(OpenBackend::Llama(model))
}

#[cfg(feature = "llama")]
fn load_options(console: &Console, s: &Settings, role: Role, n_seq: u32) -> LoadOptions {
    let m = s.model_config(role);
    LoadOptions {
        n_ctx: m.n_ctx,
        default_ctx: s.default_ctx(role),
        threads: m.threads,
        gpu_layers: m.gpu_layers,
        chat_template: m.chat_template.clone(),
        verbose: console.verbose,
        n_seq,
    }
}

/// What two jobs must have in common to share one set of slots and one pair of opened backends: each role's
/// backend, model file, `[assistant]`/`[user]` model settings and context size, and the HTTP settings. Everything
/// else (sampler, scenario, budget below the context size, seeds) is per conversation.
#[must_use]
pub fn share_key(s: &Settings) -> String {
    let role =
        |r: Role| format!("{:?}|{:?}|{:?}|{}", s.role(r).backend, s.role(r).model, s.model_config(r), s.default_ctx(r));
    format!("{}||{}||{:?}", role(Role::Assistant), role(Role::User), s.http)
}

/// Opens an HTTP role's connection (`warn`: print what its engine will not honour): probes every endpoint of its
/// fleet and checks that they serve the same model (name from `/props`, `/v1/models` or koboldcpp's model route)
/// and context size.
///
/// # Errors
/// A server that cannot be reached, one that serves another model or context size than the first (named), or a
/// sampler setting an engine cannot express.
pub fn open_http<'a>(s: &Settings, role: Role, warn: bool) -> Result<OpenBackend<'a>> {
    let BackendSpec::Http { endpoints, flavor } = &s.role(role).backend else {
        #[cfg(not(feature = "llama"))]
        anyhow::bail!(
            "this parrot was built without the `llama` feature: rebuild with default features, or use --backend http"
        );
        #[cfg(feature = "llama")]
        return Err(anyhow!("the {} role is not an HTTP role", role.as_str()));
    };
    let mut flavors: Vec<_> = endpoints.iter().filter_map(|e| e.flavor).collect();
    flavors.dedup();
    let at = s.role(role).backend.labels().join(", ");
    for f in flavors.iter().copied().chain(std::iter::once(*flavor).filter(|_| flavors.is_empty())) {
        let warnings =
            check_sampler(f, s.sampler(role)).map_err(|e| anyhow!("{} role on {f} at {at}: {e:#}", role.as_str()))?;
        if warn {
            for w in warnings {
                eprintln!("parrot: warning: {} role on {f}: {w}", role.as_str());
            }
        }
    }
    let m = s.model_config(role);
    let opts = HttpOptions {
        api_key: ApiKey::new(std::env::var(&s.http.api_key_env).ok()),
        n_ctx: m.n_ctx,
        chat_template: m.chat_template.clone(),
        gguf: s.role(role).model.clone(),
        timeout: s.http.timeout,
        retries: s.http.retries,
        backoff: s.http.backoff,
        turn_deadline: s.http.turn_deadline,
        endpoints: endpoints.clone(),
        cap: s.http.endpoint_cap,
        role: role.as_str(),
        ..HttpOptions::new(String::new(), *flavor)
    };
    Ok(OpenBackend::Http(Box::new(HttpBackend::connect(opts)?), std::marker::PhantomData))
}

/// Turns registry names into files (fetching them on first use) and checks every GGUF header, before anything is
/// loaded. Returns the settings with file paths.
///
/// # Errors
/// An unknown name (with the known ones), a failed download, a missing, foreign or truncated file.
pub fn resolve_models(console: &Console, s: &Settings) -> Result<Settings> {
    let opts = crate::models::ResolveOptions { quiet: console.quiet, ..Default::default() };
    let mut s = s.clone();
    for role in [&mut s.assistant, &mut s.user] {
        if let Some(model) = &role.model {
            let path = crate::models::resolve_model(&model.to_string_lossy(), &opts)?;
            crate::gguf::inspect(&path)?;
            role.model = Some(path);
        }
    }
    Ok(s)
}

/// Refuses a `--parallel` whose KV caches would not fit in the memory available, naming the largest that does.
#[cfg(feature = "llama")]
fn check_parallel_fits(s: &Settings, parallel: u32) -> Result<()> {
    let per_conversation = |role: Role| -> Result<u64> {
        let Some(path) = s.role(role).model.as_deref() else { return Ok(0) };
        let info = crate::gguf::inspect(path)?;
        let n_ctx = s.model_config(role).n_ctx.unwrap_or(s.default_ctx(role));
        let ctx = u64::from(n_ctx.min(info.context_length().unwrap_or(u32::MAX)));
        // Saturating: the GGUF's dimensions are input; an estimate past u64 is simply too large.
        Ok(ctx.saturating_mul(info.kv_bytes_per_token().unwrap_or(0)))
    };
    let need = per_conversation(Role::Assistant)?.saturating_add(per_conversation(Role::User)?);
    let Some(available) = crate::output::memory_available() else { return Ok(()) };
    let budget = available / 10 * 8;
    let all = need.saturating_mul(u64::from(parallel));
    if need > 0 && all > budget {
        let fits = budget / need;
        let gib = |b: u64| b as f64 / f64::from(1u32 << 30);
        let fix = if fits == 0 {
            "not even one conversation fits: lower n_ctx".to_string()
        } else {
            format!("the largest --parallel that fits is {fits} (or lower n_ctx)")
        };
        anyhow::bail!(
            "--parallel {parallel} needs {:.1} GiB of KV cache ({:.2} GiB per conversation) but only {:.1} GiB of \
             memory is available: {fix}",
            gib(all),
            gib(need),
            gib(available)
        );
    }
    Ok(())
}
