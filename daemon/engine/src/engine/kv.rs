//! A sequence's state: its KV cache (one growable buffer per layer and cache tensor) and the scratch
//! buffers its forward passes reuse, so steady-state decoding allocates little.

use std::sync::Arc;

use moed_kernels::{KvElem, f16};

use super::CacheIo;
use super::routing::{Gate, Routing};
use crate::package::{CacheDtype, CacheLayout};

/// Head-major buffers grow by this many rows, so a decode step rarely re-lays the cache out and
/// the graph reads fewer than this many spare (masked) rows.
const CAPACITY_STEP: usize = 256;

/// One sequence's KV cache: `bufs[layer][tensor]`, laid out as the package's `cache_layout` says
/// (FORMAT.md "KV cache layouts").
pub(crate) struct KvCache {
    layout: CacheLayout,
    bufs: Store,
    /// Per tensor: heads (the first per-token dimension; 1 when token-major) and floats per head row.
    heads: Vec<usize>,
    row: Vec<usize>,
    /// Head-major: rows each buffer holds per head (valid rows first, the rest spare).
    capacity: usize,
    /// Head-major: rows below this may have been written; rows from here up are zero.
    written: usize,
    context_length: usize,
}

/// The buffers `[layer][tensor]`, of the package's cache type (FORMAT.md "KV cache types").
enum Store {
    F32(Vec<Vec<Vec<f32>>>),
    F16(Vec<Vec<Vec<f16>>>),
}

/// A `past_<name>` input's data, in the cache's type.
pub(crate) enum PastData<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
}

