//! A fleet: one role served by several HTTP endpoints (vLLM/aphrodite deployments, llama-server replicas behind
//! no balancer). This module is the pure core of that: which endpoint a new request goes to, when an endpoint is
//! taken out and probed again, whether all endpoints of a role serve the same model, what an endpoints file says,
//! and how an endpoint is named in transcripts and `run.json`. It opens no socket and reads no clock: callers pass
//! `now`, so every rule here is unit-tested without a server.
//!
//! * **Choice.** A request goes to the healthy endpoint with the fewest requests in flight relative to its weight
//!   (`in_flight / weight`, compared exactly as `a.in_flight * b.weight < b.in_flight * a.weight`); ties go to the
//!   endpoint listed first. An optional per-endpoint cap is never exceeded; when every endpoint is full or down,
//!   [`Fleet::acquire`] returns `None` and the caller waits.
//! * **Health.** Each failure (refused connection, 5xx, cut-off stream) counts; after [`FAILURES_TO_EJECT`] in a row
//!   the endpoint is out. It is probed again after a backoff that doubles per failed probe, capped at
//!   [`MAX_BACKOFF`]: at most one request at a time is sent to a down endpoint whose probe time has come, and a
//!   success puts it back with its counts reset. A turn cut off on one endpoint is retried by the client on the next
//!   one [`Fleet::acquire`] gives, continuing from the text received (as the single-server retry does).
//! * **Names.** An endpoint is recorded as `scheme://host:port` built from the parsed URL, so user names, passwords,
//!   paths and queries never reach a file.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};

use super::Flavor;

/// Failures in a row that take an endpoint out.
pub const FAILURES_TO_EJECT: u32 = 2;
/// The first probe's delay after an endpoint is taken out.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// The longest delay between probes of a down endpoint.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The largest endpoints file read, in bytes (a fleet of thousands of lines fits many times over).
pub const MAX_ENDPOINTS_FILE: u64 = 1 << 20;

/// One line of an endpoints file, or one `--url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSpec {
    /// The URL as given (may hold credentials: never print or record it; use [`endpoint_label`]).
    pub url: String,
    /// The protocol, when the line names one; otherwise the role's `--flavor`.
    pub flavor: Option<Flavor>,
    /// Relative share of requests (≥ 1; default 1).
    pub weight: u32,
}

/// `scheme://host:port` of a URL — the only form of an endpoint that is shown or stored. The port is the explicit
/// one or the scheme's default; credentials, path and query are dropped.
///
/// # Errors
/// When the text is not an absolute `http`/`https` URL with a host.
pub fn endpoint_label(url: &str) -> Result<String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| anyhow!("not a URL ({e}); write it as http://HOST:PORT"))?;
    let scheme = parsed.scheme();
    if scheme != "http" && scheme != "https" {
        bail!("scheme `{scheme}:` is not served; write the endpoint as http://HOST:PORT or https://HOST:PORT");
    }
    let host = parsed.host_str().ok_or_else(|| anyhow!("the URL has no host; write it as http://HOST:PORT"))?;
    let port = parsed.port_or_known_default().unwrap_or(80);
    // IPv6 hosts come back bracketed from `host_str`, so the label stays a valid URL.
    Ok(format!("{scheme}://{host}:{port}"))
}

