//! Merging the hits of several knowledge sources into one ranking, by each hit's share of its
//! source's best score (`moed_shared::merge`, which the sql-retrieval plugin uses too).

use moed_plugins::Document;

/// The best `limit` hits of `found` (`(label, documents best first)`), with their labels; each
/// document keeps its own score.
pub fn merge(found: Vec<(String, Vec<Document>)>, limit: usize) -> Vec<(String, Document)> {
    moed_shared::merge::merge(found, limit, |d| d.score)
        .into_iter()
        .map(|(_, label, d)| (label, d))
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
