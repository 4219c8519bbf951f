//! Counters of the service since it started: requests by outcome, tokens in and out, and
//! histograms of the time to the first token, the wait for an execution slot and the time
//! between generated tokens. Lock-free (atomics), read as one [`Snapshot`] that an adapter turns
//! into its wire form (`Engine.Metrics` on D-Bus, OpenMetrics in moed-http).

use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds (seconds) of the time-to-first-token buckets; a last `+Inf` bucket is implied.
pub const FIRST_TOKEN_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Upper bounds (seconds) of the queue-wait buckets: from no wait to minutes behind others.
pub const QUEUE_WAIT_BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0,
];
/// Upper bounds (seconds) of the between-tokens buckets: decode steps of small to large models.
pub const TOKEN_INTERVAL_BUCKETS: [f64; 12] = [
    0.002, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0, 2.5,
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

/// Observations of seconds in fixed buckets (Prometheus' histogram), lock-free.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Per bucket (not cumulative), the last one `+Inf`.
    counts: Vec<AtomicU64>,
    /// Microseconds, so the sum stays an integer counter.
    sum_us: AtomicU64,
}

/// A histogram at one moment.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HistogramSnapshot {
    /// Cumulative counts per upper bound (seconds), ending with `f64::INFINITY`.
    pub buckets: Vec<(f64, u64)>,
    pub sum_s: f64,
    pub count: u64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_us: AtomicU64::new(0),
        }
    }

    /// Counts `seconds`; a negative or non-finite value (a clock gone wrong) is not counted.
    pub fn observe(&self, seconds: f64) {
        if !(seconds.is_finite() && seconds >= 0.0) {
            return;
        }
        let i = self
            .bounds
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(self.bounds.len());
        if let Some(c) = self.counts.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_us
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = 0;
        let buckets = self
            .bounds
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(&self.counts)
            .map(|(bound, n)| {
                cumulative += n.load(Ordering::Relaxed);
                (bound, cumulative)
            })
            .collect();
        HistogramSnapshot {
            buckets,
            sum_s: self.sum_us.load(Ordering::Relaxed) as f64 / 1e6,
            count: cumulative,
        }
    }
}

#[derive(Debug)]
pub struct Metrics {
    outcomes: [AtomicU64; 5],
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    first_token: Histogram,
    queue_wait: Histogram,
    token_interval: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            outcomes: Default::default(),
            prompt_tokens: AtomicU64::new(0),
            completion_tokens: AtomicU64::new(0),
            first_token: Histogram::new(&FIRST_TOKEN_BUCKETS),
            queue_wait: Histogram::new(&QUEUE_WAIT_BUCKETS),
            token_interval: Histogram::new(&TOKEN_INTERVAL_BUCKETS),
        }
    }
}

/// The counters at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Requests by outcome, every outcome present.
    pub requests: Vec<(&'static str, u64)>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub first_token: HistogramSnapshot,
    pub queue_wait: HistogramSnapshot,
    pub token_interval: HistogramSnapshot,
}

impl Metrics {
    pub fn outcome(&self, outcome: Outcome) {
        self.outcomes[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// A request that produced tokens: its counts, its time to the first token when it
    /// produced one, and the time between each generated token and the next.
    pub fn tokens(
        &self,
        prompt: u64,
        completion: u64,
        first_token_s: Option<f64>,
        intervals_s: &[f32],
    ) {
        self.prompt_tokens.fetch_add(prompt, Ordering::Relaxed);
        self.completion_tokens
            .fetch_add(completion, Ordering::Relaxed);
        if let Some(s) = first_token_s {
            self.first_token.observe(s);
        }
        for s in intervals_s {
            self.token_interval.observe(f64::from(*s));
        }
    }

    /// How long a request waited for an execution slot.
    pub fn queue_wait(&self, seconds: f64) {
        self.queue_wait.observe(seconds);
    }

    pub fn snapshot(&self) -> Snapshot {
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
            first_token: self.first_token.snapshot(),
            queue_wait: self.queue_wait.snapshot(),
            token_interval: self.token_interval.snapshot(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_end_at_infinity() {
        let m = Metrics::default();
        m.tokens(10, 3, Some(0.003), &[0.01, 0.3]);
        m.tokens(5, 2, Some(0.2), &[0.004]);
        m.tokens(1, 0, None, &[]);
        m.tokens(1, 1, Some(100.0), &[]);
        m.queue_wait(0.0);
        m.queue_wait(f64::NAN);
        m.queue_wait(-1.0);
        m.outcome(Outcome::Stop);
        m.outcome(Outcome::Rejected);
        let s = m.snapshot();
        assert_eq!(s.prompt_tokens, 17);
        assert_eq!(s.completion_tokens, 6);
        assert_eq!(s.first_token.count, 3);
        assert_eq!(s.first_token.buckets[0], (0.005, 1));
        assert_eq!(s.first_token.buckets[5], (0.25, 2));
        assert_eq!(s.first_token.buckets.last(), Some(&(f64::INFINITY, 3)));
        assert!((s.first_token.sum_s - 100.203).abs() < 1e-6);
        assert_eq!(s.token_interval.count, 3);
        assert_eq!(s.token_interval.buckets[1], (0.005, 1));
        assert_eq!(s.token_interval.buckets[2], (0.01, 2));
        assert_eq!(s.token_interval.buckets[9], (0.5, 3));
        // Only the real wait counts; a clock gone wrong is dropped, not a bucket.
        assert_eq!(s.queue_wait.count, 1);
        assert_eq!(s.queue_wait.buckets[0], (0.001, 1));
        assert!(s.requests.contains(&("stop", 1)) && s.requests.contains(&("rejected", 1)));
        assert!(s.requests.contains(&("cancelled", 0)));
    }
}
