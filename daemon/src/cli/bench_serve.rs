//! `moed bench-serve`: the service's load benchmark (requests/s, tokens/s, p50/p99, overhead).

use std::path::PathBuf;

use crate::bench::{LoadBenchOptions, load_bench_table, run_load_bench, run_soak};

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
    /// Instead of the load table: run MINUTES of `--clients` clients mixing normal and hostile
    /// requests (oversized prompts, option lists and values, cancellations, disconnects), then
    /// print requests served, normal requests failed (must be 0) and the daemon's RSS.
    #[arg(long, value_name = "MINUTES")]
    soak: Option<f64>,
}

pub fn run(args: BenchServeArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.clients >= 1 && args.requests >= 1 && args.max_tokens >= 1,
        "--clients, --requests and --max-tokens must be at least 1"
    );
    let moed = std::env::current_exe()?;
    let opts = LoadBenchOptions {
        model: args.model,
        clients: args.clients,
        requests: args.requests,
        max_tokens: args.max_tokens,
        prompt: args.prompt,
        ort_library: args.ort_library,
        moed,
    };
    if let Some(minutes) = args.soak {
        anyhow::ensure!(
            minutes.is_finite() && minutes > 0.0 && minutes <= 24.0 * 60.0,
            "--soak takes minutes between 0 and 1440"
        );
        let report = run_soak(&opts, minutes)?;
        print!("{}", report.table());
        anyhow::ensure!(
            report.normal_failed == 0,
            "{} normal request(s) failed during the soak",
            report.normal_failed
        );
        return Ok(());
    }
    let rows = run_load_bench(&opts)?;
    print!("{}", load_bench_table(&rows));
    Ok(())
}
