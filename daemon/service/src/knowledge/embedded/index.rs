//! The in-memory inverted index of an embedded store: BM25 (k1 = 1.2, b = 0.75) over chunk terms.
//! Builds without SQLite (`--no-default-features`) use it in place of the FTS5 index; the tests
//! keep it as the reference `ranking.rs` measures FTS5 against. Its memory stays proportionate to
//! the text: each distinct term is stored once (numbered), a posting is a chunk slot and a
//! frequency in one flat array per term (8 bytes), and a chunk keeps only its terms' numbers
//! (4 bytes each) so its postings can be removed.
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::chunk::terms;
use super::chunk_index::Hit;

const K1: f32 = 1.2;
const B: f32 = 0.75;

/// One indexed chunk: its document, its number within it, its length in terms and its terms.
struct Chunk {
    doc: Arc<str>,
    number: u32,
    len: u32,
    terms: Box<[u32]>,
}

/// The chunks a term occurs in, and how often: `(chunk slot, frequency)`. One allocation per
/// term, as most terms occur in a few chunks only.
type Postings = Vec<(u32, u32)>;

#[derive(Default)]
pub struct Index {
    slots: Vec<Option<Chunk>>,
    free: Vec<u32>,
    /// term -> its number; `names` and `postings` are indexed by it.
    vocab: HashMap<Arc<str>, u32>,
    names: Vec<Option<Arc<str>>>,
    postings: Vec<Postings>,
    free_terms: Vec<u32>,
    by_doc: HashMap<Arc<str>, Vec<u32>>,
    total_len: u64,
    live: usize,
    /// A change staged and not yet committed: `(document, its new chunks)`.
    #[cfg(not(feature = "sqlite"))]
    staged: Option<(String, Vec<String>)>,
}

impl Index {
    fn term_id(&mut self, term: &str) -> u32 {
        if let Some(&id) = self.vocab.get(term) {
            return id;
        }
        let name: Arc<str> = Arc::from(term);
        let id = match self.free_terms.pop() {
            Some(id) => {
                self.names[id as usize] = Some(name.clone());
                id
            }
            None => {
                self.names.push(Some(name.clone()));
                self.postings.push(Postings::default());
                (self.names.len() - 1) as u32
            }
        };
        self.vocab.insert(name, id);
        id
    }

    pub fn add(&mut self, doc: &str, number: u32, text: &str) {
        let mut tf: HashMap<u32, u32> = HashMap::new();
        let mut len = 0u32;
        for t in terms(text) {
            let id = self.term_id(&t);
            *tf.entry(id).or_default() += 1;
            len = len.saturating_add(1);
        }
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(None);
                (self.slots.len() - 1) as u32
            }
        };
        for (&id, &f) in &tf {
            self.postings[id as usize].push((slot, f));
        }
        let doc: Arc<str> = match self.by_doc.get_key_value(doc) {
            Some((name, _)) => name.clone(),
            None => Arc::from(doc),
        };
        self.by_doc.entry(doc.clone()).or_default().push(slot);
        self.slots[slot as usize] = Some(Chunk {
            doc,
            number,
            len,
            terms: tf.into_keys().collect(),
        });
        self.total_len += len as u64;
        self.live += 1;
    }

    /// Forgets every chunk of `doc`: each posting list it touches is filtered once, however
    /// many of its chunks the term occurs in.
    pub fn remove(&mut self, doc: &str) {
        let Some(slots) = self.by_doc.remove(doc) else {
            return;
        };
        let mut dead = HashSet::with_capacity(slots.len());
        let mut touched = Vec::new();
        for slot in slots {
            let Some(chunk) = self.slots[slot as usize].take() else {
                continue;
            };
            touched.extend_from_slice(&chunk.terms);
            self.total_len -= chunk.len as u64;
            self.live -= 1;
            dead.insert(slot);
            self.free.push(slot);
        }
        touched.sort_unstable();
        touched.dedup();
        for id in touched {
            let p = &mut self.postings[id as usize];
            p.retain(|(slot, _)| !dead.contains(slot));
            let kept = p.len();
            if kept == 0 {
                self.postings[id as usize] = Postings::default();
                if let Some(name) = self.names[id as usize].take() {
                    self.vocab.remove(&name);
                }
                self.free_terms.push(id);
            } else if p.capacity() > 2 * kept + 8 {
                p.shrink_to_fit();
            }
        }
    }

    #[cfg(test)]
    pub fn chunk_count(&self) -> usize {
        self.live
    }

    /// The best `limit` chunks for `query`, best first (ties by document name and number, so
    /// results are stable).
    pub fn ranked(&self, query: &str, limit: usize) -> Vec<Hit> {
        let mut query_terms: Vec<String> = terms(query).collect();
        query_terms.sort();
        query_terms.dedup();
        let n = self.live as f32;
        let avg = (self.total_len as f32 / n.max(1.0)).max(1.0);
        let mut scores: HashMap<u32, f32> = HashMap::new();
        for t in &query_terms {
            let Some(&id) = self.vocab.get(t.as_str()) else {
                continue;
            };
            let p = &self.postings[id as usize];
            let df = p.len() as f32;
            let idf = ((n - df + 0.5) / (df + 0.5) + 1.0).ln();
            for &(slot, f) in p {
                let Some(chunk) = &self.slots[slot as usize] else {
                    continue;
                };
                let f = f as f32;
                let norm = K1 * (1.0 - B + B * chunk.len as f32 / avg);
                *scores.entry(slot).or_default() += idf * f * (K1 + 1.0) / (f + norm);
            }
        }
        let mut hits: Vec<Hit> = scores
            .into_iter()
            .filter_map(|(slot, score)| {
                let c = self.slots[slot as usize].as_ref()?;
                Some((score, c.doc.to_string(), c.number))
            })
            .collect();
        hits.sort_by(|a, b| {
            b.0.total_cmp(&a.0)
                .then_with(|| a.1.cmp(&b.1))
                .then(a.2.cmp(&b.2))
        });
        hits.truncate(limit);
        hits
    }
}

