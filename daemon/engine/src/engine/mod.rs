//! The sparse MoE engine: per-layer attention and router graphs, then only the routed experts.
//!
//! [`Engine::load`] validates the package, starts ONNX Runtime, picks an execution provider and
//! loads every non-expert graph (experts load lazily, see `experts`). [`Engine::forward`] runs
//! tokens after a [`Sequence`]'s cache and returns logits.

mod attention;
mod batcher;
mod error;
mod experts;
mod forward;
mod graph;
mod hot;
mod kv;
mod load;
pub mod memlimit;
mod placed;
mod prefetch;
mod probe;
mod routing;
mod score;
mod side_by_side;
mod stats;
mod weights;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

pub use batcher::{BatchLimits, BatchMember};
pub use error::EngineError;
pub use forward::Step;
pub use hot::Held;
pub use kv::Sequence;
pub use placed::MAX_MOVES_PER_REVISIT;
pub use routing::{Gate, GateError, MAX_WEIGHT, NativeGate, RouterInput, Routing};
pub use score::{log_softmax_at, score_chunk, score_tokens, score_tokens_until, score_tokens_with};
pub use stats::EngineStats;
pub use weights::WeightBytes;

pub use crate::placement::PlacementSummary;

use crate::ort_env::OrtRuntime;
pub use crate::ort_env::Provider;
use crate::package::Package;
pub use crate::qmatmul::{MatmulKernel, UnknownKernel};
use experts::ExpertCache;
use graph::{Graph, Interface};
use kv::KvCache;
use stats::Counters;

/// How MoE layers compute their experts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExecMode {
    /// Only the routed experts, each once per layer on the tokens routed to it.
    #[default]
    Sparse,
    /// Every expert on every token, router weights applied (zero for unselected): what a naive
    /// export costs. For the benchmark.
    Dense,
}

/// Which logits [`Engine::forward`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// The last token's `[vocab]`.
    Last,
    /// Every token's, `[tokens * vocab]` row-major.
    All,
}

#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Execution providers in order of preference; the first that works is used.
    pub providers: Vec<Provider>,
    /// Upper bound on resident expert bytes (file bytes); `None` keeps every loaded expert.
    pub expert_memory_budget: Option<u64>,
    /// Intra-op threads of ONNX Runtime's shared pool (process-wide; the first engine sets it).
    pub intra_threads: Option<usize>,
    pub mode: ExecMode,
    /// Explicit libonnxruntime path (configuration); searched before `ORT_DYLIB_PATH`.
    pub ort_library: Option<PathBuf>,
    /// Let ONNX Runtime's idle pool threads spin (process-wide).
    pub spinning: bool,
    /// Told how far loading has come (for a client's progress bar).
    pub progress: Option<LoadProgress>,
    /// The kernel of block-quantized matmuls on the CPU provider.
    pub quantized_matmul: MatmulKernel,
    /// File bytes of graphs placed on the first usable GPU provider of `providers` (attention,
    /// routers, head, shared and dense MLPs, then the hottest experts), the rest on the CPU;
    /// `None`: the first provider that works runs every graph.
    pub gpu_memory_budget: Option<u64>,
    /// Persisted `[layer][expert]` activation counts that rank the experts for placement.
    pub activations: Vec<Vec<u64>>,
    /// Where the TensorRT provider caches its engines (default: [`crate::tensorrt_cache::default_dir`]).
    pub tensorrt_cache_dir: Option<PathBuf>,
    /// Run the routed experts of a decode step side by side on the intra-op threads, each on one
    /// thread, instead of one after another with each matmul split across the threads (CPU
    /// provider without spinning only: [`Engine::experts_side_by_side`]).
    pub experts_side_by_side: bool,
    /// What one shared step of concurrent generations may hold ([`Engine::batch_member`]).
    pub batch: BatchLimits,
    /// Under an expert budget, guess each MoE layer's experts once the layer before it has routed
    /// (from which experts followed which so far) and read the missing ones ahead (`prefetch`).
    pub prefetch_next_layer: bool,
}

/// Called while a package loads with (graphs loaded, graphs to load). Experts load lazily, on
/// first use, and are not counted.
#[derive(Clone)]
pub struct LoadProgress(pub Arc<dyn Fn(usize, usize) + Send + Sync>);

impl std::fmt::Debug for LoadProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LoadProgress(..)")
    }
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            providers: vec![Provider::Cpu],
            expert_memory_budget: None,
            intra_threads: None,
            mode: ExecMode::Sparse,
            ort_library: None,
            spinning: false,
            progress: None,
            quantized_matmul: MatmulKernel::default(),
            gpu_memory_budget: None,
            activations: Vec::new(),
            tensorrt_cache_dir: None,
            experts_side_by_side: true,
            batch: BatchLimits::default(),
            prefetch_next_layer: true,
        }
    }
}

