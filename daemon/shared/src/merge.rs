//! Merging the hits of several sources: their scores are on different scales (ts_rank, FTS5's
//! bm25, the store's BM25), so each source's scores are divided by its best score, then all hits
//! are ranked by that share (ties: the source's own order, then label order). A source whose
//! scores are not positive ranks its hits by position instead (1, 1/2, 1/3, ...).

/// The best `limit` hits of `found` (`(label, hits best first)`), each as `(share, label, hit)`;
/// `score` reads a hit's own score.
pub fn merge<T>(
    found: Vec<(String, Vec<T>)>,
    limit: usize,
    score: impl Fn(&T) -> f32,
) -> Vec<(f32, String, T)> {
    let mut ranked: Vec<(f32, usize, String, T)> = Vec::new();
    for (label, hits) in found {
        let best = hits.iter().map(&score).fold(f32::NEG_INFINITY, f32::max);
        for (rank, hit) in hits.into_iter().enumerate() {
            let own = score(&hit);
            let share = if best > 0.0 && own > 0.0 {
                own / best
            } else {
                1.0 / (rank as f32 + 1.0)
            };
            ranked.push((share, rank, label.clone(), hit));
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
        .map(|(share, _, label, hit)| (share, label, hit))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_without_positive_scores_rank_by_position() {
        let found = vec![
            ("a".to_string(), vec![("a1", 0.0), ("a2", 0.0)]),
            ("b".to_string(), vec![("b1", 4.0), ("b2", 1.0)]),
        ];
        let got: Vec<(f32, &str)> = merge(found, 4, |h| h.1)
            .into_iter()
            .map(|(share, _, h)| (share, h.0))
            .collect();
        // a1 and b1 share 1 (a before b by label), a2 is 1/2, b2 is 1/4.
        assert_eq!(got, [(1.0, "a1"), (1.0, "b1"), (0.5, "a2"), (0.25, "b2")]);
    }
}