/// Builds without SQLite index with it; a staged change is applied when committed.
#[cfg(not(feature = "sqlite"))]
impl super::chunk_index::ChunkIndex for Index {
    type Error = std::convert::Infallible;

    fn open() -> Result<Index, Self::Error> {
        Ok(Index::default())
    }

    fn stage(&mut self, doc: &str, chunks: &[String]) -> Result<(), Self::Error> {
        self.staged = Some((doc.to_string(), chunks.to_vec()));
        Ok(())
    }

    fn commit(&mut self) -> Result<(), Self::Error> {
        if let Some((doc, chunks)) = self.staged.take() {
            self.remove(&doc);
            for (n, text) in chunks.iter().enumerate() {
                self.add(&doc, n as u32, text);
            }
        }
        Ok(())
    }

    fn roll_back(&mut self) {
        self.staged = None;
    }

    fn chunk_count(&self) -> usize {
        self.live
    }

    fn search(&self, query: &str, limit: usize) -> Result<Vec<Hit>, Self::Error> {
        Ok(self.ranked(query, limit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bm25_prefers_rare_terms_and_short_chunks() {
        let mut ix = Index::default();
        ix.add(
            "handbook.md",
            0,
            "Every employee has 25 vacation days per year.",
        );
        ix.add(
            "it.md",
            0,
            "Reset your password at the IT portal. The portal is open all year.",
        );
        ix.add(
            "long.md",
            0,
            "vacation is mentioned once in this much longer chunk about travel, expenses, \
             receipts, hotels, trains, flights and the per diem rules of the company",
        );
        let hits = ix.ranked("How many vacation days per year?", 3);
        assert_eq!(hits[0].1, "handbook.md");
        assert_eq!(hits.len(), 3);
        assert!(hits[0].0 > hits[1].0 && hits[1].0 > 0.0);
        // The same term count in a longer chunk scores lower.
        let v = ix.ranked("vacation", 3);
        assert_eq!(
            (v[0].1.as_str(), v[1].1.as_str()),
            ("handbook.md", "long.md")
        );

        ix.remove("handbook.md");
        assert_eq!(ix.chunk_count(), 2);
        assert!(ix.ranked("days", 3).is_empty());
        ix.add("handbook.md", 0, "Every employee has 30 vacation days.");
        assert_eq!(ix.ranked("30", 3)[0].1, "handbook.md");
        assert!(ix.ranked("25", 3).is_empty());
    }

    #[test]
    fn removing_frees_terms_and_slots_for_reuse() {
        let mut ix = Index::default();
        for n in 0..50 {
            ix.add("a.md", n, &format!("common word{n} text"));
        }
        ix.add("b.md", 0, "common other");
        ix.remove("a.md");
        assert_eq!(ix.chunk_count(), 1);
        assert_eq!(ix.vocab.len(), 2, "terms only a.md had are gone");
        assert!(ix.ranked("word7", 5).is_empty());
        assert_eq!(ix.ranked("common", 5).len(), 1);
        // Freed slots and term numbers are reused without mixing postings up.
        ix.add("c.md", 0, "word7 fresh");
        assert_eq!(ix.ranked("word7", 5)[0].1, "c.md");
        assert_eq!(ix.ranked("common", 5)[0].1, "b.md");
        assert!(ix.slots.len() <= 51 && ix.names.len() <= 53);
        ix.remove("missing.md");
        assert_eq!(ix.chunk_count(), 2);
    }
}