/// Parses an endpoints file: one `URL [flavor] [weight]` per line; blank lines and `#` comments (whole-line or
/// trailing) are skipped. Pure; `file` only names the file in errors.
///
/// # Errors
/// A line with a bad URL, an unknown flavor, a weight that is not a whole number ≥ 1, extra fields, or a file with
/// no endpoint at all; each message names the file and line and says how to fix it.
pub fn parse_endpoints(text: &str, file: &str) -> Result<Vec<EndpointSpec>> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut fields = line.split_whitespace();
        let url = fields.next().unwrap_or_default();
        endpoint_label(url).map_err(|e| anyhow!("{file}:{line_no}: {e}"))?;
        let mut flavor = None;
        let mut weight = None;
        for field in fields {
            if let Ok(w) = field.parse::<u64>() {
                if weight.is_some() || w == 0 || w > u64::from(u32::MAX) {
                    bail!("{file}:{line_no}: weight `{field}` must be given once, as a whole number from 1");
                }
                weight = u32::try_from(w).ok();
            } else if let Ok(f) = <Flavor as clap::ValueEnum>::from_str(field, false) {
                if flavor.is_some() {
                    bail!("{file}:{line_no}: two flavors on one line; write `URL [flavor] [weight]`");
                }
                flavor = Some(f);
            } else {
                bail!(
                    "{file}:{line_no}: `{field}` is neither a flavor (llama-server, koboldcpp, openai) nor a weight; \
                     write `URL [flavor] [weight]`"
                );
            }
        }
        out.push(EndpointSpec { url: url.to_owned(), flavor, weight: weight.unwrap_or(1) });
    }
    if out.is_empty() {
        bail!("{file}: no endpoint in the file; write one `URL [flavor] [weight]` per line");
    }
    Ok(out)
}

/// Reads an endpoints file (at most [`MAX_ENDPOINTS_FILE`] bytes) and parses it with [`parse_endpoints`]; `flag`
/// names the option that gave the file, for errors.
///
/// # Errors
/// When the file cannot be read, is larger than the bound, is not UTF-8, or does not parse.
pub fn read_endpoints(path: &std::path::Path, flag: &str) -> Result<Vec<EndpointSpec>> {
    let name = path.display().to_string();
    let text = crate::config::read_bounded_text(path, MAX_ENDPOINTS_FILE).map_err(|e| {
        if crate::config::is_not_found(&e) {
            anyhow!("{flag} {name}: no such file; give the path of a file that lists the servers")
        } else {
            anyhow!("{flag} {name}: {e:#}; list one `URL [flavor] [weight]` per line")
        }
    })?;
    parse_endpoints(&text, &name)
}

/// What an endpoint says it serves, gathered at start (model name from `/props` or `/v1/models`, context size).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedModel {
    /// The endpoint's label ([`endpoint_label`]).
    pub endpoint: String,
    /// The served model's name, where the flavor reports one.
    pub model: Option<String>,
    /// The context size the engine reports, where it reports one.
    pub n_ctx: Option<u32>,
}

/// The name two endpoints are compared by: what the engine reports, except that a file path (llama-server's
/// `model_path`, llama-cpp-python's model id) is compared by its file name, since replicas on different hosts keep
/// the same GGUF in different folders. Pure.
#[must_use]
pub fn model_key(reported: &str) -> &str {
    let looks_like_path = reported.starts_with('/') || reported.starts_with("./") || reported.ends_with(".gguf");
    if looks_like_path {
        reported.rsplit(['/', '\\']).next().unwrap_or(reported)
    } else {
        reported
    }
}

/// Checks that every endpoint of a role serves the same model with the same context size; the first endpoint is
/// the reference. A field an engine does not report is not compared. Pure.
///
/// # Errors
/// One line naming the role, the endpoint that differs, and both values.
pub fn check_consistent(role: &str, served: &[ServedModel]) -> Result<()> {
    let Some(first) = served.first() else { return Ok(()) };
    for other in &served[1..] {
        if let (Some(a), Some(b)) = (&first.model, &other.model) {
            if model_key(a) != model_key(b) {
                bail!(
                    "{role} endpoint {} serves model `{b}`, but {} serves `{a}`; every endpoint of a role must serve \
                     the same model — remove it from the list or point it at the same model",
                    other.endpoint,
                    first.endpoint
                );
            }
        }
        if let (Some(a), Some(b)) = (first.n_ctx, other.n_ctx) {
            if a != b {
                bail!(
                    "{role} endpoint {} has a context of {b} tokens, but {} has {a}; start every endpoint of a role \
                     with the same context size",
                    other.endpoint,
                    first.endpoint
                );
            }
        }
    }
    Ok(())
}

/// Where one endpoint stands.
#[derive(Debug, Clone)]
struct Slot {
    weight: u32,
    in_flight: u32,
    failures: u32,
    /// `Some(t)`: out, next probe allowed at `t`.
    down_until: Option<Instant>,
    /// The delay before the next probe after another failure.
    backoff: Duration,
    /// A probe is in flight (only one at a time).
    probing: bool,
}

