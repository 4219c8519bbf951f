//! Gate plugins: called once per MoE layer per forward pass with the router's logits; the answer
//! is validated here before anyone acts on it. Failure policy: any failure (trap, timeout, memory,
//! error, invalid answer, disabled) is returned to the caller, who routes natively instead.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::bindings::v0_1::gating;
use crate::capability::{self, Grant};
use crate::error::{CallFailure, LoadError};
use crate::loaded::{Bindings, Instance, classify};
use crate::manifest::Kind;
use crate::plugin::Plugin;

pub use gating::{GroupScore, MaskedChoice, Scoring};

#[derive(Debug, Clone, PartialEq)]
pub struct GroupLimit {
    pub n_group: usize,
    pub topk_group: usize,
    pub group_score: GroupScore,
    pub masked: MaskedChoice,
}

/// A model's routing rule (models/FORMAT.md, "Routing rule"), given to each gate instance once.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelRouting {
    pub num_layers: usize,
    pub num_experts: usize,
    pub top_k: usize,
    pub scoring: Scoring,
    pub group_limit: Option<GroupLimit>,
    pub norm_topk_prob: bool,
    pub norm_eps: f32,
    pub routed_scaling_factor: f32,
    /// Per layer index (`num_layers` entries): the correction bias, if the layer has one.
    pub correction_bias: Vec<Option<Vec<f32>>>,
}

impl ModelRouting {
    fn check(&self) -> Result<(), String> {
        if self.num_experts == 0 || self.top_k == 0 || self.top_k > self.num_experts {
            return Err(format!(
                "top-{} of {} experts",
                self.top_k, self.num_experts
            ));
        }
        if self.correction_bias.len() != self.num_layers {
            return Err(format!(
                "{} correction bias entries for {} layers",
                self.correction_bias.len(),
                self.num_layers
            ));
        }
        for (layer, b) in self.correction_bias.iter().enumerate() {
            if let Some(b) = b
                && b.len() != self.num_experts
            {
                return Err(format!(
                    "layer {layer}: correction bias of {} values",
                    b.len()
                ));
            }
        }
        Ok(())
    }

    fn to_wit(&self) -> gating::ModelRouting {
        gating::ModelRouting {
            num_layers: self.num_layers as u32,
            num_experts: self.num_experts as u32,
            top_k: self.top_k as u32,
            scoring: self.scoring,
            group_limit: self.group_limit.as_ref().map(|g| gating::GroupLimit {
                n_group: g.n_group as u32,
                topk_group: g.topk_group as u32,
                group_score: g.group_score,
                masked: g.masked,
            }),
            norm_topk_prob: self.norm_topk_prob,
            norm_eps: self.norm_eps,
            routed_scaling_factor: self.routed_scaling_factor,
            correction_bias: self.correction_bias.clone(),
        }
    }
}

/// One layer's question.
#[derive(Debug, Clone, Copy)]
pub struct GateCall<'a> {
    pub layer: usize,
    pub num_tokens: usize,
    pub num_experts: usize,
    /// The model's experts per token.
    pub top_k: usize,
    /// `[num_tokens x num_experts]` row-major, before softmax/sigmoid.
    pub logits: &'a [f32],
    pub params: &'a [(String, String)],
}

/// A validated answer: `[num_tokens x k]` experts and weights.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GateAnswer {
    pub k: usize,
    pub experts: Vec<u32>,
    pub weights: Vec<f32>,
}

/// The largest weight a gate may give an expert.
///
/// Weights scale expert outputs that the engine sums in f32 into the residual stream. The model's
/// own rule gives at most `routed_scaling_factor` per expert (a probability times the factor: 1,
/// 2.5 or 16 for the architectures moed runs), so 1e4 leaves a gate three orders of magnitude to
/// sharpen or boost experts, while keeping every sum far from f32 overflow: even 256 experts per
/// token at 1e4 each over a thousand layers stay below 1e10 times an expert's output, and the
/// squares RMSNorm takes of that stay finite. An answer such as `f32::MAX`, which passed the
/// finite check, turned the hidden state into infinities and then NaN logits, and the request
/// failed blaming the client's sampling parameters.
pub const MAX_WEIGHT: f32 = moed_shared::routing::MAX_WEIGHT;

