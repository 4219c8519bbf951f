//! Load time and resident memory per component for `moed bench`: how long a package takes from
//! the start of its load to the first token, and where the process's memory goes (weights mapped
//! from the package, what creating sessions added, what running added, the KV cache).

use std::time::Instant;

use serde::Serialize;

use crate::engine::{Engine, EngineError, Logits};
use crate::procmem::{self, MemSnapshot};

/// Taken by the caller just before `Engine::load`, so the bench can time the load and see what it
/// added.
#[derive(Debug, Clone, Copy)]
pub struct LoadStart {
    pub at: Instant,
    pub memory: MemSnapshot,
}

impl LoadStart {
    pub fn now() -> LoadStart {
        LoadStart {
            memory: MemSnapshot::now(),
            at: Instant::now(),
        }
    }
}

/// Milliseconds from the start of the load.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// `Engine::load` returned: every graph but the routed experts has its session.
    pub load_ms: f64,
    /// The first token of a fresh prompt came out (its routed experts created as they were
    /// needed): what a user waits for after starting a model.
    pub load_to_first_token_ms: f64,
    /// Every other expert session created too (the bench runs dense execution).
    pub all_experts_ms: f64,
}

/// Resident bytes per component, from the kernel's own counts (`/proc/self`).
#[derive(Debug, Clone, Serialize)]
pub struct MemoryReport {
    pub before_load: MemSnapshot,
    /// After the load and the first token.
    pub after_first_token: MemSnapshot,
    /// After every expert session is created.
    pub after_all_experts: MemSnapshot,
    /// After the warm-up runs (sparse and dense), before the bandwidth buffer is allocated.
    pub after_warmup: MemSnapshot,
    /// Peak RSS of the process up to the end of the warm-up (the bandwidth buffer comes later).
    pub peak_rss: u64,
    /// ONNX Runtime sessions in the process.
    pub sessions: u64,
    /// Bytes of the package's graph and weight files.
    pub weight_file_bytes: u64,
    /// Resident pages mapped from the package's files (weights ONNX Runtime reads in place).
    pub weights_mapped: u64,
    /// Anonymous memory that loading added (sessions and their prepacked weights, and the arenas
    /// of the first token's runs).
    pub sessions_anonymous: u64,
    /// Anonymous memory the warm-up runs added (arenas, activations).
    pub runs_anonymous: u64,
    /// Weights moed's kernel holds repacked (anonymous; counted in the two figures above, and
    /// their mapped originals dropped from the RSS).
    pub weights_packed: u64,
    /// The KV cache of one sequence of prompt + decode tokens.
    pub kv_cache: u64,
    /// The rest of the RSS: binary, libraries, heap from before the load.
    pub other: u64,
    /// (weights mapped + sessions' anonymous memory + weights packed during the warm-up) / weight
    /// file bytes: 1.0 would be every weight resident exactly once.
    pub weights_factor: f64,
    /// (peak RSS - RSS before the load) / weight file bytes.
    pub peak_factor: f64,
}

/// The package's files the engine reads weights from.
fn weight_file_bytes(engine: &Engine) -> u64 {
    engine
        .package()
        .manifest()
        .files
        .iter()
        .filter(|(name, _)| name.ends_with(".onnx") || name.ends_with(".onnx.data"))
        .map(|(_, f)| f.bytes)
        .sum()
}

/// Runs a fresh prompt to its first token; returns the KV cache bytes of one token.
pub(super) fn first_token(engine: &Engine, prompt: &[u32]) -> Result<u64, EngineError> {
    let mut seq = engine.new_sequence();
    engine.forward(&mut seq, prompt, Logits::Last)?;
    Ok((seq.cache_bytes() / prompt.len().max(1)) as u64)
}

/// The figures of one bench run, gathered as it goes.
pub(super) struct Tracker {
    start: LoadStart,
    first_token: Option<(f64, MemSnapshot)>,
    all_experts: Option<(f64, MemSnapshot)>,
    /// Bytes of weights packed when every expert session had been created.
    packed_at_all_experts: u64,
}

impl Tracker {
    pub fn new(start: LoadStart) -> Tracker {
        Tracker {
            start,
            first_token: None,
            all_experts: None,
            packed_at_all_experts: 0,
        }
    }

    fn mark(&self) -> (f64, MemSnapshot) {
        (
            self.start.at.elapsed().as_secs_f64() * 1e3,
            MemSnapshot::now(),
        )
    }

    pub fn first_token_done(&mut self) {
        self.first_token = Some(self.mark());
    }

    pub fn all_experts_done(&mut self) {
        self.all_experts = Some(self.mark());
        self.packed_at_all_experts = moed_engine::qmatmul::packed_bytes();
    }

    /// The reports, read after the warm-up.
    pub fn finish(
        &self,
        engine: &Engine,
        load_ms: f64,
        kv_cache: u64,
    ) -> (LoadReport, MemoryReport) {
        let (ft_ms, ft_mem) = self.first_token.unwrap_or_else(|| self.mark());
        let (all_ms, all_mem) = self.all_experts.unwrap_or((ft_ms, ft_mem));
        let warm = MemSnapshot::now();
        let before = self.start.memory;
        let weights = weight_file_bytes(engine);
        let mapped = procmem::mapped_under(engine.package().dir());
        let sessions_anonymous = all_mem.anonymous.saturating_sub(before.anonymous);
        let runs_anonymous = warm.anonymous.saturating_sub(all_mem.anonymous);
        let weights_packed = moed_engine::qmatmul::packed_bytes();
        // Weights packed during the warm-up are in the runs' anonymous memory.
        let packed_in_runs = weights_packed
            .saturating_sub(self.packed_at_all_experts)
            .min(runs_anonymous);
        let ratio = |a: u64| {
            if weights > 0 {
                a as f64 / weights as f64
            } else {
                0.0
            }
        };
        let memory = MemoryReport {
            before_load: before,
            after_first_token: ft_mem,
            after_all_experts: all_mem,
            after_warmup: warm,
            peak_rss: warm.peak_rss,
            sessions: engine.session_count() as u64,
            weight_file_bytes: weights,
            weights_mapped: mapped,
            sessions_anonymous,
            runs_anonymous,
            weights_packed,
            kv_cache,
            other: warm
                .rss
                .saturating_sub(mapped + sessions_anonymous + runs_anonymous),
            weights_factor: ratio(mapped + sessions_anonymous + packed_in_runs),
            peak_factor: ratio(warm.peak_rss.saturating_sub(before.rss)),
        };
        let load = LoadReport {
            load_ms,
            load_to_first_token_ms: ft_ms,
            all_experts_ms: all_ms,
        };
        (load, memory)
    }
}
