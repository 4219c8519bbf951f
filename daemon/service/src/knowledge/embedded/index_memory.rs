//! The memory the chunk index (in-memory BM25 or FTS5) takes per byte of ingested text, measured
//! as the growth of the process's resident set while synthetic documents (a Zipf-like draw from a
//! 40,000-word vocabulary) are indexed. Ignored by default (RSS is shared by the tests running beside it);
//! run each alone: `cargo test -p moed-service --lib index_memory_bm25 -- --ignored --nocapture`
//! (`index_memory_fts5` likewise).

use super::chunk;
use super::corpus::{text, vocabulary};
use super::index::Index;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Which index is measured.
#[derive(Clone, Copy)]
enum Kind {
    Memory,
    #[cfg(feature = "sqlite")]
    Fts,
}

/// `(text bytes, RSS growth, database bytes)` after indexing `docs` documents of `doc_bytes`.
fn measure(kind: Kind, docs: usize, doc_bytes: usize) -> (u64, u64, u64) {
    let vocab = vocabulary();
    let texts: Vec<String> = (0..docs)
        .map(|i| text(&vocab, doc_bytes, i as u64 + 1))
        .collect();
    let chunked: Vec<Vec<String>> = texts.iter().map(|t| chunk::chunks(t, 200, 40)).collect();
    let names: Vec<String> = (0..docs).map(|d| format!("doc-{d}.txt")).collect();
    let all = || {
        chunked.iter().zip(&names).flat_map(|(chunks, name)| {
            chunks
                .iter()
                .enumerate()
                .map(move |(n, c)| (name.as_str(), n as u32, c.as_str()))
        })
    };
    let before = rss_bytes();
    let (count, db, _keep): (usize, u64, Box<dyn std::any::Any>) = match kind {
        Kind::Memory => {
            let mut ix = Index::default();
            for (name, n, c) in all() {
                ix.add(name, n, c);
            }
            (ix.chunk_count(), 0, Box::new(ix))
        }
        #[cfg(feature = "sqlite")]
        Kind::Fts => {
            use super::chunk_index::ChunkIndex;
            let mut ix = super::fts::FtsIndex::open().expect("open");
            for (d, chunks) in chunked.iter().enumerate() {
                ix.replace(&names[d], chunks, || Ok(()), |e| e)
                    .expect("add");
            }
            let db = ix.database_bytes().expect("size");
            (ix.chunk_count(), db, Box::new(ix))
        }
    };
    let grown = rss_bytes().saturating_sub(before);
    assert!(count > 0);
    let total: usize = texts.iter().map(String::len).sum();
    (total as u64, grown, db)
}

fn report(kind: Kind, index: &str) {
    for (docs, bytes, what) in [
        (2000, 4300, "2000 documents of 4.3 kB (8.6 MB)"),
        (1, 50 << 20, "one 50 MiB document"),
    ] {
        let (text, grown, db) = measure(kind, docs, bytes);
        println!(
            "index memory: {index}: {what}: text {:.1} MB, RSS +{:.1} MB, {:.2} bytes per text \
             byte; database {:.1} MB",
            text as f64 / 1e6,
            grown as f64 / 1e6,
            grown as f64 / text as f64,
            db as f64 / 1e6
        );
    }
}

#[test]
#[ignore]
fn index_memory_bm25() {
    report(Kind::Memory, "in-memory BM25");
}

#[cfg(feature = "sqlite")]
#[test]
#[ignore]
fn index_memory_fts5() {
    report(Kind::Fts, "FTS5 in a temporary file, 8 MiB cache");
}
