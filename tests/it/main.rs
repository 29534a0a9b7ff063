//! The one integration-test binary: each module runs the real `parrot` binary (and, for `run`, the real small
//! models installed by `scripts/fetch-test-models.sh`).

mod common;
mod http;
mod readme;
mod run;
