//! The serde form of manifest.json, field for field as models/FORMAT.md defines it (versions 1 to 3).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const FORMAT_NAME: &str = "moed-package";
/// The version moe_export writes; [`READ_VERSIONS`] are the ones this moed reads.
pub const FORMAT_VERSION: u64 = 3;
pub const READ_VERSIONS: &[u64] = &[1, 2, 3];

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub format_version: u64,
    pub name: String,
    pub architecture: String,
    #[serde(default)]
    pub source: Option<serde_json::Value>,
    pub dims: Dims,
    pub precision: Precision,
    pub attention: Attention,
    /// Absent only for a package without MoE layers.
    #[serde(default)]
    pub routing: Option<RoutingConfig>,
    pub layers: Vec<LayerSpec>,
    pub embed: String,
    pub head: String,
    pub files: BTreeMap<String, FileEntry>,
    pub tokenizer: TokenizerSpec,
    #[serde(default)]
    pub special_tokens: SpecialTokens,
    /// EOS ids of generation_config.json and config.json, and special_tokens.eos.
    #[serde(default)]
    pub stop_token_ids: Vec<u32>,
    #[serde(default)]
    pub chat_template: Option<String>,
    #[serde(default)]
    pub thinking: Option<Thinking>,
    #[serde(default)]
    pub generation: GenerationDefaults,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Dims {
    pub hidden_size: usize,
    pub vocab_size: usize,
    pub num_layers: usize,
    pub context_length: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Precision {
    pub activations: String,
    pub dense: String,
    pub experts: String,
    #[serde(default)]
    pub block_size: Option<u64>,
    #[serde(default)]
    pub accuracy_level: Option<u64>,
    /// Format 2: the storage of each graph kind (`embed`, `attn`, `router`, `expert`, `shared`,
    /// `mlp`, `head`); absent in format 1, see [`Manifest::graph_precision`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graphs: Option<BTreeMap<String, GraphPrecision>>,
}

/// How one graph kind's weights are stored (manifest.precision.graphs.<kind>).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphPrecision {
    /// fp32 | fp16 | int8 | int4
    pub weights: String,
    #[serde(default)]
    pub block_size: Option<u64>,
    #[serde(default)]
    pub accuracy_level: Option<u64>,
    /// int8/int4: blocks without zero points.
    #[serde(default)]
    pub symmetric: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attention {
    pub kind: String,
    pub num_heads: usize,
    pub cache: Vec<CacheTensor>,
    /// How the `past_<name>` inputs are laid out; absent in packages written before it existed.
    #[serde(default)]
    pub cache_layout: CacheLayout,
    /// What the `past_<name>` inputs hold (format 3); absent: float32.
    #[serde(default, skip_serializing_if = "CacheDtype::is_default")]
    pub cache_dtype: CacheDtype,
}

/// FORMAT.md "KV cache types": the element type of the `past_<name>` inputs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheDtype {
    #[default]
    Float32,
    /// Half the bytes streamed per cached token; the graph rounds new rows to f16 as it attends.
    Float16,
}

impl CacheDtype {
    fn is_default(&self) -> bool {
        *self == CacheDtype::Float32
    }
}

/// FORMAT.md "KV cache layouts".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheLayout {
    /// `past_<name>` is `[P, ..shape]`: exactly the cached rows.
    #[default]
    TokenMajor,
    /// `past_<name>` is `[shape[0], C, ..shape[1..]]` with capacity `C >= P`: the graph reads
    /// rows `0..P` of each head (P is `positions[0]`) and ignores the rest.
    HeadMajor,
}

/// One KV-cache tensor: `past_<name>` / `new_<name>` with per-token shape `shape`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CacheTensor {
    pub name: String,
    pub shape: Vec<usize>,
}

impl CacheTensor {
    /// Floats per cached token.
    pub fn per_token(&self) -> usize {
        self.shape.iter().product()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scoring {
    Softmax,
    Sigmoid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupScore {
    Top2Sum,
    Max,
}

/// What the experts of groups outside the best `topk_group` get as `choice`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaskedChoice {
    /// `0.0` (transformers' DeepSeek-V2).
    #[default]
    Zero,
    /// `-inf` (transformers' DeepSeek-V3).
    NegInf,
}

impl MaskedChoice {
    pub fn value(self) -> f32 {
        match self {
            MaskedChoice::Zero => 0.0,
            MaskedChoice::NegInf => f32::NEG_INFINITY,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupLimit {
    pub n_group: usize,
    pub topk_group: usize,
    pub group_score: GroupScore,
    #[serde(default)]
    pub masked: MaskedChoice,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoutingConfig {
    pub num_experts: usize,
    pub top_k: usize,
    pub scoring: Scoring,
    #[serde(default)]
    pub group_limit: Option<GroupLimit>,
    pub norm_topk_prob: bool,
    #[serde(default)]
    pub norm_eps: f32,
    #[serde(default = "one")]
    pub routed_scaling_factor: f32,
}

fn one() -> f32 {
    1.0
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum LayerSpec {
    Dense {
        index: usize,
        attn: String,
        mlp: String,
    },
    Moe {
        index: usize,
        attn: String,
        /// The router graph; absent when `fused` lists "router".
        #[serde(default)]
        router: Option<String>,
        /// Parts computed by the attention graph itself: "router" (it also outputs
        /// `router_logits`). Empty in packages written before fused layers existed.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        fused: Vec<String>,
        experts: Vec<String>,
        #[serde(default)]
        shared: Option<String>,
        #[serde(default)]
        correction_bias: Option<Vec<f32>>,
    },
}

impl LayerSpec {
    pub fn index(&self) -> usize {
        match self {
            LayerSpec::Dense { index, .. } | LayerSpec::Moe { index, .. } => *index,
        }
    }
    pub fn attn(&self) -> &str {
        match self {
            LayerSpec::Dense { attn, .. } | LayerSpec::Moe { attn, .. } => attn,
        }
    }
    /// The attention graph of this MoE layer also outputs the router logits.
    pub fn router_fused(&self) -> bool {
        matches!(self, LayerSpec::Moe { fused, .. } if fused.iter().any(|f| f == "router"))
    }
    pub fn is_moe(&self) -> bool {
        matches!(self, LayerSpec::Moe { .. })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileEntry {
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenizerSpec {
    pub file: String,
    /// Prompts start with BOS.
    #[serde(default)]
    pub add_bos_token: bool,
    /// tokenizer.json's post-processor inserts BOS itself when encoding with special tokens.
    #[serde(default)]
    pub bos_added_by_tokenizer: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpecialToken {
    pub id: u32,
    pub text: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SpecialTokens {
    #[serde(default)]
    pub bos: Option<SpecialToken>,
    #[serde(default)]
    pub eos: Option<SpecialToken>,
    #[serde(default)]
    pub pad: Option<SpecialToken>,
    /// Any further named tokens a newer exporter adds.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Thinking {
    pub start: String,
    pub end: String,
}

/// Sampling defaults from generation_config.json; every field optional.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GenerationDefaults {
    #[serde(default)]
    pub temperature: Option<f32>,
    #[serde(default)]
    pub top_p: Option<f32>,
    #[serde(default)]
    pub top_k: Option<u32>,
    #[serde(default)]
    pub min_p: Option<f32>,
    #[serde(default)]
    pub repetition_penalty: Option<f32>,
    #[serde(default)]
    pub max_new_tokens: Option<u32>,
    /// Keys this version does not interpret, kept for callers that do.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}
