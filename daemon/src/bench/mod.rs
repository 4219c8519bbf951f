//! Benchmarks behind `moed bench`: prefill/decode speed, sparse against dense, memory bandwidth.
//!
//! Sparse and dense execution run on the same engine and sessions, alternating within each repeat
//! (which one goes first alternates too), so both see the same machine state; medians are
//! reported. The memory bandwidth is measured in the same run with the engine's thread count.

mod batch;
mod context;
pub mod gate;
pub mod knowledge;
pub mod measure;
mod memory;
pub mod plugins;
pub mod serve;
mod side_by_side;
mod soak;

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

pub use batch::BatchResult;
pub use context::ContextResult;
pub use measure::{BandwidthProbe, read_bandwidth};
pub use memory::{LoadReport, LoadStart, MemoryReport};
pub use serve::{
    LoadBenchError, LoadBenchOptions, Row as LoadBenchRow, run as run_load_bench,
    table as load_bench_table,
};
pub use side_by_side::SideBySideResult;
pub use soak::{SoakReport, run as run_soak};

use crate::engine::{Engine, EngineError, EngineStats, ExecMode, PlacementSummary, WeightBytes};
use crate::package::GraphPrecision;
use measure::{Arm, greedy_run, median, ratio};

#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub prompt_tokens: usize,
    pub decode_tokens: usize,
    pub repeat: usize,
    pub seed: u64,
    /// Buffer size of the bandwidth measurement.
    pub bandwidth_bytes: usize,
    /// When the engine's load started: the bench then times load to first token and reports
    /// memory per component (the engine must be fresh: no expert loaded, nothing run).
    pub load_start: Option<LoadStart>,
    /// Context lengths to measure sparse decode speed at (none: skipped).
    pub contexts: Vec<usize>,
    /// Sequences stepping together in the batched-decode comparison (below 2: skipped).
    pub batch: usize,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            prompt_tokens: 64,
            decode_tokens: 32,
            repeat: 5,
            seed: 0,
            bandwidth_bytes: 1 << 30,
            load_start: None,
            contexts: Vec::new(),
            batch: 0,
        }
    }
}

/// One timed prefill + decode in one mode.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub prefill_tok_s: f64,
    pub decode_tok_s: f64,
    pub ttft_ms: f64,
    /// Bytes read per decoded token: weights touched plus the KV cache.
    pub bytes_per_token: f64,
    /// Routed-expert bytes read per decoded token.
    pub expert_bytes_per_token: f64,
    /// Share of decode wall time not inside `Session::run`.
    pub outside_ort_share: f64,
    /// Time inside routed-expert graphs per decoded token, ms.
    pub expert_ms_per_token: f64,
    /// Time inside attention graphs (with the routers fused into them) per decoded token, ms.
    pub attention_ms_per_token: f64,
    /// Time inside the head per decoded token, ms.
    pub head_ms_per_token: f64,
    /// Memory read bandwidth measured just before this run, bytes/s.
    pub bandwidth: f64,
    /// bytes_per_token x decode_tok_s / bandwidth.
    pub bandwidth_fraction: f64,
    /// Share of the decode's expert lookups the cache answered (1 when there were none).
    pub expert_hit_rate: f64,
    /// Expert file bytes loaded on misses per decoded token, bytes read from storage (not the
    /// page cache) per decoded token, and the mean time of creating one expert's session, ms (0
    /// without misses; paging its weights in is part of the run's time).
    pub expert_load_bytes_per_token: f64,
    pub storage_bytes_per_token: f64,
    pub ms_per_miss: f64,
    /// Predictive prefetch during the decode: the share of guessed experts the layer then chose,
    /// and the share of chosen experts that were guessed (0 without guesses).
    pub prefetch_accuracy: f64,
    pub prefetch_coverage: f64,
    /// ONNX Runtime runs per decoded token.
    pub runs_per_token: f64,
    /// Mean wall time of one of those runs, µs.
    pub us_per_run: f64,
    /// Share of decode wall time that is the fixed cost of those runs: runs_per_token x the
    /// report's run_overhead_us / the time per token.
    pub run_overhead_share: f64,
}