pub(crate) enum Layer {
    Dense {
        attn: Graph,
        mlp: Graph,
    },
    Moe {
        attn: Graph,
        /// `None`: the attention graph outputs the router logits.
        router: Option<Graph>,
        shared: Option<Graph>,
        experts: Vec<String>,
        expert_bytes: Vec<u64>,
    },
}

/// One cache tensor's shape (its graph input and output are bound in the interface's order).
pub(crate) struct CacheIo {
    /// `[..]` per-token shape, as i64 for tensor views.
    pub shape: Vec<i64>,
    pub per_token: usize,
}

/// A loaded model package, shared by concurrent requests (each with its own [`Sequence`]).
pub struct Engine {
    id: u64,
    package: Package,
    rt: &'static OrtRuntime,
    provider: Provider,
    matmul: MatmulKernel,
    fallbacks: Vec<(Provider, String)>,
    mode: ExecMode,
    embed: Graph,
    head: Graph,
    layers: Vec<Layer>,
    cache_io: Vec<CacheIo>,
    expert_iface: Interface,
    experts: ExpertCache,
    placed: placed::Placed,
    gate: Arc<dyn Gate>,
    counters: Counters,
    hidden: usize,
    vocab: usize,
    num_experts: usize,
    top_k: usize,
    /// [`EngineOptions::experts_side_by_side`], switchable for the bench's comparison.
    side_by_side: AtomicBool,
    /// The threads besides the caller's that run experts side by side, started on first use.
    helpers: std::sync::OnceLock<Option<rayon_core::ThreadPool>>,
    /// The shared steps of concurrent generations.
    batcher: Arc<batcher::Batcher>,
    /// Predictive prefetch, under a budget with [`EngineOptions::prefetch_next_layer`].
    foresight: Option<prefetch::Foresight>,
}

static NEXT_ENGINE_ID: AtomicU64 = AtomicU64::new(1);

// One engine serves concurrent requests: it must stay shareable across threads.
const _: fn() = || {
    fn shareable<T: Send + Sync>() {}
    shareable::<Engine>();
    shareable::<Sequence>();
};

impl Engine {
    /// Validates the package in `dir` and loads it.
    pub fn load(dir: &Path, opts: EngineOptions) -> Result<Engine, EngineError> {
        load::load(dir, opts)
    }

    pub fn package(&self) -> &Package {
        &self.package
    }

    /// What runs the block-quantized matmuls, e.g. `moed (avx512-vnni)` or `onnxruntime`.
    pub fn quantized_matmul(&self) -> String {
        match self.placed.uses_gpu() {
            _ if self.provider != Provider::Cpu => format!("onnxruntime ({})", self.provider),
            Some(gpu) => format!(
                "{} on cpu graphs, onnxruntime on {gpu} graphs",
                self.matmul.describe()
            ),
            None => self.matmul.describe(),
        }
    }

    /// The execution provider in use ("cpu", "cuda", "tensorrt"); with a GPU memory budget, the
    /// GPU provider when any graph is placed on it (the rest run on the CPU: [`Engine::placement`]).
    pub fn execution_provider(&self) -> &str {
        self.placed.uses_gpu().unwrap_or(self.provider).as_str()
    }

    /// Providers preferred over the one in use, with why each could not be used.
    pub fn provider_fallbacks(&self) -> &[(Provider, String)] {
        &self.fallbacks
    }

    /// ONNX Runtime's shared intra-op thread count.
    pub fn intra_threads(&self) -> usize {
        self.rt.intra_threads()
    }

    pub fn mode(&self) -> ExecMode {
        self.mode
    }

    /// Whether decode steps run their routed experts side by side on the intra-op threads: as
    /// configured, and only where every graph runs on the CPU provider (a GPU provider serializes
    /// the runs of a session anyway) and the pool's threads do not spin (a spinning pool thread
    /// takes the core the second expert needs: 0.69x measured, 2 cores).
    pub fn experts_side_by_side(&self) -> bool {
        self.side_by_side.load(Ordering::Relaxed)
            && !self.rt.spinning()
            && self.provider == Provider::Cpu
            && self.placed.uses_gpu().is_none()
    }

    /// Turns [`Engine::experts_side_by_side`] on or off for the steps that start from now on (the
    /// bench compares both on one engine).
    pub fn set_experts_side_by_side(&self, on: bool) {
        self.side_by_side.store(on, Ordering::Relaxed);
    }