/// The choice of endpoint for each request of one role, with health. Pure state: `now` comes from the caller.
/// Share it between workers behind a `Mutex`.
#[derive(Debug, Clone)]
pub struct Fleet {
    slots: Vec<Slot>,
    cap: Option<u32>,
}

/// One request's hold on an endpoint; give it back with [`Fleet::release`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Index into the endpoint list.
    pub index: usize,
    /// The request is a probe of a down endpoint.
    pub probe: bool,
}

impl Fleet {
    /// A fleet over endpoints with these weights (each ≥ 1), at most `cap` requests in flight on each.
    #[must_use]
    pub fn new(weights: &[u32], cap: Option<u32>) -> Self {
        let slots = weights
            .iter()
            .map(|&w| Slot {
                weight: w.max(1),
                in_flight: 0,
                failures: 0,
                down_until: None,
                backoff: FIRST_BACKOFF,
                probing: false,
            })
            .collect();
        Fleet { slots, cap }
    }

    /// Number of endpoints.
    #[must_use]
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the fleet has no endpoint.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Whether endpoint `i` is in service (not taken out).
    #[must_use]
    pub fn is_up(&self, i: usize) -> bool {
        self.slots.get(i).is_some_and(|s| s.down_until.is_none())
    }

    /// Requests in flight on endpoint `i`.
    #[must_use]
    pub fn in_flight(&self, i: usize) -> u32 {
        self.slots.get(i).map_or(0, |s| s.in_flight)
    }

    /// Picks an endpoint for a new request: a down endpoint whose probe is due comes first (so a restarted
    /// server is found as soon as its backoff ends), then the healthy one with the fewest in flight per weight.
    /// `None` when every endpoint is full or down.
    pub fn acquire(&mut self, now: Instant) -> Option<Lease> {
        self.acquire_avoiding(now, None)
    }

    /// As [`Fleet::acquire`], but endpoint `avoid` (the one a request just failed on) is taken only when no other
    /// endpoint can be: a retry goes to another server whenever there is one.
    pub fn acquire_avoiding(&mut self, now: Instant, avoid: Option<usize>) -> Option<Lease> {
        let cap = self.cap.unwrap_or(u32::MAX);
        let probe_due = |s: &Slot| !s.probing && s.in_flight < cap && s.down_until.is_some_and(|t| now >= t);
        let healthy = |s: &Slot| s.down_until.is_none() && s.in_flight < cap;
        let others = |i: usize| Some(i) != avoid;
        let probe = self.slots.iter().enumerate().position(|(i, s)| others(i) && probe_due(s));
        let probe = probe.or_else(|| {
            let any_other = self.slots.iter().enumerate().any(|(i, s)| others(i) && healthy(s));
            if any_other {
                None
            } else {
                self.slots.iter().position(probe_due)
            }
        });
        if let Some(i) = probe {
            let s = &mut self.slots[i];
            s.probing = true;
            s.in_flight += 1;
            return Some(Lease { index: i, probe: true });
        }
        let mut best: Option<usize> = None;
        for pass_others_only in [true, false] {
            for (i, s) in self.slots.iter().enumerate() {
                if !healthy(s) || (pass_others_only && !others(i)) {
                    continue;
                }
                let better = best.is_none_or(|b| {
                    let o = &self.slots[b];
                    u64::from(s.in_flight) * u64::from(o.weight) < u64::from(o.in_flight) * u64::from(s.weight)
                });
                if better {
                    best = Some(i);
                }
            }
            if best.is_some() {
                break;
            }
        }
        let i = best?;
        self.slots[i].in_flight += 1;
        Some(Lease { index: i, probe: false })
    }