/// One cache element type's zero and conversion from the graph's f32 rows.
impl KvCache {
    pub(crate) fn new(
        layout: CacheLayout,
        dtype: CacheDtype,
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
            bufs: match dtype {
                CacheDtype::Float32 => Store::F32(empty(layers, io.len())),
                CacheDtype::Float16 => Store::F16(empty(layers, io.len())),
            },
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
        let dims = (&self.heads[..], &self.row[..], self.capacity, cap, keep);
        match &mut self.bufs {
            Store::F32(b) => relayout(b, dims),
            Store::F16(b) => relayout(b, dims),
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
    ) -> (Vec<i64>, PastData<'_>) {
        let mut shape = Vec::with_capacity(1 + io.shape.len());
        let len = match self.layout {
            CacheLayout::TokenMajor => {
                shape.push(past as i64);
                shape.extend_from_slice(&io.shape);
                Some(past * io.per_token)
            }
            CacheLayout::HeadMajor => {
                shape.push(self.heads[i] as i64);
                shape.push(self.capacity as i64);
                shape.extend_from_slice(io.shape.get(1..).unwrap_or(&[]));
                // The whole buffer: the graph reads `past` rows of each head's `capacity`.
                None
            }
        };
        let data = match &self.bufs {
            Store::F32(b) => PastData::F32(upto(&b[layer][i], len)),
            Store::F16(b) => PastData::F16(upto(&b[layer][i], len)),
        };
        (shape, data)
    }

    /// Stores `new`, the `new_<name>` output `[t, ..shape]` of `layer`'s tensor `i`, as rows
    /// `past..past + t` (after [`KvCache::reserve`] for `past + t`).
    pub(crate) fn append(&mut self, layer: usize, i: usize, new: &[f32], past: usize, t: usize) {
        let at = match self.layout {
            CacheLayout::TokenMajor => None,
            CacheLayout::HeadMajor => Some((self.heads[i], self.row[i], self.capacity)),
        };
        match &mut self.bufs {
            Store::F32(b) => store(&mut b[layer][i], new, at, past, t),
            Store::F16(b) => store(&mut b[layer][i], new, at, past, t),
        }
        if at.is_some() {
            self.written = self.written.max(past + t);
        }
    }

    /// Cuts every buffer to `n` tokens. Head-major rows from `n` up are zeroed rather than
    /// dropped: the graph masks them, but a masked row must still hold finite values.
    pub(crate) fn truncate(&mut self, n: usize) {
        match self.layout {
            CacheLayout::TokenMajor => {
                let dims = (&self.heads[..], &self.row[..], n);
                match &mut self.bufs {
                    Store::F32(b) => cut(b, dims),
                    Store::F16(b) => cut(b, dims),
                }
            }
            CacheLayout::HeadMajor => {
                if n >= self.written {
                    return;
                }
                let dims = (
                    &self.heads[..],
                    &self.row[..],
                    self.capacity,
                    n,
                    self.written,
                );
                match &mut self.bufs {
                    Store::F32(b) => zero_rows(b, dims),
                    Store::F16(b) => zero_rows(b, dims),
                }
                self.written = n;
            }
        }
    }

    /// Bytes held by the buffers (head-major: including spare capacity).
    pub(crate) fn bytes(&self) -> usize {
        fn sum<E>(b: &[Vec<Vec<E>>]) -> usize {
            b.iter()
                .flatten()
                .map(|v| std::mem::size_of_val(&v[..]))
                .sum()
        }
        match &self.bufs {
            Store::F32(b) => sum(b),
            Store::F16(b) => sum(b),
        }
    }
}

fn empty<E>(layers: usize, tensors: usize) -> Vec<Vec<Vec<E>>> {
    (0..layers)
        .map(|_| (0..tensors).map(|_| Vec::new()).collect())
        .collect()
}

/// The first `len` elements of `buf` (all of it when shorter).
/// The first `len` elements of `buf` (all of it for `None`), never past its end.
fn upto<E>(buf: &[E], len: Option<usize>) -> &[E] {
    match len {
        Some(len) => &buf[..len.min(buf.len())],
        None => buf,
    }
}

/// Head-major buffers re-laid out from capacity `old` to `cap` rows per head, keeping `keep` rows.
fn relayout<E: KvElem>(
    bufs: &mut [Vec<Vec<E>>],
    (heads, row, old, cap, keep): (&[usize], &[usize], usize, usize, usize),
) {
    for layer in bufs {
        for (i, buf) in layer.iter_mut().enumerate() {
            let (heads, row) = (heads[i], row[i]);
            let mut grown = vec![E::ZERO; heads * cap * row];
            for h in 0..heads {
                let src = &buf[h * old * row..][..keep * row];
                grown[h * cap * row..][..keep * row].copy_from_slice(src);
            }
            *buf = grown;
        }
    }
}

/// Stores the graph's new rows `[t, heads, row]` after `past`: appended (token-major, `at`
/// `None`) or into row `past + tok` of every head (head-major, `at` = heads, row, capacity).
fn store<E: KvElem>(
    buf: &mut Vec<E>,
    new: &[f32],
    at: Option<(usize, usize, usize)>,
    past: usize,
    t: usize,
) {
    let Some((heads, row, cap)) = at else {
        buf.extend(new.iter().map(|&v| E::from_f32(v)));
        return;
    };
    for (tok, src) in new.chunks_exact(heads * row).take(t).enumerate() {
        for (h, head_row) in src.chunks_exact(row).enumerate() {
            let dst = &mut buf[(h * cap + past + tok) * row..][..row];
            for (d, &v) in dst.iter_mut().zip(head_row) {
                *d = E::from_f32(v);
            }
        }
    }
}

/// Token-major buffers cut to `n` tokens.
fn cut<E>(bufs: &mut [Vec<Vec<E>>], (heads, row, n): (&[usize], &[usize], usize)) {
    for layer in bufs {
        for (i, buf) in layer.iter_mut().enumerate() {
            buf.truncate(n * heads[i] * row[i]);
        }
    }
}

/// Head-major rows `n..written` of every head zeroed.
fn zero_rows<E: KvElem>(
    bufs: &mut [Vec<Vec<E>>],
    (heads, row, cap, n, written): (&[usize], &[usize], usize, usize, usize),
) {
    for layer in bufs {
        for (i, buf) in layer.iter_mut().enumerate() {
            let (heads, row) = (heads[i], row[i]);
            for h in 0..heads {
                buf[(h * cap + n) * row..(h * cap + written) * row].fill(E::ZERO);
            }
        }
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
    /// A stand-in of no engine, left in a sequence's place while a shared step holds it.
    pub(crate) fn detached() -> Sequence {
        Sequence {
            engine_id: 0,
            len: 0,
            kv: KvCache::new(CacheLayout::TokenMajor, CacheDtype::Float32, 0, &[], 0),
            scratch: Scratch::default(),
            gate: None,
        }
    }

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
    /// This layer's choices, `k` slots a token (`prefetch::NONE` where a gate chose fewer).
    pub choice: Vec<u32>,
    /// Predictive prefetch's state (`prefetch`): the previous MoE layer's choices, and the
    /// experts guessed for layer `guess_layer`.
    pub prev_choice: Vec<u32>,
    pub prev_layer: Option<usize>,
    pub guess: Vec<bool>,
    pub guess_layer: Option<usize>,
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
