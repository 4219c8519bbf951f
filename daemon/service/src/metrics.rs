//! Counters of the service since it started: requests by outcome, tokens in and out, and the
//! time to the first token as a histogram. Lock-free (atomics), read as one [`Snapshot`] that an
//! adapter turns into its wire form (`Engine.Metrics` on D-Bus, OpenMetrics in moed-http).

use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds (seconds) of the time-to-first-token buckets; a last `+Inf` bucket is implied.
pub const FIRST_TOKEN_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// How a request ended, as the metrics count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Finished with an answer: a stop string or end of sequence.
    Stop,
    /// Finished at `max_tokens` or the context's end.
    Length,
    Cancelled,
    /// Failed while running.
    Error,
    /// Refused before it ran (invalid, busy, no model, ...).
    Rejected,
}

impl Outcome {
    pub const ALL: [Outcome; 5] = [
        Outcome::Stop,
        Outcome::Length,
        Outcome::Cancelled,
        Outcome::Error,
        Outcome::Rejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Stop => "stop",
            Outcome::Length => "length",
            Outcome::Cancelled => "cancelled",
            Outcome::Error => "error",
            Outcome::Rejected => "rejected",
        }
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    outcomes: [AtomicU64; 5],
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    /// Per bucket (not cumulative), the last one `+Inf`.
    first_token: [AtomicU64; FIRST_TOKEN_BUCKETS.len() + 1],
    /// Microseconds, so the sum stays an integer counter.
    first_token_sum_us: AtomicU64,
}

/// The counters at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Requests by outcome, every outcome present.
    pub requests: Vec<(&'static str, u64)>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Cumulative counts per upper bound (seconds), ending with `f64::INFINITY`.
    pub first_token_buckets: Vec<(f64, u64)>,
    pub first_token_sum_s: f64,
    pub first_token_count: u64,
}

impl Metrics {
    pub fn outcome(&self, outcome: Outcome) {
        self.outcomes[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// A request that produced tokens: its counts and, when it produced one, its time to the
    /// first token.
    pub fn tokens(&self, prompt: u64, completion: u64, first_token_s: Option<f64>) {
        self.prompt_tokens.fetch_add(prompt, Ordering::Relaxed);
        self.completion_tokens
            .fetch_add(completion, Ordering::Relaxed);
        if let Some(s) = first_token_s.filter(|s| s.is_finite() && *s >= 0.0) {
            let i = FIRST_TOKEN_BUCKETS
                .iter()
                .position(|b| s <= *b)
                .unwrap_or(FIRST_TOKEN_BUCKETS.len());
            self.first_token[i].fetch_add(1, Ordering::Relaxed);
            self.first_token_sum_us
                .fetch_add((s * 1e6) as u64, Ordering::Relaxed);
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        let mut cumulative = 0;
        let first_token_buckets: Vec<(f64, u64)> = FIRST_TOKEN_BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(&self.first_token)
            .map(|(bound, n)| {
                cumulative += n.load(Ordering::Relaxed);
                (bound, cumulative)
            })
            .collect();
        Snapshot {
            requests: Outcome::ALL
                .iter()
                .map(|o| {
                    (
                        o.as_str(),
                        self.outcomes[*o as usize].load(Ordering::Relaxed),
                    )
                })
                .collect(),
            prompt_tokens: self.prompt_tokens.load(Ordering::Relaxed),
            completion_tokens: self.completion_tokens.load(Ordering::Relaxed),
            first_token_count: cumulative,
            first_token_buckets,
            first_token_sum_s: self.first_token_sum_us.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_end_at_infinity() {
        let m = Metrics::default();
        m.tokens(10, 3, Some(0.003));
        m.tokens(5, 2, Some(0.2));
        m.tokens(1, 0, None);
        m.tokens(1, 1, Some(100.0));
        m.outcome(Outcome::Stop);
        m.outcome(Outcome::Rejected);
        let s = m.snapshot();
        assert_eq!(s.prompt_tokens, 17);
        assert_eq!(s.completion_tokens, 6);
        assert_eq!(s.first_token_count, 3);
        assert_eq!(s.first_token_buckets[0], (0.005, 1));
        assert_eq!(s.first_token_buckets[5], (0.25, 2));
        assert_eq!(s.first_token_buckets.last(), Some(&(f64::INFINITY, 3)));
        assert!((s.first_token_sum_s - 100.203).abs() < 1e-6);
        assert!(s.requests.contains(&("stop", 1)) && s.requests.contains(&("rejected", 1)));
        assert!(s.requests.contains(&("cancelled", 0)));
    }
}
