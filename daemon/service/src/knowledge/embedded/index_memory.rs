//! The memory the in-memory index takes per byte of ingested text, measured as the growth of the
//! process's resident set while synthetic documents (a Zipf-like draw from a 40,000-word
//! vocabulary) are indexed. Ignored by default (RSS is shared by the tests running beside it);
//! run alone: `cargo test -p moed --lib index_memory -- --ignored --nocapture --test-threads=1`.

use super::chunk;
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

/// A seeded pseudo-random generator (no dependency needed for test data).
fn rng(seed: u64) -> impl FnMut() -> u32 {
    let mut s = seed;
    move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (s >> 33) as u32
    }
}

/// The language of every document: 40,000 words of 3 to 10 letters.
fn vocabulary() -> Vec<String> {
    let mut next = rng(7);
    (0..40_000)
        .map(|_| {
            let len = 3 + next() % 8;
            (0..len)
                .map(|_| (b'a' + (next() % 26) as u8) as char)
                .collect()
        })
        .collect()
}

/// `bytes` of text in words drawn from `vocab` with a Zipf-like skew.
fn text(vocab: &[String], bytes: usize, seed: u64) -> String {
    let mut next = rng(seed);
    let mut out = String::with_capacity(bytes + 16);
    while out.len() < bytes {
        // Rank r with probability ~ 1/r: exp of a uniform draw over ln(vocab size).
        let u = (next() as f64) / (u32::MAX as f64);
        let r = ((vocab.len() as f64).powf(u) as usize).clamp(1, vocab.len()) - 1;
        out.push_str(&vocab[r]);
        out.push(if next().is_multiple_of(12) { '\n' } else { ' ' });
    }
    out
}

fn measure(docs: usize, doc_bytes: usize) -> (u64, u64) {
    let vocab = vocabulary();
    let texts: Vec<String> = (0..docs)
        .map(|i| text(&vocab, doc_bytes, i as u64 + 1))
        .collect();
    let chunked: Vec<Vec<String>> = texts.iter().map(|t| chunk::chunks(t, 200, 40)).collect();
    let before = rss_bytes();
    let mut ix = Index::default();
    for (d, chunks) in chunked.iter().enumerate() {
        let name = format!("doc-{d}.txt");
        for (n, c) in chunks.iter().enumerate() {
            ix.add(&name, n as u32, c);
        }
    }
    let grown = rss_bytes().saturating_sub(before);
    assert!(ix.chunk_count() > 0);
    let total: usize = texts.iter().map(String::len).sum();
    (total as u64, grown)
}

#[test]
#[ignore]
fn index_memory_per_text_byte() {
    for (docs, bytes, what) in [
        (2000, 4300, "2000 documents of 4.3 kB (8.6 MB)"),
        (1, 50 << 20, "one 50 MiB document"),
    ] {
        let (text, grown) = measure(docs, bytes);
        println!(
            "index memory: {what}: text {:.1} MB, RSS +{:.1} MB, {:.2} bytes per text byte",
            text as f64 / 1e6,
            grown as f64 / 1e6,
            grown as f64 / text as f64
        );
    }
}
