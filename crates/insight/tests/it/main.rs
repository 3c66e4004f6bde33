//! One integration-test binary for `insight`.

mod nab_corpus;
mod scoring;
mod synthetic;