/// Medians over the repeats of one mode.
#[derive(Debug, Clone, Serialize)]
pub struct ModeResult {
    pub prefill_tok_s: f64,
    pub decode_tok_s: f64,
    pub ttft_ms: f64,
    pub bytes_per_token: f64,
    pub expert_bytes_per_token: f64,
    pub outside_ort_share: f64,
    pub expert_ms_per_token: f64,
    pub attention_ms_per_token: f64,
    pub head_ms_per_token: f64,
    pub expert_hit_rate: f64,
    pub expert_load_bytes_per_token: f64,
    pub storage_bytes_per_token: f64,
    pub ms_per_miss: f64,
    pub prefetch_accuracy: f64,
    pub prefetch_coverage: f64,
    /// Decode bandwidth use: median over runs of bytes per token x tokens/s / the read bandwidth
    /// measured before that run.
    pub bandwidth_fraction: f64,
    pub runs_per_token: f64,
    pub us_per_run: f64,
    pub run_overhead_share: f64,
    pub runs: Vec<RunResult>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub model: String,
    pub architecture: String,
    pub expert_precision: String,
    /// Weight storage per graph kind (manifest.precision.graphs; a format-1 package's meaning).
    pub graph_precision: BTreeMap<String, GraphPrecision>,
    pub execution_provider: String,
    /// What ran the block-quantized matmuls (`engine.quantized_matmul`), e.g. `moed (avx512-vnni)`.
    pub quantized_matmul: String,
    pub threads: usize,
    pub prompt_tokens: usize,
    pub decode_tokens: usize,
    pub repeat: usize,
    pub weights: WeightBytes,
    pub resident_expert_bytes: u64,
    pub expert_budget: Option<u64>,
    /// Where the graphs ran: graphs and file bytes per provider, the GPU budget used, fallbacks.
    pub placement: PlacementSummary,
    /// Memory read bandwidth, median of the measurements taken before each repeat, bytes/s.
    pub bandwidth: f64,
    pub bandwidth_buffer_bytes: usize,
    /// Fixed cost of one ONNX Runtime run (a one-node graph on one float), µs: median of the
    /// measurements taken before each repeat.
    pub run_overhead_us: f64,
    pub sparse: ModeResult,
    pub dense: ModeResult,
    /// Sparse / dense decode tokens per second.
    pub decode_ratio: f64,
    pub prefill_ratio: f64,
    /// Dense / sparse expert bytes per token: routed experts (+ shared) per MoE layer.
    pub ideal_ratio: f64,
    /// Dense / sparse bytes per decoded token, everything counted (attention, head, KV cache...).
    pub ideal_ratio_all_bytes: f64,
    /// Dense / sparse time inside routed-expert graphs per decoded token.
    pub expert_time_ratio: f64,
    /// Sparse decode with the experts of a step side by side on the threads against one after
    /// another (paired runs, same prompts); absent with one thread, a spinning pool or a GPU
    /// provider.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub side_by_side: Option<SideBySideResult>,
    /// Batched decode against one sequence alone (`--batch`).
    pub batch: Option<BatchResult>,
    /// Sparse decode speed by context length (`--contexts`), shortest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub contexts: Vec<ContextResult>,
    /// Load to first token; absent unless the bench loaded the engine itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load: Option<LoadReport>,
    /// Resident memory per component; absent unless the bench loaded the engine itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryReport>,
}

/// Runs of the one-node graph per overhead measurement.
const OVERHEAD_RUNS: usize = 2000;

