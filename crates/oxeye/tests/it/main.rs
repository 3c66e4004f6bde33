mod bench;
mod cli;
mod tidy;
