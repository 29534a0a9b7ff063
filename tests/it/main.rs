//! The one integration-test binary: each module runs the real `parrot` binary (and, for `run`, the real small
//! models installed by `scripts/fetch-test-models.sh`).

mod analyze;
mod common;
// The run folder's guarantees: lock, durable writes, resume (after --force, after error, again), open files.
mod folder;
// Fleets: failover to another endpoint, model mismatch refused, three real servers with one killed and restarted.
mod fleet;
// `--backend http`: llama-server and koboldcpp replayed on loopback (every fault), then a real llama-cpp-python.
mod http;
// `analyze --judge`: the real SmolLM2 as the LLM judge (valid JSON, deterministic, cached).
mod judge;
// models: the registry, `parrot models list|fetch|path`, hub downloads against a loopback hub, the PyPI fallback.
mod models;
// Property tests of every parser of untrusted input: arbitrary bytes and mutated fixtures never panic.
mod props;
mod readme;
mod run;
mod throughput;
// `parrot report`: page structure, numbers, escaping, bad input, headless Chromium.
mod report;