    /// Replaces the routing rule of every sequence that has none of its own (a request's gate:
    /// [`Sequence::set_gate`]). Every answer is still validated.
    pub fn set_gate(&mut self, gate: Arc<dyn Gate>) {
        self.gate = gate;
    }

    /// An empty sequence (no cached tokens) for one request.
    pub fn new_sequence(&self) -> Sequence {
        let kv = KvCache::new(
            self.package.manifest().attention.cache_layout,
            self.package.manifest().attention.cache_dtype,
            self.layers.len(),
            &self.cache_io,
            self.package.context_length(),
        );
        Sequence::new(self.id, kv, self.num_experts)
    }

    /// Runs `tokens` after the sequence's cached tokens and appends them to its cache.
    /// [`Logits::Last`] returns `[vocab]`; [`Logits::All`] returns `[tokens.len() * vocab]`.
    pub fn forward(
        &self,
        seq: &mut Sequence,
        tokens: &[u32],
        which: Logits,
    ) -> Result<Vec<f32>, EngineError> {
        self.forward_with_mode(seq, tokens, which, self.mode)
    }

    /// [`Engine::forward`] with an explicit execution mode (the bench runs both on one engine).
    pub fn forward_with_mode(
        &self,
        seq: &mut Sequence,
        tokens: &[u32],
        which: Logits,
        mode: ExecMode,
    ) -> Result<Vec<f32>, EngineError> {
        forward::forward(self, seq, tokens, which, mode)
    }

