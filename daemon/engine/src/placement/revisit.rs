//! Revisiting a placement as activation statistics change: which experts move between the GPU and
//! the CPU, at most a given number per revisit, and only for a clear gain, so that placement
//! follows the statistics without thrashing.

use super::{GraphKind, GraphSlot, Placement, order};
use crate::ort_env::Provider;

/// An expert displaces one on the GPU only when its count exceeds the other's by more than
/// 1/`HYSTERESIS_DIVISOR` of it (and by at least one): two experts of about equal heat do not
/// swap back and forth as their counts overtake each other.
pub const HYSTERESIS_DIVISOR: u64 = 8;

/// One expert's move: slot index and the provider it goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Move {
    pub slot: usize,
    pub to: Provider,
}

/// The moves that bring `current` toward the placement `activations` would give now: experts of
/// the new plan's GPU set that are on the CPU are promoted hottest first, each into free budget or
/// in place of the coldest GPU experts the new plan leaves out (only if clearly hotter than each,
/// see [`HYSTERESIS_DIVISOR`]). At most `max_moves` moves (promotions and demotions each count);
/// only routed experts move. Empty without a GPU provider.
pub fn revisit(
    current: &Placement,
    slots: &[GraphSlot],
    activations: &[Vec<u64>],
    max_moves: usize,
) -> Vec<Move> {
    let (Some(gpu), Some(budget)) = (current.gpu, current.budget) else {
        return Vec::new();
    };
    let ideal = Placement::plan_excluding(slots, activations, budget, Some(gpu), &current.excluded);
    let is_expert = |i: usize| slots[i].kind == GraphKind::Expert;
    let ranked = order(slots, activations);
    let candidates: Vec<usize> = ranked
        .iter()
        .map(|&(i, _)| i)
        .filter(|&i| is_expert(i) && ideal.provider(i) == gpu && current.provider(i) != gpu)
        .collect();
    // In placement order: the coldest is last, taken first.
    let mut victims: Vec<usize> = ranked
        .iter()
        .map(|&(i, _)| i)
        .filter(|&i| is_expert(i) && current.provider(i) == gpu && ideal.provider(i) != gpu)
        .collect();

    let mut free = budget.saturating_sub(current.gpu_bytes);
    let mut moves = Vec::new();
    for c in candidates {
        let need = slots[c].bytes;
        let heat = slots[c].count(activations);
        // Victims are taken from the end of `victims` (the coldest) until `c` fits.
        let mut taken = 0;
        let mut freed = 0u64;
        while free + freed < need {
            let Some(&v) = victims.iter().rev().nth(taken) else {
                break;
            };
            if !clearly_hotter(heat, slots[v].count(activations)) {
                break;
            }
            freed += slots[v].bytes;
            taken += 1;
        }
        if free + freed < need || moves.len() + taken + 1 > max_moves {
            // The candidates after this one are colder: none of them would fare better against
            // the same victims, but one might fit in the free budget as it is.
            continue;
        }
        for _ in 0..taken {
            if let Some(v) = victims.pop() {
                moves.push(Move {
                    slot: v,
                    to: Provider::Cpu,
                });
            }
        }
        free = free + freed - need;
        moves.push(Move { slot: c, to: gpu });
    }
    moves
}

fn clearly_hotter(heat: u64, other: u64) -> bool {
    heat > other.saturating_add((other / HYSTERESIS_DIVISOR).max(1))
}