/// Checks an answer: `k` allowed by the grant, one row per token, indices in range, no duplicates
/// in a row, weights finite, non-negative and at most [`MAX_WEIGHT`].
pub fn validate(
    call: &GateCall<'_>,
    k: usize,
    experts: &[u32],
    weights: &[f32],
    grant: &Grant,
) -> Result<(), String> {
    capability::gate_k_allowed(grant, k, call.top_k)?;
    let n = call.num_tokens * k;
    if experts.len() != n || weights.len() != n {
        return Err(format!(
            "{} experts and {} weights for {} tokens x {k}; expected {n} of each",
            experts.len(),
            weights.len(),
            call.num_tokens
        ));
    }
    for (tok, (row, w)) in experts
        .chunks_exact(k)
        .zip(weights.chunks_exact(k))
        .enumerate()
    {
        moed_shared::routing::check_choice(tok, row, w, call.num_experts)?;
    }
    Ok(())
}

static NEXT_MODEL: AtomicU64 = AtomicU64::new(1);

/// A gate plugin bound to one model.
#[derive(Clone)]
pub struct GatePlugin {
    plugin: Plugin,
    model: Arc<ModelRouting>,
    wit_model: Arc<gating::ModelRouting>,
    model_id: u64,
}

impl GatePlugin {
    /// Binds a gate plugin to a model; its instances are initialized with `model` on first use.
    pub fn bind(plugin: &Plugin, model: ModelRouting) -> Result<GatePlugin, LoadError> {
        if plugin.kind() != Kind::Gate {
            return Err(LoadError::Interface {
                plugin: plugin.name().to_owned(),
                message: format!("a {} plugin cannot gate", plugin.kind()),
            });
        }
        model.check().map_err(|m| {
            LoadError::Host(format!("model routing for plugin '{}': {m}", plugin.name()))
        })?;
        Ok(GatePlugin {
            plugin: plugin.clone(),
            wit_model: Arc::new(model.to_wit()),
            model: Arc::new(model),
            model_id: NEXT_MODEL.fetch_add(1, Relaxed),
        })
    }

    pub fn plugin(&self) -> &Plugin {
        &self.plugin
    }

    pub fn model(&self) -> &ModelRouting {
        &self.model
    }

    /// Routes one layer. On `Err` the caller routes natively (and may report the failure).
    pub fn route(&self, call: &GateCall<'_>, out: &mut GateAnswer) -> Result<(), CallFailure> {
        if !self.plugin.is_enabled() {
            return Err(CallFailure::Disabled(
                "disabled by the administrator".into(),
            ));
        }
        let rt = self.plugin.runtime();
        let loaded = self.plugin.current();
        let time = rt.options.gate.deadline(call.num_tokens);
        let grant = &loaded.ctx.grant;
        let (result, _alerts) = loaded.call(rt, time, |inst: &mut Instance| {
            let Instance {
                store,
                bindings,
                model,
            } = inst;
            let Bindings::Gate(gate) = bindings else {
                return Err(CallFailure::Start("the instance is not a gate".into()));
            };
            let api = gate.moed_plugin_gating();
            if *model != Some(self.model_id) {
                store.set_epoch_deadline(rt.ticks(rt.options.start_time));
                match api.call_init(&mut *store, &self.wit_model) {
                    Ok(Ok(())) => *model = Some(self.model_id),
                    Ok(Err(m)) => return Err(CallFailure::Plugin(format!("init: {m}"))),
                    Err(e) => return Err(classify(store.data_mut(), e, rt.options.start_time)),
                }
                store.set_epoch_deadline(rt.ticks(time));
            }
            let request = gating::RouteRequest {
                layer: call.layer as u32,
                num_tokens: call.num_tokens as u32,
                num_experts: call.num_experts as u32,
                top_k: call.top_k as u32,
                logits: call.logits.to_vec(),
                params: call.params.to_vec(),
            };
            let answer = match api.call_route(&mut *store, &request) {
                Ok(Ok(a)) => a,
                Ok(Err(m)) => return Err(crate::params::plugin_error(m, call.params)),
                Err(e) => return Err(classify(store.data_mut(), e, time)),
            };
            validate(
                call,
                answer.k as usize,
                &answer.experts,
                &answer.weights,
                grant,
            )
            .map_err(CallFailure::BadAnswer)?;
            Ok(answer)
        });
        let answer = result?;
        out.k = answer.k as usize;
        out.experts = answer.experts;
        out.weights = answer.weights;
        Ok(())
    }
}
