//! Paired runs: two arms measured back to back within each repeat, the first arm alternating,
//! so both see the same machine state and neither always runs first.

/// One side of a paired comparison (A: the baseline, B: what is compared with it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arm {
    A,
    B,
}

/// The order of the arms in repeat `r`: A first in even repeats, B first in odd ones.
pub fn order(r: usize) -> [Arm; 2] {
    if r.is_multiple_of(2) {
        [Arm::A, Arm::B]
    } else {
        [Arm::B, Arm::A]
    }
}

/// Runs `repeats` (at least one) pairs in alternating order; returns the A and B results, each
/// in repeat order.
pub fn paired<T, E>(
    repeats: usize,
    mut run: impl FnMut(Arm, usize) -> Result<T, E>,
) -> Result<(Vec<T>, Vec<T>), E> {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for r in 0..repeats.max(1) {
        for arm in order(r) {
            let out = run(arm, r)?;
            match arm {
                Arm::A => a.push(out),
                Arm::B => b.push(out),
            }
        }
    }
    Ok((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arms_alternate_and_results_keep_repeat_order() {
        let mut seen = Vec::new();
        let (a, b) = paired::<_, ()>(3, |arm, r| {
            seen.push(arm);
            Ok(r)
        })
        .unwrap();
        assert_eq!(seen, [Arm::A, Arm::B, Arm::B, Arm::A, Arm::A, Arm::B]);
        assert_eq!((a, b), (vec![0, 1, 2], vec![0, 1, 2]));
    }
}
