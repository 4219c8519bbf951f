//! `moed bench-knowledge`: latency of one search call per configured data source, with a
//! baseline from the same run (see `knowledge::bench`). Embedded stores are built in a temporary
//! state from `--documents`, so a running daemon's state is not touched; database sources are
//! the configured ones, with credentials from the secrets file (run as the daemon's user or root).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

use crate::bench::knowledge as bench;
use crate::config::Config;
use crate::knowledge::Knowledge;
use crate::state::StateStore;

#[derive(clap::Args, Debug)]
pub struct BenchKnowledgeArgs {
    /// The main configuration file (default /etc/moed/moed.toml); its [knowledge] sources are measured.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Documents (.txt, .md, .html, recursively) to put into each embedded store first.
    #[arg(long, value_name = "DIR")]
    documents: Option<PathBuf>,
    /// Timed calls per source.
    #[arg(long, default_value_t = 200, value_name = "N")]
    calls: usize,
    /// Documents asked for per call.
    #[arg(long, default_value_t = 5, value_name = "K")]
    limit: usize,
    /// Queries, used in turn (default: four questions about the sample company).
    queries: Vec<String>,
}

const DEFAULT_QUERIES: &[&str] = &[
    "How do I return an item for a refund?",
    "warranty on tent zippers",
    "waterproof rain jacket",
    "deposit for rental gear",
];

pub fn run(args: BenchKnowledgeArgs) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref())?;
    let state_dir = tempfile::tempdir().context("temporary state directory")?;
    let state = StateStore::open(state_dir.path())?;
    let knowledge = Knowledge::start(
        &config.knowledge,
        &state,
        Arc::new(moed_plugins::Sources::default()),
    )?;
    if let Some(dir) = &args.documents {
        for i in bench::ingest(&knowledge, dir)? {
            println!(
                "ingested into '{}': {} documents, {:.1} KiB, {} chunks in {:.3} s ({:.0} documents/s)",
                i.label,
                i.documents,
                i.bytes as f64 / 1024.0,
                i.chunks,
                i.seconds,
                i.documents as f64 / i.seconds.max(1e-9)
            );
        }
    }
    let queries: Vec<String> = if args.queries.is_empty() {
        DEFAULT_QUERIES.iter().map(|q| q.to_string()).collect()
    } else {
        args.queries
    };
    let calls = args.calls.max(1);
    println!(
        "{calls} search calls per source, limit {}, {} queries in turn",
        args.limit,
        queries.len()
    );
    let rows = bench::measure(&knowledge, &queries, calls, args.limit);
    print!("{}", bench::table(&rows));
    Ok(())
}
