//! The one place bench commands measure: order statistics, greedy timed runs, paired
//! (alternating) comparisons and memory read bandwidth.
//!
//! Every `moed bench*` command reports medians and percentiles computed here, so two reports
//! of the same data never disagree on what "median" or "p99" means.

mod bandwidth;
mod greedy;
mod paired;
mod prompt;

pub use bandwidth::{BandwidthProbe, read_bandwidth};
pub use greedy::{GreedyRun, greedy_run, teacher_forced};
pub use paired::{Arm, order, paired};
pub use prompt::random_prompt;

/// The median: the middle value, or the mean of the two middle values of an even count; 0 for
/// no values (a report row with nothing measured shows 0, not NaN).
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The `q`-quantile (0 ≤ q ≤ 1) by nearest rank on the sorted values: the value at index
/// round((n - 1)·q). None for no values.
pub fn nearest_rank<T: Copy + PartialOrd>(sorted: &[T], q: f64) -> Option<T> {
    let last = sorted.len().checked_sub(1)?;
    let i = (last as f64 * q.clamp(0.0, 1.0)).round() as usize;
    sorted.get(i.min(last)).copied()
}

/// [`nearest_rank`] of unsorted values; 0 for no values.
pub fn percentile(values: &[f64], q: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    nearest_rank(&v, q).unwrap_or(0.0)
}

/// The index of the largest logit (the first of equals): greedy decoding.
pub fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best as u32
}

/// `a / b`, or 0 when `b` is not positive (a ratio of speeds where one side measured nothing).
pub fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 51.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
        assert_eq!(nearest_rank::<u32>(&[], 0.5), None);
    }

    #[test]
    fn argmax_takes_the_first_of_equals() {
        assert_eq!(argmax(&[0.0, 2.0, 2.0, 1.0]), 1);
        assert_eq!(argmax(&[]), 0);
    }
}
