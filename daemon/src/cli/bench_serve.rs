//! `moed bench-serve`: the service's load benchmark (requests/s, tokens/s, p50/p99, overhead).

use std::path::PathBuf;

use crate::serve::{LoadBenchOptions, load_bench_table, run_load_bench};

#[derive(clap::Args, Debug)]
pub struct BenchServeArgs {
    /// The model package directory.
    #[arg(long)]
    model: PathBuf,
    /// Concurrent clients in the loaded configuration.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Requests per client.
    #[arg(long, default_value_t = 8)]
    requests: usize,
    /// Tokens generated per request (greedy).
    #[arg(long, default_value_t = 32)]
    max_tokens: u32,
    #[arg(long, default_value = "Tell me a story about a lighthouse keeper.")]
    prompt: String,
    /// The ONNX Runtime library (else found as `moed generate` finds it).
    #[arg(long)]
    ort_library: Option<PathBuf>,
}

pub fn run(args: BenchServeArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.clients >= 1 && args.requests >= 1 && args.max_tokens >= 1,
        "--clients, --requests and --max-tokens must be at least 1"
    );
    let moed = std::env::current_exe()?;
    let rows = run_load_bench(&LoadBenchOptions {
        model: args.model,
        clients: args.clients,
        requests: args.requests,
        max_tokens: args.max_tokens,
        prompt: args.prompt,
        ort_library: args.ort_library,
        moed,
    })?;
    print!("{}", load_bench_table(&rows));
    Ok(())
}
