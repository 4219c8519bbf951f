//! Holding the hottest experts resident under an expert budget: ranked by activation counts (the
//! persisted ones when a model loads), created at once and never evicted, so a restarted service
//! starts with its working set instead of rebuilding it one miss at a time.

use super::{Engine, EngineError, Layer, Provider, experts};

/// What [`Engine::hold_hot_experts`] holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    pub experts: usize,
    pub bytes: u64,
}

/// The experts to hold from `candidates` (`(activations, layer, expert, file bytes)`): the most
/// activated first (ties: lower layer, then lower index), never one that was not activated, as
/// long as their bytes fit in `cap`.
pub(crate) fn choose(
    mut candidates: Vec<(u64, usize, usize, u64)>,
    cap: u64,
) -> Vec<(usize, usize)> {
    candidates.retain(|c| c.0 > 0);
    candidates.sort_by(|a, b| b.0.cmp(&a.0).then((a.1, a.2).cmp(&(b.1, b.2))));
    let mut left = cap;
    let mut out = Vec::new();
    for (_, layer, expert, bytes) in candidates {
        if bytes <= left {
            left -= bytes;
            out.push((layer, expert));
        }
    }
    out
}

/// See [`Engine::hold_hot_experts`].
pub(super) fn hold(
    engine: &Engine,
    activations: &[Vec<u64>],
    share: f64,
) -> Result<Held, EngineError> {
    let Some(budget) = engine.experts.budget() else {
        return Ok(Held::default());
    };
    let mut candidates = Vec::new();
    let mut largest = 0;
    for (l, layer) in engine.layers.iter().enumerate() {
        let Layer::Moe { expert_bytes, .. } = layer else {
            continue;
        };
        for (x, &bytes) in expert_bytes.iter().enumerate() {
            largest = largest.max(bytes);
            let slot = engine.placed.expert_slot(l, x);
            // GPU experts are outside the (host) budget already.
            if engine.placed.on_gpu_budget() && engine.placed.provider(slot) != Provider::Cpu {
                continue;
            }
            let count = activations
                .get(l)
                .and_then(|r| r.get(x))
                .copied()
                .unwrap_or(0);
            candidates.push((count, l, x, bytes));
        }
    }
    // What is not held must still fit one layer's chosen experts of one token.
    let room = budget.saturating_sub(largest.saturating_mul(engine.top_k as u64));
    let cap = ((budget as f64) * share.clamp(0.0, 1.0)) as u64;
    let chosen = choose(candidates, cap.min(room));
    let held = std::sync::Mutex::new(Held::default());
    let made = experts::run_parallel(chosen.len(), engine.rt.intra_threads(), |i| {
        let (l, x) = chosen[i];
        engine.expert(l, x)?;
        if engine.experts.hold((l, x), &engine.counters) {
            let Some(Layer::Moe {
                expert_bytes,
                experts: files,
                ..
            }) = engine.layers.get(l)
            else {
                return Ok(());
            };
            let bytes = expert_bytes.get(x).copied().unwrap_or(0);
            // The session maps its weights; reading them now puts them in the page cache, so
            // the first request does not wait for the disk.
            experts::read_in(files.get(x).map(|rel| engine.package.path(rel)).into_iter());
            let mut h = held.lock().unwrap_or_else(|p| p.into_inner());
            h.experts += 1;
            h.bytes += bytes;
        }
        Ok(())
    });
    engine.release_mapped_weights();
    made?;
    Ok(held.into_inner().unwrap_or_else(|p| p.into_inner()))
}

#[cfg(test)]
mod tests {
    use super::choose;

    #[test]
    fn the_most_activated_experts_are_held_while_their_bytes_fit() {
        let candidates = vec![
            (5, 0, 0, 10),
            (9, 0, 1, 10),
            (0, 0, 2, 1),
            (9, 1, 0, 30),
            (7, 1, 1, 10),
            (1, 1, 2, 5),
        ];
        // 9 at (0,1), then 9 at (1,0) (the tie: lower layer first); 7 and 5 do not fit the 5 bytes
        // left, 1 does.
        assert_eq!(choose(candidates.clone(), 45), vec![(0, 1), (1, 0), (1, 2)]);
        assert_eq!(choose(candidates.clone(), 0), Vec::<(usize, usize)>::new());
        // Never an expert nobody chose, however much room is left.
        let all = choose(candidates, 1000);
        assert_eq!(all.len(), 5);
        assert!(!all.contains(&(0, 2)));
    }
}
