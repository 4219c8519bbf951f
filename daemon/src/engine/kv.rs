//! A sequence's state: its KV cache (one growable buffer per layer and cache tensor) and the scratch
//! buffers its forward passes reuse, so steady-state decoding allocates little.

use std::sync::Arc;

use super::routing::{Gate, Routing};

/// One request's tokens so far. Made by [`Engine::new_sequence`](super::Engine::new_sequence) and
/// only valid with that engine.
pub struct Sequence {
    pub(crate) engine_id: u64,
    pub(crate) len: usize,
    /// `caches[layer][tensor]`: `len * per_token[tensor]` floats, token-major.
    pub(crate) caches: Vec<Vec<Vec<f32>>>,
    pub(crate) per_token: Vec<usize>,
    pub(crate) scratch: Scratch,
    /// This request's routing rule, used instead of the engine's (see [`Sequence::set_gate`]).
    pub(crate) gate: Option<Arc<dyn Gate>>,
}

impl Sequence {
    pub(crate) fn new(
        engine_id: u64,
        layers: usize,
        per_token: Vec<usize>,
        num_experts: usize,
    ) -> Sequence {
        Sequence {
            engine_id,
            len: 0,
            caches: (0..layers)
                .map(|_| per_token.iter().map(|_| Vec::new()).collect())
                .collect(),
            per_token,
            scratch: Scratch::new(num_experts),
            gate: None,
        }
    }

    /// Routes this sequence's MoE layers with `gate` instead of the engine's rule (`None`: the
    /// engine's again), so that concurrent requests on one engine can route differently. The
    /// engine validates every answer as it does the engine's own gate's.
    pub fn set_gate(&mut self, gate: Option<Arc<dyn Gate>>) {
        self.gate = gate;
    }

    /// The gate set with [`Sequence::set_gate`], if any.
    pub fn gate(&self) -> Option<&Arc<dyn Gate>> {
        self.gate.as_ref()
    }

    /// Tokens in the cache.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Keeps the first `n` cached tokens (no-op when `n >= len`).
    pub fn truncate(&mut self, n: usize) {
        let n = n.min(self.len);
        self.truncate_caches(n);
        self.len = n;
    }

    /// Cuts every cache buffer to `n` tokens; used to undo a failed forward's partial appends.
    pub(crate) fn truncate_caches(&mut self, n: usize) {
        for layer in &mut self.caches {
            for (buf, &per) in layer.iter_mut().zip(&self.per_token) {
                buf.truncate(n * per);
            }
        }
    }

    /// Bytes held by the KV cache.
    pub fn cache_bytes(&self) -> usize {
        self.caches.iter().flatten().map(|b| b.len() * 4).sum()
    }
}

/// Buffers reused across forward calls.
#[derive(Default)]
pub(crate) struct Scratch {
    pub ids: Vec<i64>,
    pub positions: Vec<i64>,
    /// Residual stream `[T, H]`.
    pub hidden: Vec<f32>,
    /// Attention's `hidden_out`, swapped with `hidden` after the run.
    pub next: Vec<f32>,
    /// One FFN graph's output `[rows, H]`.
    pub y: Vec<f32>,
    /// Attention's `ffn_in` `[T, H]`.
    pub ffn_in: Vec<f32>,
    /// MoE sum `[T, H]`.
    pub acc: Vec<f32>,
    /// Rows gathered for one expert.
    pub gather: Vec<f32>,
    pub logits: Vec<f32>,
    pub routing: Routing,
    /// Per expert: the (token, weight) pairs routed to it in this call.
    pub assigned: Vec<Vec<(u32, f32)>>,
}

impl Scratch {
    fn new(num_experts: usize) -> Scratch {
        Scratch {
            assigned: (0..num_experts).map(|_| Vec::new()).collect(),
            ..Scratch::default()
        }
    }
}
