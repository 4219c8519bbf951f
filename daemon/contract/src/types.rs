//! Result and argument types shared by daemon and clients, with their D-Bus signatures.

use serde::{Deserialize, Serialize};
use zbus::{DeserializeDict, SerializeDict, Type};

/// One chat turn, `(ss)`: role (`system`, `user`, `assistant`) and content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// One turn of a conversation that may carry tool calls and their results, `(ssa{ss})`: role
/// (`system`, `user`, `assistant`, `tool`), content, and extras by key (all optional):
/// `tool_calls` (assistant; JSON text of an array `[{"id", "type": "function", "function":
/// {"name", "arguments"}}]`, `arguments` being JSON text as OpenAI sends it), `tool_call_id`
/// (tool; the call this result answers) and `name` (tool; the function's name). The argument
/// of `ChatTurns` and `GenerateChatTurns`; see CONTRACT.md, *Tools*.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct ChatTurn {
    pub role: String,
    pub content: String,
    pub extras: std::collections::HashMap<String, String>,
}

impl ChatTurn {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatTurn {
            role: role.into(),
            content: content.into(),
            extras: Default::default(),
        }
    }

    /// Adds an extra (`tool_calls`, `tool_call_id`, `name`).
    pub fn with(mut self, key: &str, value: impl Into<String>) -> Self {
        self.extras.insert(key.to_string(), value.into());
        self
    }
}

impl From<ChatMessage> for ChatTurn {
    fn from(m: ChatMessage) -> Self {
        ChatTurn::new(m.role, m.content)
    }
}

/// One token of a scored text, `(usbd)`: id, its text, whether it has a logprob (the first token
/// has none: nothing precedes it), and the logprob given all tokens before it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Type)]
pub struct ScoredToken {
    pub id: u32,
    pub text: String,
    pub has_logprob: bool,
    pub logprob: f64,
}

/// What a finished generation reports (`a{sv}`): the `info` of `Complete`/`Chat` and of the
/// `Finished` signal. Optional fields are left out of the dictionary when absent.
#[derive(Debug, Clone, Default, PartialEq, SerializeDict, DeserializeDict, Type)]
#[zbus(signature = "dict")]
pub struct GenerationInfo {
    /// The request's id, also the last element of a streaming request's object path.
    pub request_id: String,
    /// The model package that answered.
    pub model: String,
    /// `stop` (a stop string), `eos` (end of sequence), `max_tokens`, `length` (context full),
    /// `cancelled`, or `error` (then `error_name` and `error_message` say why).
    pub finish_reason: String,
    /// The full answer text (without the thinking section).
    pub text: String,
    /// The thinking section, empty when the model has none.
    pub thinking: String,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    /// The generated token ids, in order.
    pub token_ids: Vec<u32>,
    /// Time spent waiting for a slot, milliseconds.
    pub queue_ms: f64,
    /// Time from start of execution to the first generated token, milliseconds.
    pub first_token_ms: f64,
    /// Time from start of execution to the end, milliseconds.
    pub total_ms: f64,
    /// Short error name (`Cancelled`, `InvalidArgument`, ...) when finish_reason is `error` or
    /// `cancelled`.
    pub error_name: Option<String>,
    pub error_message: Option<String>,
    /// Alerts the request's filter plugins raised, `a(ssss)`: severity, code, message, source
    /// (the plugin); absent when there were none. The same alerts came as `Alert` signals.
    pub alerts: Option<Vec<(String, String, String, String)>>,
    /// Retrieved passages put into the prompt, `a(ss)`: source and document id, best first;
    /// absent when retrieval added none.
    pub sources: Option<Vec<(String, String)>>,
    /// The tool calls the answer made, when the request offered `tools` and the model called
    /// any: JSON text of an array `[{"id", "type": "function", "function": {"name",
    /// "arguments"}}]` (`arguments` is JSON text); `finish_reason` is then `tool_calls` and
    /// `text` holds only what the model wrote outside the calls.
    pub tool_calls: Option<String>,
}

/// One entry of `Models.List` (`a{sv}`).
#[derive(Debug, Clone, Default, PartialEq, SerializeDict, DeserializeDict, Type)]
#[zbus(signature = "dict")]
pub struct ModelSummary {
    /// The package's directory name inside its model directory (what `Load` takes).
    pub name: String,
    /// Absolute path of the package directory.
    pub path: String,
    /// `manifest.json`'s architecture; empty when the manifest could not be read.
    pub architecture: String,
    /// Held in memory now.
    pub loaded: bool,
    /// The model new requests use when they name none.
    pub active: bool,
    /// Why the package cannot be used, when its manifest is unreadable.
    pub error: Option<String>,
}

