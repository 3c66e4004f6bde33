mod cli;
mod tidy;
