//! The configuration's sections as validated, and as read from the files before the checks.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::engine::MatmulKernel;
use crate::ort_env::Provider;

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PluginsConfig {
    /// `plugins.filters`: built filter plugins (`NAME.wasm` with `NAME.toml` beside it, or a
    /// plugin directory) applied to every inference request, in order; loaded at start.
    pub filters: Vec<PathBuf>,
    /// `[plugins.NAME]`: settings of one plugin (config/plugins.rs).
    pub settings: std::collections::BTreeMap<String, super::PluginSettings>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelsConfig {
    /// `models.dirs`: directories searched for model packages, in order.
    pub dirs: Vec<PathBuf>,
    /// `models.default`: loaded at start (a name in `dirs` or a path); none: no model at start.
    pub default: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EngineConfig {
    /// `engine.providers`: execution providers in order of preference.
    pub providers: Vec<Provider>,
    /// `engine.expert_memory_budget`: bytes of resident expert weights; none: unbounded.
    pub expert_memory_budget: Option<u64>,
    /// `engine.ort_library`: the ONNX Runtime shared library.
    pub ort_library: Option<PathBuf>,
    /// `engine.preload_experts`: create every expert's session when a model loads (progress
    /// reported as for the other graphs) instead of on first use.
    pub preload_experts: bool,
    /// `engine.quantized_matmul`: the kernel of block-quantized matmuls on the CPU provider.
    pub quantized_matmul: MatmulKernel,
    /// `engine.gpu_memory_budget`: file bytes of graphs placed on the first usable GPU provider
    /// of `providers` (attention, routers, head, then the hottest experts), the rest on the CPU;
    /// 0: every graph on the CPU; none: the first provider that works runs every graph.
    pub gpu_memory_budget: Option<u64>,
    /// `engine.tensorrt_cache_dir`: where the TensorRT provider keeps the engines it builds;
    /// none: `$CACHE_DIRECTORY/tensorrt`, else `/var/cache/moed/tensorrt`.
    pub tensorrt_cache_dir: Option<PathBuf>,
    /// `engine.experts_side_by_side`: run the routed experts of a decode step side by side on the
    /// intra-op threads, one expert per thread, instead of one after another with each matmul
    /// split across the threads (CPU provider, pool threads not spinning).
    pub experts_side_by_side: bool,
    /// `engine.held_experts_percent`: under `expert_memory_budget`, the percent of it held by the
    /// hottest experts (ranked by the model's persisted activation counts), created when the model
    /// loads and never evicted; 0: none held.
    pub held_experts_percent: u8,
    /// `engine.prefetch_next_layer`: under `expert_memory_budget`, guess each MoE layer's experts
    /// while the layer before it runs and read the missing ones ahead.
    pub prefetch_next_layer: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceConfig {
    /// `service.max_concurrent`: requests executing at once.
    pub max_concurrent: u32,
    /// `service.queue_depth`: requests waiting for a slot; past it callers get `Busy`.
    pub queue_depth: u32,
    /// `service.max_batch`: executing generations one forward step runs together (continuous
    /// batching); more wait for the next step.
    pub max_batch: u32,
    /// `service.max_batch_tokens`: new tokens in one step; a longer prompt runs in chunks of it.
    pub max_batch_tokens: u32,
    /// `service.drain_timeout_secs`: how long SIGTERM waits for in-flight requests.
    pub drain_timeout_secs: u64,
    /// `service.state_directory`: overrides `$STATE_DIRECTORY` and the default.
    pub state_directory: Option<PathBuf>,
    /// `service.max_prompt_bytes`: the most bytes of a prompt, conversation or scored text, checked
    /// before tokenization (a model's context lowers it further: 16 bytes a token).
    pub max_prompt_bytes: u64,
    /// `service.max_requests_per_user`: requests one user id may have running or queued at once;
    /// none: half of `max_concurrent + queue_depth`, rounded up.
    pub max_requests_per_user: Option<u32>,
}

impl ServiceConfig {
    /// `max_batch` and `max_batch_tokens` as the engine takes them.
    pub fn batch_limits(&self) -> moed_engine::engine::BatchLimits {
        moed_engine::engine::BatchLimits {
            max_sequences: self.max_batch as usize,
            max_tokens: self.max_batch_tokens as usize,
        }
    }

    /// [`ServiceConfig::max_requests_per_user`] with its default applied.
    pub fn requests_per_user(&self) -> u32 {
        self.max_requests_per_user.unwrap_or_else(|| {
            (self.max_concurrent.saturating_add(self.queue_depth))
                .div_ceil(2)
                .max(1)
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AccessConfig {
    /// `access.authorizer`: `polkit` (default) or `group` (admin = root or member of
    /// `admin_group`; for hosts without polkit, and the tests).
    pub authorizer: AuthorizerKind,
    /// `access.allowed_group`: when set, inference and reads need root or membership.
    pub allowed_group: Option<String>,
    /// `access.admin_group`: members may manage models and plugins without polkit.
    pub admin_group: Option<String>,
    /// `access.bridge_group`: members (the `moed-http` bridge) may pass a client's socket with a
    /// request (option `client_socket`) and are served as that socket's peer.
    pub bridge_group: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthorizerKind {
    Polkit,
    Group,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogConfig {
    /// `log.level`: error, warn, info, debug or trace.
    pub level: String,
}

/// The file layout as read, before checks; unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawConfig {
    pub(super) models: RawModels,
    pub(super) engine: RawEngine,
    pub(super) service: RawService,
    pub(super) access: RawAccess,
    pub(super) log: RawLog,
    pub(super) plugins: RawPlugins,
    pub(super) knowledge: super::knowledge::RawKnowledge,
    pub(super) retrieval: super::retrieval::RawRetrieval,
}

/// Every key but `filters` is a `[plugins.NAME]` table, checked in config/plugins.rs.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawPlugins {
    pub(super) filters: Option<Vec<String>>,
    #[serde(flatten)]
    pub(super) settings: std::collections::BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawModels {
    pub(super) dirs: Option<Vec<String>>,
    pub(super) default: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawEngine {
    pub(super) providers: Option<Vec<String>>,
    pub(super) expert_memory_budget: Option<RawByteSize>,
    pub(super) ort_library: Option<String>,
    pub(super) preload_experts: Option<bool>,
    pub(super) quantized_matmul: Option<String>,
    pub(super) gpu_memory_budget: Option<RawByteSize>,
    pub(super) tensorrt_cache_dir: Option<String>,
    pub(super) experts_side_by_side: Option<bool>,
    pub(super) held_experts_percent: Option<i64>,
    pub(super) prefetch_next_layer: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawService {
    pub(super) max_concurrent: Option<i64>,
    pub(super) queue_depth: Option<i64>,
    pub(super) max_batch: Option<i64>,
    pub(super) max_batch_tokens: Option<i64>,
    pub(super) drain_timeout_secs: Option<i64>,
    pub(super) state_directory: Option<String>,
    pub(super) max_prompt_bytes: Option<i64>,
    pub(super) max_requests_per_user: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawAccess {
    pub(super) authorizer: Option<String>,
    pub(super) allowed_group: Option<String>,
    pub(super) admin_group: Option<String>,
    pub(super) bridge_group: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawLog {
    pub(super) level: Option<String>,
}

/// A byte count written as an integer or as a string with a unit (`512MiB`, `2G`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawByteSize {
    Bytes(i64),
    Text(String),
}

impl AuthorizerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthorizerKind::Polkit => "polkit",
            AuthorizerKind::Group => "group",
        }
    }
}

impl fmt::Display for AuthorizerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
