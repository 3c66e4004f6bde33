mod bench;
mod boost;
mod budget;
mod cli;
mod otlp_profiles;
mod tidy;