    /// Runs several sequences' tokens as one step (continuous batching's unit): the weights of
    /// every graph but attention are read once for all of them, and an expert chosen by several
    /// sequences runs once on all its rows. Each step's answer is what [`Engine::forward`] would
    /// give it alone. The outer error is a failure of the whole pass (no cache changed); a step's
    /// own error (a bad token, its gate) fails only that step.
    pub fn forward_batch(
        &self,
        steps: &mut [Step<'_>],
    ) -> Result<Vec<Result<Vec<f32>, EngineError>>, EngineError> {
        forward::forward_batch(self, steps, self.mode)
    }

    /// Joins the engine's continuous batching for one generation: its steps
    /// ([`BatchMember::forward`]) run together with those of the other members.
    pub fn batch_member(&self) -> BatchMember {
        self.batcher.join()
    }

    pub fn batch_limits(&self) -> BatchLimits {
        self.batcher.limits()
    }

    /// Takes effect from the next step.
    pub fn set_batch_limits(&self, limits: BatchLimits) {
        self.batcher.set_limits(limits);
    }

    /// ONNX Runtime sessions alive: every graph but the experts, and the resident experts.
    pub fn session_count(&self) -> usize {
        let fixed: usize = self
            .layers
            .iter()
            .map(|l| match l {
                Layer::Dense { .. } => 2,
                Layer::Moe { shared, .. } => 2 + usize::from(shared.is_some()),
            })
            .sum();
        2 + fixed + self.stats().resident_experts as usize
    }

    /// Counters since load.
    /// Mean wall time of one ONNX Runtime run of a one-node graph on this engine's runtime and
    /// provider, in microseconds: the fixed cost every graph run pays outside its kernels.
    pub fn run_overhead_us(&self, runs: usize) -> Result<f64, EngineError> {
        probe::run_overhead_us(self, runs)
    }

    pub fn stats(&self) -> EngineStats {
        self.counters.snapshot()
    }

    /// Creates every expert session now (within the budget) instead of on first use, on as many
    /// threads as the intra-op pool has.
    pub fn preload_experts(&self) -> Result<(), EngineError> {
        self.preload_experts_with(None)
    }

    /// [`Engine::preload_experts`], telling `progress` (experts loaded, experts to load).
    pub fn preload_experts_with(&self, progress: Option<&LoadProgress>) -> Result<(), EngineError> {
        let all: Vec<(usize, usize)> = self
            .layers
            .iter()
            .enumerate()
            .flat_map(|(l, layer)| match layer {
                Layer::Moe { experts, .. } => (0..experts.len()).map(|e| (l, e)).collect(),
                Layer::Dense { .. } => Vec::new(),
            })
            .collect();
        // With a budget, loading in order keeps the LRU order the sequential load gave.
        let threads = if self.experts_budgeted() {
            1
        } else {
            self.rt.intra_threads()
        };
        let done = std::sync::atomic::AtomicUsize::new(0);
        let loaded = experts::run_parallel(all.len(), threads, |i| {
            self.expert(all[i].0, all[i].1).map(drop)?;
            let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            if let Some(progress) = progress {
                (progress.0)(n, all.len());
            }
            Ok(())
        });
        self.release_mapped_weights();
        loaded
    }

    /// Under an expert budget, creates the sessions of the most activated experts of
    /// `activations` (`[layer][expert]`, e.g. the persisted counts), up to `share` of the budget,
    /// and holds them: they are never evicted, and the rest of the budget stays a
    /// least-recently-used cache of the others. What is held leaves room for one token's experts
    /// of a layer. Without a budget, or with nothing counted, holds nothing.
    pub fn hold_hot_experts(
        &self,
        activations: &[Vec<u64>],
        share: f64,
    ) -> Result<Held, EngineError> {
        hot::hold(self, activations, share)
    }

    /// Creates, several at once, the sessions of the experts of `layer` that `wanted` picks and
    /// that are not resident yet. Under a budget the sessions are created one by one as they run
    /// (so the budget never holds more than one layer's working set); their files are only asked
    /// of the kernel here, all at once, so the disk reads the later ones while the first are
    /// created and run.
    pub(crate) fn prefetch_experts(
        &self,
        layer: usize,
        wanted: impl Fn(usize) -> bool,
    ) -> Result<(), EngineError> {
        let missing: Vec<usize> = (0..self.num_experts)
            .filter(|&x| wanted(x) && !self.experts.has((layer, x)))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        if self.experts_budgeted() {
            if let Some(Layer::Moe { experts, .. }) = self.layers.get(layer) {
                let files = missing
                    .iter()
                    .filter_map(|&x| experts.get(x))
                    .map(|rel| self.package.path(rel));
                let hinted = experts::read_ahead(files);
                self.counters
                    .read_ahead_bytes
                    .fetch_add(hinted, Ordering::Relaxed);
            }
            return Ok(());
        }
        let loaded = experts::run_parallel(missing.len(), self.rt.intra_threads(), |i| {
            self.expert(layer, missing[i]).map(drop)
        });
        // Walking the mappings costs more than creating a tiny expert's session: only once
        // enough new weights are in.
        if self.experts.take_fresh(RELEASE_EVERY) {
            self.release_mapped_weights();
        }
        loaded
    }

    pub(crate) fn experts_budgeted(&self) -> bool {
        self.experts.budget().is_some()
    }

    /// Drops the resident pages of weights ONNX Runtime mapped from the package and no longer
    /// reads once sessions are created (see [`crate::procmem::release_mapped`]).
    pub(crate) fn release_mapped_weights(&self) {
        let advised = crate::procmem::release_mapped(self.package.dir());
        log::debug!("released {advised} bytes of package mappings");
    }

    /// Drops every resident expert session.
    pub fn drop_experts(&self) {
        self.experts.clear(&self.counters);
    }

    pub(crate) fn expert(&self, layer: usize, expert: usize) -> Result<Arc<Graph>, EngineError> {
        let Some(Layer::Moe {
            experts,
            expert_bytes,
            ..
        }) = self.layers.get(layer)
        else {
            return Err(EngineError::Options(format!(
                "layer {layer} has no experts"
            )));
        };
        let (Some(rel), Some(&bytes)) = (experts.get(expert), expert_bytes.get(expert)) else {
            return Err(EngineError::Options(format!(
                "layer {layer} has no expert {expert}"
            )));
        };
        let slot = self.placed.expert_slot(layer, expert);
        // Under a GPU budget, GPU experts stay resident outside expert_memory_budget; a model
        // wholly on one GPU provider keeps its experts under that budget as on the CPU.
        let budgeted = self.placed.on_gpu_budget();
        let gpu = budgeted && self.placed.provider(slot) != Provider::Cpu;
        self.experts
            .get((layer, expert), bytes, gpu, &self.counters, || {
                let (graph, provider) = self.placed.load(slot, rel, |p| {
                    Graph::load(
                        self.rt,
                        p,
                        self.matmul,
                        &self.package,
                        rel,
                        &self.expert_iface,
                    )
                })?;
                Ok((graph, budgeted && provider != Provider::Cpu))
            })
    }
}

/// Expert file bytes created between two releases of dead package mappings (the pages left of
/// them meanwhile are at most a fifth of this).
const RELEASE_EVERY: u64 = 64 << 20;

/// The gate of a package without MoE layers; never asked.
struct NoMoeGate;

impl Gate for NoMoeGate {
    fn route(&self, layer: usize, _: &RouterInput<'_>, _: &mut Routing) -> Result<(), GateError> {
        Err(GateError(format!(
            "layer {layer}: the package has no routing section"
        )))
    }
}