/// Bytes of weights every decoded token reads whatever the routing: embedding row, attention,
/// routers, shared experts, dense MLPs, head. The row is the table's bytes over the vocabulary, so a
/// quantized embedding counts its codes and scales.
fn fixed_bytes_per_token(engine: &Engine, w: &WeightBytes) -> f64 {
    let vocab = engine.package().vocab_size().max(1) as f64;
    (w.embed as f64 / vocab) + (w.attn + w.router + w.shared + w.dense_mlp + w.head) as f64
}

fn expert_bytes_routed(engine: &Engine, delta: &EngineStats) -> f64 {
    let mut total = 0.0;
    for (l, row) in delta.activations.iter().enumerate() {
        for (e, &n) in row.iter().enumerate() {
            total += n as f64 * engine.expert_file_bytes(l, e) as f64;
        }
    }
    total
}

fn run_once(
    engine: &Engine,
    cfg: &BenchConfig,
    mode: ExecMode,
    rng: &mut StdRng,
    bandwidth: f64,
    run_overhead_us: f64,
) -> Result<RunResult, EngineError> {
    let vocab = engine.package().vocab_size() as u32;
    let prompt: Vec<u32> = (0..cfg.prompt_tokens)
        .map(|_| rng.random_range(0..vocab))
        .collect();
    let w = engine.weight_bytes();
    let mut seq = engine.new_sequence();
    let run = greedy_run(engine, &mut seq, &prompt, cfg.decode_tokens, mode)?;
    let (ttft, decode, delta, kv_read) = (
        run.prefill_secs,
        run.decode_secs,
        run.decode_stats,
        run.kv_bytes_read,
    );

    let d = cfg.decode_tokens.max(1) as f64;
    let expert_bytes = match mode {
        ExecMode::Sparse => expert_bytes_routed(engine, &delta) / d,
        ExecMode::Dense => w.experts as f64,
    };
    let ort_secs = delta.ort_nanos as f64 / 1e9;
    let bytes_per_token = fixed_bytes_per_token(engine, &w) + expert_bytes + kv_read / d;
    let runs_per_token = delta.ort_runs as f64 / d;
    Ok(RunResult {
        runs_per_token,
        us_per_run: if delta.ort_runs > 0 {
            delta.ort_nanos as f64 / 1e3 / delta.ort_runs as f64
        } else {
            0.0
        },
        run_overhead_share: if decode > 0.0 {
            runs_per_token * run_overhead_us * 1e-6 / (decode / d)
        } else {
            0.0
        },
        prefill_tok_s: cfg.prompt_tokens as f64 / ttft,
        decode_tok_s: d / decode,
        ttft_ms: ttft * 1e3,
        bytes_per_token,
        expert_bytes_per_token: expert_bytes,
        outside_ort_share: if decode > 0.0 {
            (1.0 - ort_secs / decode).max(0.0)
        } else {
            0.0
        },
        expert_ms_per_token: delta.expert_nanos as f64 / 1e6 / d,
        attention_ms_per_token: delta.attention_nanos as f64 / 1e6 / d,
        head_ms_per_token: delta.head_nanos as f64 / 1e6 / d,
        expert_hit_rate: match delta.cache_hits + delta.cache_misses {
            0 => 1.0,
            lookups => delta.cache_hits as f64 / lookups as f64,
        },
        expert_load_bytes_per_token: delta.expert_load_bytes as f64 / d,
        storage_bytes_per_token: delta.storage_read_bytes as f64 / d,
        ms_per_miss: if delta.cache_misses > 0 {
            delta.expert_load_nanos as f64 / 1e6 / delta.cache_misses as f64
        } else {
            0.0
        },
        prefetch_accuracy: share(delta.prefetch_guessed_right, delta.prefetch_guessed),
        prefetch_coverage: share(delta.prefetch_guessed_right, delta.prefetch_chosen),
        bandwidth,
        bandwidth_fraction: if bandwidth > 0.0 {
            bytes_per_token * (d / decode) / bandwidth
        } else {
            0.0
        },
    })
}

