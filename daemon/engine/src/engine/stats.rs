//! Engine counters: per-layer per-expert activations, expert cache traffic, time inside ONNX Runtime.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

/// Live counters, updated with relaxed atomics from any request.
pub(crate) struct Counters {
    /// `[layer][expert]` tokens routed; dense layers have an empty row.
    pub activations: Vec<Vec<AtomicU64>>,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub evictions: AtomicU64,
    pub load_bytes: AtomicU64,
    pub load_nanos: AtomicU64,
    pub storage_read_bytes: AtomicU64,
    pub read_ahead_bytes: AtomicU64,
    pub resident_bytes: AtomicU64,
    pub resident_experts: AtomicU64,
    pub held_bytes: AtomicU64,
    pub held_experts: AtomicU64,
    pub guessed: AtomicU64,
    pub guessed_right: AtomicU64,
    pub guess_chosen: AtomicU64,
    pub guess_read_ahead_bytes: AtomicU64,
    pub ort_runs: AtomicU64,
    pub ort_nanos: AtomicU64,
    pub expert_runs: AtomicU64,
    pub expert_nanos: AtomicU64,
    pub forward_calls: AtomicU64,
    pub forward_tokens: AtomicU64,
    pub batch_steps: AtomicU64,
    pub batch_sequences: AtomicU64,
    pub batched_attention_runs: AtomicU64,
    pub attention_nanos: AtomicU64,
    pub head_nanos: AtomicU64,
}

impl Counters {
    pub fn new(experts_per_layer: &[usize]) -> Counters {
        Counters {
            activations: experts_per_layer
                .iter()
                .map(|&n| (0..n).map(|_| AtomicU64::new(0)).collect())
                .collect(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            load_bytes: AtomicU64::new(0),
            load_nanos: AtomicU64::new(0),
            storage_read_bytes: AtomicU64::new(0),
            read_ahead_bytes: AtomicU64::new(0),
            resident_bytes: AtomicU64::new(0),
            resident_experts: AtomicU64::new(0),
            held_bytes: AtomicU64::new(0),
            held_experts: AtomicU64::new(0),
            guessed: AtomicU64::new(0),
            guessed_right: AtomicU64::new(0),
            guess_chosen: AtomicU64::new(0),
            guess_read_ahead_bytes: AtomicU64::new(0),
            ort_runs: AtomicU64::new(0),
            ort_nanos: AtomicU64::new(0),
            expert_runs: AtomicU64::new(0),
            expert_nanos: AtomicU64::new(0),
            forward_calls: AtomicU64::new(0),
            forward_tokens: AtomicU64::new(0),
            batch_steps: AtomicU64::new(0),
            batch_sequences: AtomicU64::new(0),
            batched_attention_runs: AtomicU64::new(0),
            attention_nanos: AtomicU64::new(0),
            head_nanos: AtomicU64::new(0),
        }
    }

    pub fn snapshot(&self) -> EngineStats {
        EngineStats {
            activations: self
                .activations
                .iter()
                .map(|row| row.iter().map(|a| a.load(Relaxed)).collect())
                .collect(),
            cache_hits: self.hits.load(Relaxed),
            cache_misses: self.misses.load(Relaxed),
            cache_evictions: self.evictions.load(Relaxed),
            expert_load_bytes: self.load_bytes.load(Relaxed),
            expert_load_nanos: self.load_nanos.load(Relaxed),
            storage_read_bytes: self.storage_read_bytes.load(Relaxed),
            read_ahead_bytes: self.read_ahead_bytes.load(Relaxed),
            resident_expert_bytes: self.resident_bytes.load(Relaxed),
            resident_experts: self.resident_experts.load(Relaxed),
            held_expert_bytes: self.held_bytes.load(Relaxed),
            held_experts: self.held_experts.load(Relaxed),
            prefetch_guessed: self.guessed.load(Relaxed),
            prefetch_guessed_right: self.guessed_right.load(Relaxed),
            prefetch_chosen: self.guess_chosen.load(Relaxed),
            prefetch_read_ahead_bytes: self.guess_read_ahead_bytes.load(Relaxed),
            ort_runs: self.ort_runs.load(Relaxed),
            ort_nanos: self.ort_nanos.load(Relaxed),
            expert_runs: self.expert_runs.load(Relaxed),
            expert_nanos: self.expert_nanos.load(Relaxed),
            forward_calls: self.forward_calls.load(Relaxed),
            forward_tokens: self.forward_tokens.load(Relaxed),
            batch_steps: self.batch_steps.load(Relaxed),
            batch_sequences: self.batch_sequences.load(Relaxed),
            batched_attention_runs: self.batched_attention_runs.load(Relaxed),
            attention_nanos: self.attention_nanos.load(Relaxed),
            head_nanos: self.head_nanos.load(Relaxed),
        }
    }
}

/// A snapshot of the engine's counters since load.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EngineStats {
    /// `activations[layer][expert]`: tokens routed to that expert (empty for dense layers).
    pub activations: Vec<Vec<u64>>,
    /// Expert graph lookups that found the session resident.
    pub cache_hits: u64,
    /// Lookups that had to create the session (first use, or after eviction).
    pub cache_misses: u64,
    /// Sessions dropped to stay within `expert_memory_budget`.
    pub cache_evictions: u64,
    /// File bytes of the expert graphs loaded on misses, and the wall time creating their
    /// sessions took (their weights are mapped, and paged in by the first run: that part of a
    /// miss's cost is in the run's time, and its disk reads in `storage_read_bytes`).
    pub expert_load_bytes: u64,
    pub expert_load_nanos: u64,
    /// Bytes the process read from storage (not the page cache) during this engine's forward
    /// passes: weights paged in, experts loaded after a miss or reclaimed under memory pressure.
    /// Passes of several engines at once count each other's reads.
    pub storage_read_bytes: u64,
    /// Under a budget: file bytes of the missing experts a layer chose that the kernel was asked
    /// to read ahead, all at once, before their sessions were created one by one.
    pub read_ahead_bytes: u64,
    /// File bytes of the resident expert graphs.
    pub resident_expert_bytes: u64,
    pub resident_experts: u64,
    /// Of those, the hottest experts held resident, never evicted ([`super::Engine::hold_hot_experts`]).
    pub held_expert_bytes: u64,
    pub held_experts: u64,
    /// Predictive prefetch under a budget (`prefetch`): experts guessed for a layer before it
    /// ran (one per layer, step and expert), how many of them the layer then chose, and how many
    /// experts the layers that had a guess chose; accuracy is `guessed_right / guessed`, coverage
    /// `guessed_right / chosen`.
    pub prefetch_guessed: u64,
    pub prefetch_guessed_right: u64,
    pub prefetch_chosen: u64,
    /// File bytes of guessed experts, not resident, that the kernel was asked to read ahead.
    pub prefetch_read_ahead_bytes: u64,
    /// `Session::run` calls and the wall time spent inside them.
    pub ort_runs: u64,
    pub ort_nanos: u64,
    /// The part of those spent in routed-expert graphs.
    pub expert_runs: u64,
    pub expert_nanos: u64,
    pub forward_calls: u64,
    pub forward_tokens: u64,
    /// Forward passes that ran more than one sequence ([`super::Engine::forward_batch`]), and
    /// the sequences they ran.
    pub batch_steps: u64,
    pub batch_sequences: u64,
    /// Attention graph runs that served several sequences at once.
    pub batched_attention_runs: u64,
    /// The part of `ort_nanos` spent in attention graphs and in the head.
    pub attention_nanos: u64,
    pub head_nanos: u64,
}

