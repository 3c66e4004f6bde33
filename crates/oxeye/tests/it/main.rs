mod bench;
mod boost;
mod cli;
mod otlp_profiles;
mod tidy;
