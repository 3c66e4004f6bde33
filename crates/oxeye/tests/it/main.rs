mod boost;
mod cli;
mod tidy;
