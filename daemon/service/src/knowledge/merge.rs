//! Merging the hits of several sources: their scores are on different scales (ts_rank, FTS5's
//! bm25, the store's BM25), so each source's scores are divided by its best score, then all hits
//! are ranked by that share (ties: the source's own order, then label order). A source whose
//! scores are not positive ranks its hits by position instead (1, 1/2, 1/3, ...).

use moed_plugins::Document;

/// The best `limit` hits of `found` (`(label, documents best first)`), with their labels; each
/// document keeps its own score.
pub fn merge(found: Vec<(String, Vec<Document>)>, limit: usize) -> Vec<(String, Document)> {
    let mut ranked: Vec<(f32, usize, String, Document)> = Vec::new();
    for (label, docs) in found {
        let best = docs
            .iter()
            .map(|d| d.score)
            .fold(f32::NEG_INFINITY, f32::max);
        for (rank, d) in docs.into_iter().enumerate() {
            let share = if best > 0.0 && d.score > 0.0 {
                d.score / best
            } else {
                1.0 / (rank as f32 + 1.0)
            };
            ranked.push((share, rank, label.clone(), d));
        }
    }
    ranked.sort_by(|a, b| {
        b.0.total_cmp(&a.0)
            .then(a.1.cmp(&b.1))
            .then_with(|| a.2.cmp(&b.2))
    });
    ranked
        .into_iter()
        .take(limit)
        .map(|(_, _, label, d)| (label, d))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(id: &str, score: f32) -> Document {
        Document {
            id: id.into(),
            source: id.into(),
            text: String::new(),
            score,
        }
    }

    #[test]
    fn shares_of_each_source_best_decide() {
        let found = vec![
            ("pg".to_string(), vec![d("p1", 0.5), d("p2", 0.1)]),
            (
                "docs".to_string(),
                vec![d("e1", 9.0), d("e2", 6.0), d("e3", 1.0)],
            ),
        ];
        let ids: Vec<String> = merge(found, 4).into_iter().map(|(_, d)| d.id).collect();
        // p1 and e1 are both their source's best (share 1); then e2 (2/3), p2 (0.2).
        assert_eq!(ids, ["e1", "p1", "e2", "p2"]);
    }
}
