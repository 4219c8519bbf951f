//! Command-line entry: parses `moed` subcommands and dispatches each to its own module.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod bench;
mod bench_knowledge;
mod bench_plugins;
mod bench_serve;
mod check_config;
mod gate_args;
mod generate;
mod local;
mod man;
mod score;
mod serve;
mod verify;

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
    /// Check a model package's files against the sizes and SHA-256 sums in its manifest.
    Verify(verify::VerifyArgs),
    /// Run the D-Bus service (org.moed.Moed1).
    Serve(serve::ServeArgs),
    /// Check the configuration and print the effective values.
    CheckConfig(check_config::CheckConfigArgs),
    /// Load benchmark of the D-Bus service: N clients against 1 and the offline loop.
    BenchServe(bench_serve::BenchServeArgs),
    /// WASM plugins: decode speed with a gate plugin against native routing, latency per call.
    BenchPlugins(bench_plugins::BenchPluginsArgs),
    /// Knowledge sources: latency of one search call per configured source, with a baseline.
    BenchKnowledge(bench_knowledge::BenchKnowledgeArgs),
    /// Write the man page moed.8 into a directory (for packaging).
    #[command(hide = true)]
    GenerateAssets(man::GenerateAssetsArgs),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Generate(args) => generate::run(args),
        Command::Score(args) => score::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Serve(args) => serve::run(args),
        Command::CheckConfig(args) => check_config::run(args),
        Command::BenchServe(args) => bench_serve::run(args),
        Command::BenchPlugins(args) => bench_plugins::run(args),
        Command::BenchKnowledge(args) => bench_knowledge::run(args),
        Command::GenerateAssets(args) => man::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("moed: {err:#}");
            ExitCode::FAILURE
        }
    }
}
