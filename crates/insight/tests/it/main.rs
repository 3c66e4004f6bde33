//! One integration-test binary for `insight`.

mod forecast;
mod nab_corpus;
mod scoring;
mod synthetic;
