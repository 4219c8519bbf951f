//! `moed bench-knowledge`'s measurements: the latency of one search call per source (the call a
//! retrieval plugin makes through the host), next to a baseline measured in the same run on the
//! same connections: `SELECT 1` for PostgreSQL (driver, runtime hand-off and socket round trip),
//! preparing the cached template for SQLite; and how fast documents go into an embedded store.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::knowledge::{Knowledge, KnowledgeError, Source};

/// The figures of one source.
#[derive(Debug, Clone)]
pub struct Row {
    pub label: String,
    pub kind: &'static str,
    pub calls: usize,
    pub hits_per_call: f64,
    /// What the baseline measured, and its median.
    pub baseline: Option<(&'static str, Duration)>,
    pub p50: Duration,
    pub p99: Duration,
    pub mean: Duration,
    /// Calls that failed, and the first failure.
    pub errors: usize,
    pub first_error: Option<String>,
}

/// Documents put into an embedded store before measuring.
#[derive(Debug, Clone)]
pub struct Ingested {
    pub label: String,
    pub documents: usize,
    pub bytes: u64,
    pub chunks: u64,
    pub seconds: f64,
}

/// The `p`-quantile of sorted call times (see [`crate::bench::measure::nearest_rank`]).
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    crate::bench::measure::nearest_rank(sorted, p).unwrap_or(Duration::ZERO)
}

fn timed(
    calls: usize,
    mut f: impl FnMut(usize) -> Result<usize, String>,
) -> (Vec<Duration>, usize, usize, Option<String>) {
    let mut times = Vec::with_capacity(calls);
    let (mut hits, mut errors, mut first) = (0, 0, None);
    for i in 0..calls {
        let start = Instant::now();
        let r = f(i);
        times.push(start.elapsed());
        match r {
            Ok(n) => hits += n,
            Err(e) => {
                errors += 1;
                first.get_or_insert(e);
            }
        }
    }
    times.sort();
    (times, hits, errors, first)
}

/// `calls` searches per source, cycling through `queries` (one untimed call per query first, so
/// connections are open and templates prepared).
pub fn measure(knowledge: &Knowledge, queries: &[String], calls: usize, limit: usize) -> Vec<Row> {
    let mut rows = Vec::new();
    for label in knowledge.labels() {
        let Ok(source) = knowledge.get(&label) else {
            continue;
        };
        let data = source.data_source();
        for q in queries {
            let _ = data.search(q, limit);
        }
        let (times, hits, errors, first_error) = timed(calls, |i| {
            data.search(&queries[i % queries.len()], limit)
                .map(|d| d.len())
                .map_err(|e| e.to_string())
        });
        let baseline = source.check_call().and_then(|what| {
            let (b, _, berr, _) = timed(calls, |_| {
                source.check().map(|()| 0).map_err(|e| e.to_string())
            });
            (berr == 0).then(|| (what, percentile(&b, 0.5)))
        });
        let total: Duration = times.iter().sum();
        rows.push(Row {
            label,
            kind: source.kind(),
            calls,
            hits_per_call: hits as f64 / calls.max(1) as f64,
            baseline,
            p50: percentile(&times, 0.5),
            p99: percentile(&times, 0.99),
            mean: total / calls.max(1) as u32,
            errors,
            first_error,
        });
    }
    rows
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else if crate::knowledge::embedded::Format::of(&path.display().to_string()).is_some() {
            out.push(path);
        }
    }
    Ok(())
}

/// Adds every document below `dir` to each embedded store.
pub fn ingest(knowledge: &Knowledge, dir: &Path) -> Result<Vec<Ingested>, KnowledgeError> {
    let mut files = Vec::new();
    walk(dir, &mut files).map_err(|e| KnowledgeError::Document {
        name: dir.display().to_string(),
        message: e.to_string(),
    })?;
    let mut out = Vec::new();
    for label in knowledge.labels() {
        let Ok(Source::Embedded(store)) = knowledge.get(&label) else {
            continue;
        };
        let start = Instant::now();
        let mut bytes = 0;
        for f in &files {
            let content = std::fs::read(f).map_err(|e| KnowledgeError::Document {
                name: f.display().to_string(),
                message: e.to_string(),
            })?;
            bytes += content.len() as u64;
            store.add(&f.display().to_string(), &content, 0)?;
        }
        store.flush()?;
        out.push(Ingested {
            label,
            documents: files.len(),
            bytes,
            chunks: store.counts()?.1,
            seconds: start.elapsed().as_secs_f64(),
        });
    }
    Ok(out)
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

/// The rows as a table.
pub fn table(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<12} {:<9} {:>6} {:>9} {:>22} {:>11} {:>11} {:>11} {:>7}\n",
        "source", "kind", "calls", "hits/call", "baseline p50", "p50", "p99", "mean", "errors"
    );
    for r in rows {
        let baseline = r
            .baseline
            .map_or("-".to_string(), |(what, d)| format!("{} ({what})", ms(d)));
        out.push_str(&format!(
            "{:<12} {:<9} {:>6} {:>9.1} {:>22} {:>11} {:>11} {:>11} {:>7}\n",
            r.label,
            r.kind,
            r.calls,
            r.hits_per_call,
            baseline,
            ms(r.p50),
            ms(r.p99),
            ms(r.mean),
            r.errors
        ));
        if let Some(e) = &r.first_error {
            out.push_str(&format!("  {}: first error: {e}\n", r.label));
        }
    }
    out
}
