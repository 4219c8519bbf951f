//! A sequence's state: its KV cache (one growable buffer per layer and cache tensor) and the scratch
//! buffers its forward passes reuse, so steady-state decoding allocates little.

use std::sync::Arc;

use super::CacheIo;
use super::routing::{Gate, Routing};
use crate::package::CacheLayout;

/// Head-major buffers grow by this many rows, so a decode step rarely re-lays the cache out and
/// the graph reads fewer than this many spare (masked) rows.
const CAPACITY_STEP: usize = 256;

/// One sequence's KV cache: `bufs[layer][tensor]`, laid out as the package's `cache_layout` says
/// (FORMAT.md "KV cache layouts").
pub(crate) struct KvCache {
    layout: CacheLayout,
    bufs: Vec<Vec<Vec<f32>>>,
    /// Per tensor: heads (the first per-token dimension; 1 when token-major) and floats per head row.
    heads: Vec<usize>,
    row: Vec<usize>,
    /// Head-major: rows each buffer holds per head (valid rows first, the rest spare).
    capacity: usize,
    /// Head-major: rows below this may have been written; rows from here up are zero.
    written: usize,
    context_length: usize,
}

impl KvCache {
    pub(crate) fn new(
        layout: CacheLayout,
        layers: usize,
        io: &[CacheIo],
        context_length: usize,
    ) -> KvCache {
        let heads: Vec<usize> = io
            .iter()
            .map(|c| match layout {
                CacheLayout::TokenMajor => 1,
                CacheLayout::HeadMajor => c.shape.first().map_or(1, |&d| d.max(1) as usize),
            })
            .collect();
        KvCache {
            layout,
            bufs: (0..layers)
                .map(|_| io.iter().map(|_| Vec::new()).collect())
                .collect(),
            row: io
                .iter()
                .zip(&heads)
                .map(|(c, &n)| c.per_token / n)
                .collect(),
            heads,
            capacity: 0,
            written: 0,
            context_length,
        }
    }

    /// Makes room for `rows` tokens before a forward pass (head-major buffers are re-laid out
    /// with the larger capacity; token-major ones grow as rows are appended).
    pub(crate) fn reserve(&mut self, rows: usize, len: usize) {
        if self.layout == CacheLayout::TokenMajor || rows <= self.capacity {
            return;
        }
        let cap = rows
            .div_ceil(CAPACITY_STEP)
            .saturating_mul(CAPACITY_STEP)
            .min(self.context_length)
            .max(rows);
        let keep = len.min(self.capacity);
        for layer in &mut self.bufs {
            for (i, buf) in layer.iter_mut().enumerate() {
                let (heads, row) = (self.heads[i], self.row[i]);
                let mut grown = vec![0.0f32; heads * cap * row];
                for h in 0..heads {
                    let src = &buf[h * self.capacity * row..][..keep * row];
                    grown[h * cap * row..][..keep * row].copy_from_slice(src);
                }
                *buf = grown;
            }
        }
        self.capacity = cap;
        self.written = keep;
    }

    /// The `past_<name>` input of `layer`'s tensor `i` for `past` cached tokens: its shape and data.
    pub(crate) fn past(
        &self,
        layer: usize,
        i: usize,
        io: &CacheIo,
        past: usize,
    ) -> (Vec<i64>, &[f32]) {
        let buf = &self.bufs[layer][i];
        match self.layout {
            CacheLayout::TokenMajor => {
                let mut shape = Vec::with_capacity(1 + io.shape.len());
                shape.push(past as i64);
                shape.extend_from_slice(&io.shape);
                (shape, &buf[..past * io.per_token])
            }
            CacheLayout::HeadMajor => {
                let mut shape = Vec::with_capacity(1 + io.shape.len());
                shape.push(self.heads[i] as i64);
                shape.push(self.capacity as i64);
                shape.extend_from_slice(io.shape.get(1..).unwrap_or(&[]));
                (shape, &buf[..])
            }
        }
    }

    /// Stores `new`, the `new_<name>` output `[t, ..shape]` of `layer`'s tensor `i`, as rows
    /// `past..past + t` (after [`KvCache::reserve`] for `past + t`).
    pub(crate) fn append(&mut self, layer: usize, i: usize, new: &[f32], past: usize, t: usize) {
        let buf = &mut self.bufs[layer][i];
        match self.layout {
            CacheLayout::TokenMajor => buf.extend_from_slice(new),
            CacheLayout::HeadMajor => {
                let (heads, row, cap) = (self.heads[i], self.row[i], self.capacity);
                for (tok, src) in new.chunks_exact(heads * row).take(t).enumerate() {
                    for (h, head_row) in src.chunks_exact(row).enumerate() {
                        buf[(h * cap + past + tok) * row..][..row].copy_from_slice(head_row);
                    }
                }
                self.written = self.written.max(past + t);
            }
        }
    }

    /// Cuts every buffer to `n` tokens. Head-major rows from `n` up are zeroed rather than
    /// dropped: the graph masks them, but a masked row must still hold finite values.
    pub(crate) fn truncate(&mut self, n: usize) {
        match self.layout {
            CacheLayout::TokenMajor => {
                for layer in &mut self.bufs {
                    for (buf, (&heads, &row)) in
                        layer.iter_mut().zip(self.heads.iter().zip(&self.row))
                    {
                        buf.truncate(n * heads * row);
                    }
                }
            }
            CacheLayout::HeadMajor => {
                if n >= self.written {
                    return;
                }
                let cap = self.capacity;
                for layer in &mut self.bufs {
                    for (buf, (&heads, &row)) in
                        layer.iter_mut().zip(self.heads.iter().zip(&self.row))
                    {
                        for h in 0..heads {
                            buf[(h * cap + n) * row..(h * cap + self.written) * row].fill(0.0);
                        }
                    }
                }
                self.written = n;
            }
        }
    }

    /// Bytes held by the buffers (head-major: including spare capacity).
    pub(crate) fn bytes(&self) -> usize {
        self.bufs.iter().flatten().map(|b| b.len() * 4).sum()
    }
}

/// One request's tokens so far. Made by [`Engine::new_sequence`](super::Engine::new_sequence) and
/// only valid with that engine.
pub struct Sequence {
    pub(crate) engine_id: u64,
    pub(crate) len: usize,
    pub(crate) kv: KvCache,
    pub(crate) scratch: Scratch,
    /// This request's routing rule, used instead of the engine's (see [`Sequence::set_gate`]).
    pub(crate) gate: Option<Arc<dyn Gate>>,
}

impl Sequence {
    pub(crate) fn new(engine_id: u64, kv: KvCache, num_experts: usize) -> Sequence {
        Sequence {
            engine_id,
            len: 0,
            kv,
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
        self.kv.truncate(n);
    }

    /// Bytes held by the KV cache.
    pub fn cache_bytes(&self) -> usize {
        self.kv.bytes()
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
    /// Attention's `new_<name>` rows `[T, ..shape]` per cache tensor, before the cache takes them.
    pub kv_new: Vec<Vec<f32>>,
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

#[cfg(test)]
#[path = "kv_tests.rs"]
mod tests;
