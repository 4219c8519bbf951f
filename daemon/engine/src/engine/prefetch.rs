//! Predictive prefetch under an expert budget: which experts of the next MoE layer tend to follow
//! the ones a token chose in this layer is learned as the engine runs (a co-activation table per
//! pair of consecutive MoE layers, as activation-matrix prefetchers such as MoE-Infinity keep).
//! Once a layer has routed, the likeliest followers of its choices are guessed for the next MoE
//! layer and the files of those not resident are read ahead, so the disk works while this layer
//! computes; each guess is scored when its layer has routed. Routers fused into attention graphs
//! (the default export) leave no router to run ahead, so the guess comes from history, not from
//! the next router.

use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering::Relaxed;

use super::kv::Scratch;
use super::{Engine, Layer, experts};

/// No expert index: a token's slot the gate left empty (it chose fewer than top-k).
pub(super) const NONE: u32 = u32::MAX;

pub(crate) struct Foresight {
    /// Per layer: the next MoE layer after it, when it is a MoE layer with one.
    next: Vec<Option<usize>>,
    /// Per layer with a next: `[expert here * E + expert there]` tokens that chose both. Counts
    /// saturate; concurrent steps may lose an increment, which only blurs a tendency.
    tables: Vec<Vec<AtomicU32>>,
    experts: usize,
}

impl Foresight {
    pub(super) fn new(layers: &[Layer], experts: usize) -> Foresight {
        let moe: Vec<usize> = (0..layers.len())
            .filter(|&l| matches!(layers[l], Layer::Moe { .. }))
            .collect();
        let mut next = vec![None; layers.len()];
        for pair in moe.windows(2) {
            next[pair[0]] = Some(pair[1]);
        }
        let tables = next
            .iter()
            .map(|n| match n {
                Some(_) => (0..experts * experts).map(|_| AtomicU32::new(0)).collect(),
                None => Vec::new(),
            })
            .collect();
        Foresight {
            next,
            tables,
            experts,
        }
    }

    /// After `layer` routed (`s.choice`, `k` slots a token): learns from the previous MoE layer's
    /// choices to these, scores the guess made for `layer`, and keeps these choices for the next.
    pub(super) fn learn_and_score(&self, engine: &Engine, layer: usize, s: &mut Scratch, k: usize) {
        let e = self.experts;
        if let Some(prev) = s
            .prev_layer
            .filter(|&p| self.next.get(p) == Some(&Some(layer)))
            && let Some(table) = self.tables.get(prev)
        {
            learn(table, e, &s.prev_choice, &s.choice, k);
        }
        if s.guess_layer == Some(layer) {
            let (mut guessed, mut right, mut chosen) = (0, 0, 0);
            for (list, &g) in s.assigned.iter().zip(&s.guess) {
                let c = !list.is_empty();
                guessed += u64::from(g);
                chosen += u64::from(c);
                right += u64::from(g && c);
            }
            let c = &engine.counters;
            c.guessed.fetch_add(guessed, Relaxed);
            c.guessed_right.fetch_add(right, Relaxed);
            c.guess_chosen.fetch_add(chosen, Relaxed);
        }
        s.guess_layer = None;
        s.prev_layer = Some(layer);
        s.prev_choice.clone_from(&s.choice);
    }

    /// Guesses the experts of the MoE layer after `layer`: for each token, the `k` that most often
    /// followed its choices here (never one that has not), then reads ahead the files of those
    /// not resident.
    pub(super) fn guess_next(&self, engine: &Engine, layer: usize, s: &mut Scratch, k: usize) {
        let (Some(Some(next)), Some(table)) = (self.next.get(layer), self.tables.get(layer)) else {
            return;
        };
        let e = self.experts;
        guess(table, e, &s.choice, k, &mut s.guess);
        if let Some(Layer::Moe { experts: files, .. }) = engine.layers.get(*next) {
            let missing = (0..e)
                .filter(|&y| s.guess[y] && !engine.experts.has((*next, y)))
                .filter_map(|y| files.get(y))
                .map(|rel| engine.package.path(rel));
            let bytes = experts::read_ahead(missing);
            engine
                .counters
                .guess_read_ahead_bytes
                .fetch_add(bytes, Relaxed);
        }
        s.guess_layer = Some(*next);
    }
}

/// Counts, for each token, every pair (its expert `x` before, its expert `y` now) in `table`
/// (`[x * e + y]`); `before` and `now` hold `k` slots a token.
fn learn(table: &[AtomicU32], e: usize, before: &[u32], now: &[u32], k: usize) {
    for (b, n) in before.chunks_exact(k).zip(now.chunks_exact(k)) {
        for &x in b.iter().filter(|&&x| x != NONE) {
            for &y in n.iter().filter(|&&y| y != NONE) {
                if let Some(c) = table.get(x as usize * e + y as usize) {
                    c.store(c.load(Relaxed).saturating_add(1), Relaxed);
                }
            }
        }
    }
}

/// Marks in `out` (resized to `e`), for each token of `now`, the `k` experts that most often
/// followed its choices in `table` (ties: the lower index), never one that never did.
fn guess(table: &[AtomicU32], e: usize, now: &[u32], k: usize, out: &mut Vec<bool>) {
    out.clear();
    out.resize(e, false);
    let mut score = vec![0u64; e];
    let mut order: Vec<usize> = Vec::with_capacity(e);
    for n in now.chunks_exact(k) {
        score.iter_mut().for_each(|v| *v = 0);
        for &x in n.iter().filter(|&&x| x != NONE) {
            let row = x as usize * e;
            for (y, v) in score.iter_mut().enumerate() {
                if let Some(c) = table.get(row + y) {
                    *v += u64::from(c.load(Relaxed));
                }
            }
        }
        order.clear();
        order.extend((0..e).filter(|&y| score[y] > 0));
        order.sort_by(|&a, &b| score[b].cmp(&score[a]).then(a.cmp(&b)));
        for &y in order.iter().take(k) {
            out[y] = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn followers_are_learned_per_token_and_the_likeliest_guessed() {
        let e = 4;
        let table: Vec<AtomicU32> = (0..e * e).map(|_| AtomicU32::new(0)).collect();
        // Two tokens, k = 2: token 0 chose {0, 1} then {2, 3}; token 1 chose {1, NONE} then {3, 0}.
        learn(&table, e, &[0, 1, 1, NONE], &[2, 3, 3, 0], 2);
        let at = |x: usize, y: usize| table[x * e + y].load(Relaxed);
        assert_eq!(
            (at(0, 2), at(0, 3), at(1, 2), at(1, 3), at(1, 0)),
            (1, 1, 1, 2, 1)
        );
        assert_eq!(at(0, 0), 0);
        let mut out = Vec::new();
        // A token that chose 1: 3 (2 counts), then 0 and 2 tie at 1 (the lower index wins).
        guess(&table, e, &[1, NONE], 2, &mut out);
        assert_eq!(out, vec![true, false, false, true]);
        // A token whose choices never led anywhere gets no guess.
        guess(&table, e, &[2, 3], 2, &mut out);
        assert_eq!(out, vec![false; 4]);
    }

    #[test]
    fn counts_saturate_instead_of_wrapping() {
        let table = vec![AtomicU32::new(u32::MAX)];
        learn(&table, 1, &[0], &[0], 1);
        assert_eq!(table[0].load(Relaxed), u32::MAX);
    }
}
