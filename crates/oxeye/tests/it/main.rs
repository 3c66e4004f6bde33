mod bench;
mod boost;
mod cli;
mod tidy;