/// `part / whole`, 0 when `whole` is.
fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

fn summarize(runs: Vec<RunResult>) -> ModeResult {
    let pick = |f: fn(&RunResult) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
    let decode_tok_s = pick(|r| r.decode_tok_s);
    let bytes_per_token = pick(|r| r.bytes_per_token);
    ModeResult {
        prefill_tok_s: pick(|r| r.prefill_tok_s),
        decode_tok_s,
        ttft_ms: pick(|r| r.ttft_ms),
        bytes_per_token,
        expert_bytes_per_token: pick(|r| r.expert_bytes_per_token),
        outside_ort_share: pick(|r| r.outside_ort_share),
        expert_ms_per_token: pick(|r| r.expert_ms_per_token),
        attention_ms_per_token: pick(|r| r.attention_ms_per_token),
        head_ms_per_token: pick(|r| r.head_ms_per_token),
        expert_hit_rate: pick(|r| r.expert_hit_rate),
        expert_load_bytes_per_token: pick(|r| r.expert_load_bytes_per_token),
        storage_bytes_per_token: pick(|r| r.storage_bytes_per_token),
        ms_per_miss: pick(|r| r.ms_per_miss),
        prefetch_accuracy: pick(|r| r.prefetch_accuracy),
        prefetch_coverage: pick(|r| r.prefetch_coverage),
        bandwidth_fraction: pick(|r| r.bandwidth_fraction),
        runs_per_token: pick(|r| r.runs_per_token),
        us_per_run: pick(|r| r.us_per_run),
        run_overhead_share: pick(|r| r.run_overhead_share),
        runs,
    }
}

