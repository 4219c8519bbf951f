//! Command-line entry: parses `moed` subcommands and dispatches each to its own module.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod bench;
mod generate;
mod score;

#[derive(Parser, Debug)]
#[command(name = "moed", version, about = "Mixture-of-Experts inference service")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Generate text from a prompt with a model package.
    Generate(generate::GenerateArgs),
    /// Print the log-probability of each token of a text.
    Score(score::ScoreArgs),
    /// Measure prefill and decode speed, sparse against dense, and memory bandwidth use.
    Bench(bench::BenchArgs),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Generate(args) => generate::run(args),
        Command::Score(args) => score::run(args),
        Command::Bench(args) => bench::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("moed: {err:#}");
            ExitCode::FAILURE
        }
    }
}
