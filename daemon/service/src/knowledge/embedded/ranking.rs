//! Ranking quality of the in-memory BM25 index and of SQLite FTS5's `bm25()` on one judged
//! corpus: 600 generated documents, each about one of 30 topics (grade 2) and often a second
//! (grade 1), written in a Zipf-distributed 40,000-word language with a few words of unrelated
//! topics mixed in; 90 queries of topic words, common words and now and then a misleading
//! topic's word. Measured: nDCG@10 and precision@10 over chunks (a chunk has its document's
//! grade), and how many of the top 10 the two indexes share. The store uses FTS5 because it ranks
//! as well (within `TOLERANCE`) with a fraction of the memory (`index_memory.rs`); the figures
//! are in docs/knowledge.md.

use super::chunk;
use super::chunk_index::{ChunkIndex, Hit};
use super::corpus::{rng, vocabulary, words, zipf};
use super::fts::FtsIndex;
use super::index::Index;

const TOPICS: usize = 30;
const TOPIC_WORDS: usize = 12;
const DOCS: usize = 600;
const QUERIES_PER_TOPIC: usize = 3;
const K: usize = 10;
/// How far below the in-memory index FTS5's nDCG@10 and P@10 may fall.
const TOLERANCE: f64 = 0.02;

struct Corpus {
    /// `(name, text)`.
    docs: Vec<(String, String)>,
    /// Per document: `(primary topic, secondary topic)`.
    topics: Vec<(usize, Option<usize>)>,
    /// `(query, topic)`.
    queries: Vec<(String, usize)>,
}

impl Corpus {
    fn new() -> Corpus {
        let vocab = vocabulary();
        let topic_words = words(TOPICS * TOPIC_WORDS, 99);
        let topic = |t: usize, next: &mut dyn FnMut() -> u32| {
            let mut n = || next();
            &topic_words[t * TOPIC_WORDS + zipf(&mut n, TOPIC_WORDS)]
        };
        let mut next = rng(2024);
        let mut docs = Vec::new();
        let mut topics = Vec::new();
        for d in 0..DOCS {
            let primary = d % TOPICS;
            let secondary = next()
                .is_multiple_of(2)
                .then(|| (primary + 1 + next() as usize % (TOPICS - 1)) % TOPICS);
            let len = 120 + next() as usize % 400;
            let mut text = String::new();
            for _ in 0..len {
                let r = next() % 100;
                let word = match (r, secondary) {
                    (0..8, _) => topic(primary, &mut next),
                    (8..12, Some(s)) => topic(s, &mut next),
                    (12, _) => topic(next() as usize % TOPICS, &mut next),
                    _ => &vocab[zipf(&mut next, vocab.len())],
                };
                text.push_str(word);
                text.push(' ');
            }
            docs.push((format!("doc-{d}.txt"), text));
            topics.push((primary, secondary));
        }
        let mut queries = Vec::new();
        for t in 0..TOPICS {
            for _ in 0..QUERIES_PER_TOPIC {
                let mut q: Vec<&str> = Vec::new();
                for _ in 0..2 + next() % 2 {
                    q.push(topic(t, &mut next));
                }
                for _ in 0..1 + next() % 3 {
                    q.push(&vocab[next() as usize % 50]);
                }
                if next().is_multiple_of(3) {
                    q.push(topic(
                        (t + 1 + next() as usize % (TOPICS - 1)) % TOPICS,
                        &mut next,
                    ));
                }
                queries.push((q.join(" "), t));
            }
        }
        Corpus {
            docs,
            topics,
            queries,
        }
    }

    fn grade(&self, doc: usize, topic: usize) -> u32 {
        match self.topics[doc] {
            (p, _) if p == topic => 2,
            (_, Some(s)) if s == topic => 1,
            _ => 0,
        }
    }
}

/// Mean nDCG@10 and precision@10 of `search` over the corpus's queries.
struct Quality {
    ndcg: f64,
    precision: f64,
}

fn doc_number(name: &str) -> usize {
    name.trim_start_matches("doc-")
        .trim_end_matches(".txt")
        .parse()
        .unwrap_or(usize::MAX)
}

fn dcg(gains: impl Iterator<Item = u32>) -> f64 {
    gains
        .take(K)
        .enumerate()
        .map(|(i, g)| (2f64.powi(g as i32) - 1.0) / (i as f64 + 2.0).log2())
        .sum()
}

fn quality(corpus: &Corpus, chunks: &[usize], results: &[Vec<Hit>]) -> Quality {
    let (mut ndcg, mut precision) = (0.0, 0.0);
    for ((_, topic), hits) in corpus.queries.iter().zip(results) {
        let grade = |h: &Hit| corpus.grade(doc_number(&h.1), *topic);
        let mut ideal: Vec<u32> = (0..DOCS)
            .flat_map(|d| std::iter::repeat_n(corpus.grade(d, *topic), chunks[d]))
            .collect();
        ideal.sort_unstable_by(|a, b| b.cmp(a));
        ndcg += dcg(hits.iter().map(grade)) / dcg(ideal.into_iter());
        precision += hits.iter().filter(|h| grade(h) > 0).count() as f64 / K as f64;
    }
    let n = corpus.queries.len() as f64;
    Quality {
        ndcg: ndcg / n,
        precision: precision / n,
    }
}

#[test]
fn fts5_and_the_memory_index_rank_the_judged_corpus() {
    let corpus = Corpus::new();
    let mut memory = Index::default();
    let mut fts = FtsIndex::open().expect("fts5");
    let mut chunks = Vec::new();
    for (name, text) in &corpus.docs {
        let c = chunk::chunks(text, 200, 40);
        chunks.push(c.len());
        for (n, c) in c.iter().enumerate() {
            memory.add(name, n as u32, c);
        }
        fts.replace(name, &c, || Ok(()), |e| e).expect("add");
    }
    assert_eq!(memory.chunk_count(), fts.chunk_count());
    let by_memory: Vec<Vec<Hit>> = corpus
        .queries
        .iter()
        .map(|(q, _)| memory.ranked(q, K))
        .collect();
    let by_fts: Vec<Vec<Hit>> = corpus
        .queries
        .iter()
        .map(|(q, _)| fts.search(q, K).expect("search"))
        .collect();
    let shared: usize = by_memory
        .iter()
        .zip(&by_fts)
        .map(|(a, b)| {
            a.iter()
                .filter(|h| b.iter().any(|g| (&g.1, g.2) == (&h.1, h.2)))
                .count()
        })
        .sum();
    let m = quality(&corpus, &chunks, &by_memory);
    let f = quality(&corpus, &chunks, &by_fts);
    let agreement = shared as f64 / (K * corpus.queries.len()) as f64;
    println!(
        "ranking: {} chunks, {} queries; in-memory BM25 nDCG@10 {:.4} P@10 {:.4}; FTS5 nDCG@10 \
         {:.4} P@10 {:.4}; top-10 shared {:.3}",
        memory.chunk_count(),
        corpus.queries.len(),
        m.ndcg,
        m.precision,
        f.ndcg,
        f.precision,
        agreement
    );
    assert!(
        f.ndcg >= m.ndcg - TOLERANCE && f.precision >= m.precision - TOLERANCE,
        "FTS5 ranks worse than the in-memory index"
    );
    // Both rank by BM25 (their IDFs differ for terms in most chunks): most of the top 10 agree.
    assert!(agreement >= 0.5, "top-10 shared {agreement:.3}");
}