/// Runs the benchmark on `engine` (whose experts are preloaded first unless it has a budget).
pub fn run(
    engine: &Engine,
    cfg: &BenchConfig,
    expert_budget: Option<u64>,
) -> Result<BenchReport, EngineError> {
    let m = engine.package().manifest();
    let routing = m.routing.as_ref();
    let ctx = engine.package().context_length();
    if cfg.prompt_tokens == 0 || cfg.prompt_tokens + cfg.decode_tokens > ctx {
        return Err(EngineError::Options(format!(
            "prompt tokens ({}) must be at least 1 and prompt + decode tokens ({}) at most the context length {ctx}",
            cfg.prompt_tokens,
            cfg.prompt_tokens + cfg.decode_tokens
        )));
    }
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut tracker = cfg.load_start.map(|start| {
        let load_ms = start.at.elapsed().as_secs_f64() * 1e3;
        (memory::Tracker::new(start), load_ms)
    });
    let mut kv_per_token = 0;
    if let Some((t, _)) = tracker.as_mut() {
        // A prompt of its own, so the timed runs' prompts stay those of a bench without it.
        let vocab = engine.package().vocab_size() as u32;
        let mut first_rng = StdRng::seed_from_u64(cfg.seed ^ 0x5eed);
        let prompt: Vec<u32> = (0..cfg.prompt_tokens)
            .map(|_| first_rng.random_range(0..vocab))
            .collect();
        kv_per_token = memory::first_token(engine, &prompt)?;
        t.first_token_done();
    }
    context::check(engine, &cfg.contexts, cfg.decode_tokens)?;
    if expert_budget.is_none() {
        engine.preload_experts()?;
    }
    if let Some((t, _)) = tracker.as_mut() {
        t.all_experts_done();
    }
    // Warm-up: ONNX Runtime allocates and plans on a graph's first runs.
    let warm = BenchConfig {
        prompt_tokens: cfg.prompt_tokens.min(8),
        decode_tokens: cfg.decode_tokens.min(4),
        ..cfg.clone()
    };
    for mode in [ExecMode::Sparse, ExecMode::Dense] {
        run_once(engine, &warm, mode, &mut rng, 0.0, 0.0)?;
    }
    // Read before the bandwidth buffer (far larger than the caches) is allocated.
    let (load, memory) = match &tracker {
        Some((t, load_ms)) => {
            let kv = kv_per_token * (cfg.prompt_tokens + cfg.decode_tokens) as u64;
            let (l, m) = t.finish(engine, *load_ms, kv);
            (Some(l), Some(m))
        }
        None => (None, None),
    };
    // Bandwidth is measured before every repeat: on a shared machine it moves with the load.
    let probe = BandwidthProbe::new(cfg.bandwidth_bytes);
    let mut bandwidths = Vec::new();
    let mut overheads = Vec::new();

    let mut sparse = Vec::new();
    let mut dense = Vec::new();
    for r in 0..cfg.repeat.max(1) {
        let bandwidth = probe.measure(engine.intra_threads(), 3);
        bandwidths.push(bandwidth);
        let overhead = engine.run_overhead_us(OVERHEAD_RUNS)?;
        overheads.push(overhead);
        for arm in measure::order(r) {
            let mode = match arm {
                Arm::A => ExecMode::Sparse,
                Arm::B => ExecMode::Dense,
            };
            // Each repeat uses the same prompt in both modes.
            let mut run_rng = StdRng::seed_from_u64(cfg.seed.wrapping_add(r as u64 + 1));
            let res = run_once(engine, cfg, mode, &mut run_rng, bandwidth, overhead)?;
            match arm {
                Arm::A => sparse.push(res),
                Arm::B => dense.push(res),
            }
        }
    }
    let bandwidth = median(&bandwidths);
    let side_by_side = side_by_side::run(
        engine,
        cfg.prompt_tokens,
        cfg.decode_tokens,
        cfg.repeat,
        cfg.seed,
    )?;
    let batch = batch::run(
        engine,
        cfg.batch,
        cfg.prompt_tokens,
        cfg.decode_tokens,
        cfg.repeat,
        cfg.seed,
    )?;
    let contexts = if cfg.contexts.is_empty() {
        Vec::new()
    } else {
        context::run(
            engine,
            &cfg.contexts,
            cfg.decode_tokens,
            cfg.repeat,
            cfg.seed,
        )?
    };
    let sparse = summarize(sparse);
    let dense = summarize(dense);

    let w = engine.weight_bytes();
    let ideal_ratio = match routing {
        Some(r) if w.moe_layers > 0 => {
            let per_expert = w.experts as f64 / (w.moe_layers as f64 * r.num_experts as f64);
            let shared = w.shared as f64 / w.moe_layers as f64;
            (r.num_experts as f64 * per_expert + shared) / (r.top_k as f64 * per_expert + shared)
        }
        _ => 1.0,
    };
    Ok(BenchReport {
        model: m.name.clone(),
        architecture: m.architecture.clone(),
        expert_precision: m.precision.experts.clone(),
        graph_precision: m.graph_precision(),
        execution_provider: engine.execution_provider().to_string(),
        quantized_matmul: engine.quantized_matmul(),
        threads: engine.intra_threads(),
        prompt_tokens: cfg.prompt_tokens,
        decode_tokens: cfg.decode_tokens,
        repeat: cfg.repeat.max(1),
        weights: w,
        resident_expert_bytes: engine.stats().resident_expert_bytes,
        expert_budget,
        placement: engine.placement(),
        bandwidth,
        bandwidth_buffer_bytes: probe.bytes(),
        run_overhead_us: median(&overheads),
        decode_ratio: ratio(sparse.decode_tok_s, dense.decode_tok_s),
        prefill_ratio: ratio(sparse.prefill_tok_s, dense.prefill_tok_s),
        ideal_ratio,
        ideal_ratio_all_bytes: ratio(dense.bytes_per_token, sparse.bytes_per_token),
        expert_time_ratio: ratio(dense.expert_ms_per_token, sparse.expert_ms_per_token),
        sparse,
        dense,
        load,
        memory,
        side_by_side,
        batch,
        contexts,
    })
}