impl EngineStats {
    /// Counters accumulated between `earlier` and `self`.
    pub fn since(&self, earlier: &EngineStats) -> EngineStats {
        EngineStats {
            activations: self
                .activations
                .iter()
                .zip(
                    earlier
                        .activations
                        .iter()
                        .chain(std::iter::repeat(&Vec::new())),
                )
                .map(|(now, then)| {
                    now.iter()
                        .enumerate()
                        .map(|(i, &n)| n.saturating_sub(then.get(i).copied().unwrap_or(0)))
                        .collect()
                })
                .collect(),
            cache_hits: self.cache_hits.saturating_sub(earlier.cache_hits),
            cache_misses: self.cache_misses.saturating_sub(earlier.cache_misses),
            cache_evictions: self.cache_evictions.saturating_sub(earlier.cache_evictions),
            expert_load_bytes: self
                .expert_load_bytes
                .saturating_sub(earlier.expert_load_bytes),
            expert_load_nanos: self
                .expert_load_nanos
                .saturating_sub(earlier.expert_load_nanos),
            storage_read_bytes: self
                .storage_read_bytes
                .saturating_sub(earlier.storage_read_bytes),
            read_ahead_bytes: self
                .read_ahead_bytes
                .saturating_sub(earlier.read_ahead_bytes),
            resident_expert_bytes: self.resident_expert_bytes,
            resident_experts: self.resident_experts,
            held_expert_bytes: self.held_expert_bytes,
            held_experts: self.held_experts,
            prefetch_guessed: self
                .prefetch_guessed
                .saturating_sub(earlier.prefetch_guessed),
            prefetch_guessed_right: self
                .prefetch_guessed_right
                .saturating_sub(earlier.prefetch_guessed_right),
            prefetch_chosen: self.prefetch_chosen.saturating_sub(earlier.prefetch_chosen),
            prefetch_read_ahead_bytes: self
                .prefetch_read_ahead_bytes
                .saturating_sub(earlier.prefetch_read_ahead_bytes),
            ort_runs: self.ort_runs.saturating_sub(earlier.ort_runs),
            ort_nanos: self.ort_nanos.saturating_sub(earlier.ort_nanos),
            expert_runs: self.expert_runs.saturating_sub(earlier.expert_runs),
            expert_nanos: self.expert_nanos.saturating_sub(earlier.expert_nanos),
            forward_calls: self.forward_calls.saturating_sub(earlier.forward_calls),
            forward_tokens: self.forward_tokens.saturating_sub(earlier.forward_tokens),
            batch_steps: self.batch_steps.saturating_sub(earlier.batch_steps),
            batch_sequences: self.batch_sequences.saturating_sub(earlier.batch_sequences),
            batched_attention_runs: self
                .batched_attention_runs
                .saturating_sub(earlier.batched_attention_runs),
            attention_nanos: self.attention_nanos.saturating_sub(earlier.attention_nanos),
            head_nanos: self.head_nanos.saturating_sub(earlier.head_nanos),
        }
    }
}