/// `Models.Info` (`a{sv}`): what the package's manifest says, and its state in the daemon.
#[derive(Debug, Clone, Default, PartialEq, SerializeDict, DeserializeDict, Type)]
#[zbus(signature = "dict")]
pub struct ModelInfo {
    pub name: String,
    pub path: String,
    pub manifest_name: String,
    pub architecture: String,
    pub format_version: u32,
    pub hidden_size: u32,
    pub vocab_size: u32,
    pub num_layers: u32,
    pub context_length: u32,
    pub num_experts: u32,
    pub top_k: u32,
    pub expert_precision: String,
    /// Bytes of all files the manifest lists.
    pub total_bytes: u64,
    pub loaded: bool,
    pub active: bool,
    /// Set while loaded: the ONNX Runtime execution provider in use.
    pub execution_provider: Option<String>,
}

/// The activation counts of one MoE layer, `(uat)`: layer index, count per expert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct LayerActivations {
    pub layer: u32,
    pub counts: Vec<u64>,
}

/// `Models.ExpertStats` (`a{sv}`): per-layer expert activations and expert cache counters,
/// accumulated over the daemon's life and earlier runs (persisted in the state store).
#[derive(Debug, Clone, Default, PartialEq, SerializeDict, DeserializeDict, Type)]
#[zbus(signature = "dict")]
pub struct ExpertStatistics {
    pub model: String,
    pub layers: Vec<LayerActivations>,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub cache_evictions: u64,
    /// Requests whose counts are included.
    pub requests: u64,
    /// Tokens run (prompt and generated): the denominator of the per-token figures below.
    pub tokens: u64,
    /// File bytes of the experts loaded on cache misses, and the time creating their sessions
    /// took in nanoseconds (their weights are mapped and paged in by the first run).
    pub expert_load_bytes: u64,
    pub expert_load_nanos: u64,
    /// Bytes the daemon read from storage, not the page cache, during the model's forward passes
    /// (weights paged in after a miss, or again after the kernel reclaimed them).
    pub storage_read_bytes: u64,
    /// Predictive prefetch under an expert budget: experts guessed for a layer before it ran,
    /// how many of them it then chose, and how many it chose (accuracy: right / guessed;
    /// coverage: right / chosen).
    pub prefetch_guessed: u64,
    pub prefetch_guessed_right: u64,
    pub prefetch_chosen: u64,
}

/// The `State` property of the Engine interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineState {
    /// Starting up or loading a model.
    Loading,
    /// Serving with a model loaded.
    Ready,
    /// Serving, but no model is loaded: inference replies `ModelNotLoaded`.
    NoModel,
    /// SIGTERM received: finishing in-flight requests, taking no new ones.
    Draining,
}

impl EngineState {
    pub fn as_str(self) -> &'static str {
        match self {
            EngineState::Loading => "loading",
            EngineState::Ready => "ready",
            EngineState::NoModel => "no-model",
            EngineState::Draining => "draining",
        }
    }

    pub fn parse(text: &str) -> Option<EngineState> {
        Some(match text {
            "loading" => EngineState::Loading,
            "ready" => EngineState::Ready,
            "no-model" => EngineState::NoModel,
            "draining" => EngineState::Draining,
            _ => return None,
        })
    }
}

/// The daemon's counters since it started (`Engine.Metrics`, `a{sv}`): what moed-http serves as
/// OpenMetrics at `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, SerializeDict, DeserializeDict, Type)]
#[zbus(signature = "dict")]
pub struct EngineMetrics {
    /// Requests by outcome, `a{st}`: `stop` (a stop string or end of sequence), `length`
    /// (`max_tokens` or the context's end), `cancelled`, `error` (failed while running),
    /// `rejected` (refused by the service's admission checks: queue full, model, prompt size).
    pub requests: std::collections::HashMap<String, u64>,
    /// Prompt tokens of the requests that finished with an answer.
    pub prompt_tokens: u64,
    /// Generated tokens of the requests that finished with an answer.
    pub completion_tokens: u64,
    /// Time to first token, `a(dt)`: cumulative counts per upper bound in seconds, the last
    /// bound infinite.
    pub first_token_buckets: Vec<(f64, u64)>,
    pub first_token_sum_seconds: f64,
    pub first_token_count: u64,
    /// Wait for an execution slot, `a(dt)` like `first_token_buckets`.
    pub queue_wait_buckets: Vec<(f64, u64)>,
    pub queue_wait_sum_seconds: f64,
    pub queue_wait_count: u64,
    /// Time between each generated token and the next, `a(dt)` like `first_token_buckets`.
    pub token_interval_buckets: Vec<(f64, u64)>,
    pub token_interval_sum_seconds: f64,
    pub token_interval_count: u64,
    /// Per configured data source, `a(sttd)`: label, searches, failed searches, seconds the
    /// retrieval plugins waited for it.
    pub source_searches: Vec<(String, u64, u64, f64)>,
    pub active_requests: u32,
    pub queued_requests: u32,
}