    /// For a request that has nowhere else to go because **every** endpoint is out: a plain request to the one
    /// whose probe comes due first (preferring one other than `avoid`), so that a fleet that is down as a whole
    /// behaves like one server being retried with backoff. `None` while some endpoint is in service (wait for it),
    /// or when every endpoint is at its cap.
    pub fn acquire_when_all_down(&mut self, avoid: Option<usize>) -> Option<Lease> {
        if self.slots.iter().any(|s| s.down_until.is_none()) {
            return None;
        }
        let cap = self.cap.unwrap_or(u32::MAX);
        let i = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.in_flight < cap)
            .min_by_key(|(i, s)| (Some(*i) == avoid, s.down_until))
            .map(|(i, _)| i)?;
        self.slots[i].in_flight += 1;
        Some(Lease { index: i, probe: false })
    }

    /// Whether an endpoint other than `i` is in service: a request that failed on `i` can go there at once,
    /// without waiting out a backoff.
    #[must_use]
    pub fn other_up(&self, i: usize) -> bool {
        self.slots.iter().enumerate().any(|(j, s)| j != i && s.down_until.is_none())
    }

    /// Gives a lease back with its outcome: `ok` puts the endpoint (back) in service; a failure counts, and the
    /// [`FAILURES_TO_EJECT`]th in a row, or any failed probe, takes it out until `now` + backoff.
    pub fn release(&mut self, lease: Lease, ok: bool, now: Instant) {
        let Some(s) = self.slots.get_mut(lease.index) else { return };
        s.in_flight = s.in_flight.saturating_sub(1);
        if lease.probe {
            s.probing = false;
        }
        if ok {
            s.failures = 0;
            s.down_until = None;
            s.backoff = FIRST_BACKOFF;
            return;
        }
        s.failures += 1;
        if lease.probe {
            s.backoff = (s.backoff * 2).min(MAX_BACKOFF);
            s.down_until = Some(now + s.backoff);
        } else if s.down_until.is_none() && s.failures >= FAILURES_TO_EJECT {
            s.down_until = Some(now + s.backoff);
        }
        // A request that fails once the endpoint is out (leased before, or while the whole fleet was down) says
        // nothing new: only a failed probe lengthens the wait.
    }

    /// The earliest time a down endpoint may be probed (for a caller with nothing to acquire to sleep until).
    #[must_use]
    pub fn next_probe(&self) -> Option<Instant> {
        self.slots.iter().filter(|s| !s.probing).filter_map(|s| s.down_until).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_keep_scheme_host_port_and_drop_credentials_path_query() {
        assert_eq!(endpoint_label("http://u:pw@10.0.0.2:8000/v1?k=s").unwrap(), "http://10.0.0.2:8000");
        assert_eq!(endpoint_label("https://api.example.com").unwrap(), "https://api.example.com:443");
        assert_eq!(endpoint_label("http://[::1]:9/").unwrap(), "http://[::1]:9");
        assert!(endpoint_label("ftp://h:1").unwrap_err().to_string().contains("http://HOST:PORT"));
        assert!(endpoint_label("h:1:2").is_err());
    }

    #[test]
    fn endpoints_file_reads_url_flavor_weight_and_comments() {
        let text = "# the fleet\nhttp://a:1\n\n  http://b:2 openai 3  # big GPU\nhttp://c:3 2 llama-server\n";
        let e = parse_endpoints(text, "f.txt").unwrap();
        assert_eq!(e.len(), 3);
        assert_eq!(e[0], EndpointSpec { url: "http://a:1".into(), flavor: None, weight: 1 });
        assert_eq!(e[1].flavor, Some(Flavor::Openai));
        assert_eq!(e[1].weight, 3);
        assert_eq!((e[2].flavor, e[2].weight), (Some(Flavor::LlamaServer), 2));
    }

    #[test]
    fn endpoints_file_errors_name_file_and_line() {
        let e = parse_endpoints("http://a:1\nhttp://b:2 vllm\n", "f.txt").unwrap_err().to_string();
        assert!(e.starts_with("f.txt:2:") && e.contains("`vllm`"), "{e}");
        let e = parse_endpoints("http://a:1 0\n", "f.txt").unwrap_err().to_string();
        assert!(e.starts_with("f.txt:1:") && e.contains("weight"), "{e}");
        let e = parse_endpoints("# only\n\n", "f.txt").unwrap_err().to_string();
        assert!(e.contains("no endpoint"), "{e}");
        let e = parse_endpoints("not a url\n", "f.txt").unwrap_err().to_string();
        assert!(e.starts_with("f.txt:1:"), "{e}");
    }

    #[test]
    fn fewest_in_flight_per_weight_never_past_the_cap() {
        let now = Instant::now();
        let mut f = Fleet::new(&[1, 1, 2], Some(2));
        let picks: Vec<usize> = (0..6).map(|_| f.acquire(now).unwrap().index).collect();
        // Ties go to the first listed; endpoint 2 (weight 2) takes two before the others take a second.
        assert_eq!(picks, [0, 1, 2, 2, 0, 1]);
        assert_eq!(f.acquire(now), None, "every endpoint at its cap of 2");
        f.release(Lease { index: 1, probe: false }, true, now);
        assert_eq!(f.acquire(now).unwrap().index, 1);
    }

    #[test]
    fn failing_endpoint_is_taken_out_probed_with_capped_backoff_and_put_back() {
        let t0 = Instant::now();
        let mut f = Fleet::new(&[1, 1], None);
        for _ in 0..FAILURES_TO_EJECT {
            let l = Lease { index: 0, probe: false };
            f.slots[0].in_flight += 1;
            f.release(l, false, t0);
        }
        assert!(!f.is_up(0));
        // While it is out, every request goes to the survivor.
        let picks: Vec<usize> = (0..3).map(|_| f.acquire(t0).unwrap().index).collect();
        assert_eq!(picks, [1, 1, 1]);
        // Its probe comes due after the first backoff; one probe at a time.
        let t1 = t0 + FIRST_BACKOFF;
        let probe = f.acquire(t1).unwrap();
        assert_eq!(probe, Lease { index: 0, probe: true });
        assert_eq!(f.acquire(t1).unwrap().index, 1);
        // A failed probe doubles the wait, up to the cap.
        f.release(probe, false, t1);
        assert_eq!(f.next_probe(), Some(t1 + FIRST_BACKOFF * 2));
        let mut t = t1;
        for _ in 0..20 {
            t = f.next_probe().unwrap();
            let p = f.acquire(t).unwrap();
            assert!(p.probe);
            f.release(p, false, t);
        }
        assert_eq!(f.next_probe(), Some(t + MAX_BACKOFF));
        // A probe that answers puts it back in service.
        let t = t + MAX_BACKOFF;
        let p = f.acquire(t).unwrap();
        f.release(p, true, t);
        assert!(f.is_up(0));
        assert_eq!(f.next_probe(), None);
    }

    #[test]
    fn requests_that_fail_after_the_endpoint_is_out_do_not_delay_its_probe() {
        // Six requests in flight on an endpoint that dies: two take it out, the other four fail after. Only probes
        // extend the wait; stragglers leased before it went out must not push its first probe towards the cap.
        let t0 = Instant::now();
        let mut f = Fleet::new(&[1, 1], None);
        f.slots[0].in_flight = 6;
        for _ in 0..6 {
            f.release(Lease { index: 0, probe: false }, false, t0);
        }
        assert!(!f.is_up(0));
        assert_eq!(f.next_probe(), Some(t0 + FIRST_BACKOFF), "probed after the first backoff");
    }

    #[test]
    fn one_failure_then_success_keeps_endpoint_in() {
        let t0 = Instant::now();
        let mut f = Fleet::new(&[1], None);
        let l = f.acquire(t0).unwrap();
        f.release(l, false, t0);
        assert!(f.is_up(0));
        let l = f.acquire(t0).unwrap();
        f.release(l, true, t0);
        let l = f.acquire(t0).unwrap();
        f.release(l, false, t0);
        assert!(f.is_up(0), "failures must be in a row to take it out");
    }

    #[test]
    fn endpoints_serving_different_models_or_contexts_are_refused_by_name() {
        let s = |e: &str, m: &str, c| ServedModel { endpoint: e.into(), model: Some(m.into()), n_ctx: Some(c) };
        check_consistent("assistant", &[s("http://a:1", "m", 512), s("http://b:2", "m", 512)]).unwrap();
        let e = check_consistent("assistant", &[s("http://a:1", "m", 512), s("http://b:2", "other", 512)])
            .unwrap_err()
            .to_string();
        assert!(e.contains("http://b:2") && e.contains("`other`") && !e.contains('\n'), "{e}");
        let e =
            check_consistent("user", &[s("http://a:1", "m", 512), s("http://b:2", "m", 1024)]).unwrap_err().to_string();
        assert!(e.contains("http://b:2") && e.contains("1024"), "{e}");
        let unknown = ServedModel { endpoint: "http://c:3".into(), model: None, n_ctx: None };
        check_consistent("user", &[s("http://a:1", "m", 512), unknown]).unwrap();
    }

    #[test]
    fn a_retry_avoids_the_endpoint_that_failed_while_another_is_in_service() {
        let now = Instant::now();
        let mut f = Fleet::new(&[1, 1, 1], None);
        let picks: Vec<usize> = (0..3).map(|_| f.acquire(now).unwrap().index).collect();
        assert_eq!(picks, [0, 1, 2]);
        // The request on 1 fails (one failure: 1 stays in service and now has the fewest in flight).
        f.release(Lease { index: 1, probe: false }, false, now);
        assert!(f.is_up(1) && f.other_up(1));
        assert_eq!(f.acquire(now).unwrap().index, 1, "a new request may go there");
        f.release(Lease { index: 1, probe: false }, true, now);
        assert_eq!(f.acquire_avoiding(now, Some(1)).unwrap().index, 0, "the retry goes elsewhere");
        // With one endpoint, the retry goes back to it.
        let mut one = Fleet::new(&[1], None);
        assert_eq!(one.acquire_avoiding(now, Some(0)).unwrap().index, 0);
        assert!(!one.other_up(0));
    }

    #[test]
    fn a_fleet_down_as_a_whole_is_retried_like_one_server() {
        let t0 = Instant::now();
        let mut f = Fleet::new(&[1, 1], None);
        assert_eq!(f.acquire_when_all_down(None), None, "nothing to fall back to while both are up");
        for i in [0, 1, 0, 1] {
            f.slots[i].in_flight += 1;
            f.release(Lease { index: i, probe: false }, false, t0);
        }
        assert!(!f.is_up(0) && !f.is_up(1));
        assert_eq!(f.acquire(t0), None, "no probe is due yet");
        let l = f.acquire_when_all_down(Some(0)).unwrap();
        assert_eq!(l, Lease { index: 1, probe: false }, "the other one, as a plain request");
        f.release(l, true, t0);
        assert!(f.is_up(1), "an answer puts it back");
        assert_eq!(f.acquire_when_all_down(None), None);
    }

    #[test]
    fn a_due_probe_is_not_sent_to_the_endpoint_a_retry_avoids_when_another_is_up() {
        let t0 = Instant::now();
        let mut f = Fleet::new(&[1, 1], None);
        for _ in 0..FAILURES_TO_EJECT {
            f.slots[0].in_flight += 1;
            f.release(Lease { index: 0, probe: false }, false, t0);
        }
        let t1 = t0 + FIRST_BACKOFF;
        assert_eq!(f.acquire_avoiding(t1, Some(0)), Some(Lease { index: 1, probe: false }));
        assert_eq!(f.acquire_avoiding(t1, None), Some(Lease { index: 0, probe: true }));
    }

    #[test]
    fn model_paths_compare_by_file_name_other_names_in_full() {
        assert_eq!(model_key("/models/a/SmolLM2.Q4_1.gguf"), "SmolLM2.Q4_1.gguf");
        assert_eq!(model_key("/srv/SmolLM2.Q4_1.gguf"), model_key("/data/x/SmolLM2.Q4_1.gguf"));
        assert_eq!(model_key("Qwen/Qwen2.5-7B-Instruct"), "Qwen/Qwen2.5-7B-Instruct");
        assert_eq!(model_key("koboldcpp/fake"), "koboldcpp/fake");
        let s = |e: &str, m: &str| ServedModel { endpoint: e.into(), model: Some(m.into()), n_ctx: None };
        check_consistent("user", &[s("http://a:1", "/a/m.gguf"), s("http://b:2", "/b/m.gguf")]).unwrap();
        assert!(check_consistent("user", &[s("http://a:1", "/a/m.gguf"), s("http://b:2", "/a/n.gguf")]).is_err());
    }
}
