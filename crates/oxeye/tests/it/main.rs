mod cli;
mod otlp_profiles;
mod tidy;
