//! The in-memory inverted index of an embedded store, rebuilt from the stored chunks at start and
//! kept in step with every change: BM25 (k1 = 1.2, b = 0.75) over chunk terms.

use std::collections::HashMap;

use super::chunk::terms;

const K1: f32 = 1.2;
const B: f32 = 0.75;

/// One indexed chunk: its document, its number within it, its length in terms and its terms.
struct Chunk {
    doc: String,
    number: u32,
    len: u32,
    terms: Vec<String>,
}

#[derive(Default)]
pub struct Index {
    slots: Vec<Option<Chunk>>,
    free: Vec<u32>,
    /// term -> chunk slot -> term frequency
    postings: HashMap<String, HashMap<u32, u32>>,
    by_doc: HashMap<String, Vec<u32>>,
    total_len: u64,
    live: usize,
}

/// A chunk that matched: `(score, document, chunk number)`.
pub type Hit = (f32, String, u32);

impl Index {
    pub fn add(&mut self, doc: &str, number: u32, text: &str) {
        let mut tf: HashMap<String, u32> = HashMap::new();
        let mut len = 0u32;
        for t in terms(text) {
            *tf.entry(t).or_default() += 1;
            len += 1;
        }
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(None);
                (self.slots.len() - 1) as u32
            }
        };
        for (t, f) in &tf {
            self.postings.entry(t.clone()).or_default().insert(slot, *f);
        }
        self.slots[slot as usize] = Some(Chunk {
            doc: doc.to_string(),
            number,
            len,
            terms: tf.into_keys().collect(),
        });
        self.by_doc.entry(doc.to_string()).or_default().push(slot);
        self.total_len += len as u64;
        self.live += 1;
    }

    /// Forgets every chunk of `doc`.
    pub fn remove(&mut self, doc: &str) {
        for slot in self.by_doc.remove(doc).unwrap_or_default() {
            let Some(chunk) = self.slots[slot as usize].take() else {
                continue;
            };
            for t in &chunk.terms {
                if let Some(p) = self.postings.get_mut(t) {
                    p.remove(&slot);
                    if p.is_empty() {
                        self.postings.remove(t);
                    }
                }
            }
            self.total_len -= chunk.len as u64;
            self.live -= 1;
            self.free.push(slot);
        }
    }

    pub fn chunk_count(&self) -> usize {
        self.live
    }

    /// The best `limit` chunks for `query`, best first (ties by document name and number, so
    /// results are stable).
    pub fn search(&self, query: &str, limit: usize) -> Vec<Hit> {
        let mut query_terms: Vec<String> = terms(query).collect();
        query_terms.sort();
        query_terms.dedup();
        let n = self.live as f32;
        let avg = (self.total_len as f32 / n.max(1.0)).max(1.0);
        let mut scores: HashMap<u32, f32> = HashMap::new();
        for t in &query_terms {
            let Some(p) = self.postings.get(t) else {
                continue;
            };
            let df = p.len() as f32;
            let idf = ((n - df + 0.5) / (df + 0.5) + 1.0).ln();
            for (&slot, &f) in p {
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
                Some((score, c.doc.clone(), c.number))
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
        let hits = ix.search("How many vacation days per year?", 3);
        assert_eq!(hits[0].1, "handbook.md");
        assert_eq!(hits.len(), 3);
        assert!(hits[0].0 > hits[1].0 && hits[1].0 > 0.0);
        // The same term count in a longer chunk scores lower.
        let v = ix.search("vacation", 3);
        assert_eq!(
            (v[0].1.as_str(), v[1].1.as_str()),
            ("handbook.md", "long.md")
        );

        ix.remove("handbook.md");
        assert_eq!(ix.chunk_count(), 2);
        assert!(ix.search("days", 3).is_empty());
        ix.add("handbook.md", 0, "Every employee has 30 vacation days.");
        assert_eq!(ix.search("30", 3)[0].1, "handbook.md");
        assert!(ix.search("25", 3).is_empty());
    }
}
