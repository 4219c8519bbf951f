//! A layer's attention graph in a forward step: once per sequence, or once for the rows of every
//! sequence of the step when the graph's attention runs moed's kernel (which then attends each
//! sequence over its own cache), so the projections' weights are read once per step.

use std::ops::Range;
use std::sync::atomic::Ordering::Relaxed;

use ort::AsPointer;
use ort::sys::OrtValue;

use super::graph::Graph;
use super::kv::{KvCache, PastData, Scratch};
use super::{Engine, EngineError};
use crate::package::CacheLayout;
use crate::qmatmul::{Segment, SegmentCache, with_segments};

/// One sequence's rows of the step and its cache.
pub(super) struct Part<'a> {
    pub kv: &'a mut KvCache,
    pub rows: Range<usize>,
    pub past: usize,
}

/// Runs `layer`'s attention for every part: `s.hidden` -> `s.next` (hidden_out), `s.ffn_in`, and
/// with `fused_router` the router logits in `s.logits`; appends each part's new rows to its cache.
/// The caller swaps `s.hidden` and `s.next` afterwards.
pub(super) fn run(
    engine: &Engine,
    attn: &Graph,
    fused_router: bool,
    layer: usize,
    s: &mut Scratch,
    parts: &mut [Part<'_>],
) -> Result<(), EngineError> {
    let t: usize = parts.iter().map(|p| p.rows.len()).sum();
    s.next.resize(t * engine.hidden, 0.0);
    s.ffn_in.resize(t * engine.hidden, 0.0);
    if fused_router {
        s.logits.resize(t * engine.num_experts, 0.0);
    }
    if parts.len() > 1 && segmentable(engine, attn) {
        return batched(engine, attn, fused_router, layer, s, parts);
    }
    for p in parts.iter_mut() {
        let rows = p.rows.clone();
        graph_run(
            engine,
            attn,
            fused_router,
            layer,
            s,
            p.kv,
            rows.clone(),
            p.past,
            &[],
        )?;
        append(engine, layer, s, p.kv, rows.len(), 0, p.past);
    }
    Ok(())
}

/// Whether one run can serve several sequences: moed's kernel does every attention node and the
/// cache is the head-major `key`, `value` pair it reads.
fn segmentable(engine: &Engine, attn: &Graph) -> bool {
    let a = &engine.package.manifest().attention;
    attn.segmented_attention
        && a.cache_layout == CacheLayout::HeadMajor
        && a.cache.len() == 2
        && a.cache[0].name == "key"
        && a.cache[1].name == "value"
}

fn batched(
    engine: &Engine,
    attn: &Graph,
    fused_router: bool,
    layer: usize,
    s: &mut Scratch,
    parts: &mut [Part<'_>],
) -> Result<(), EngineError> {
    let t: usize = parts.iter().map(|p| p.rows.len()).sum();
    let mut segments = Vec::with_capacity(parts.len());
    for p in parts.iter() {
        let cache = |i: usize| {
            let (shape, data) = p.kv.past(layer, i, &engine.cache_io[i], p.past);
            let capacity = shape.get(1).map_or(0, |&c| c.max(0) as usize);
            let data = match data {
                PastData::F32(d) => SegmentCache::F32(d),
                PastData::F16(d) => SegmentCache::F16(d),
            };
            (capacity, data)
        };
        let ((capacity, key), (_, value)) = (cache(0), cache(1));
        segments.push(Segment {
            rows: p.rows.len(),
            past: p.past,
            capacity,
            key,
            value,
        });
    }
    // The graph's own past inputs are the first sequence's (the kernel reads the segments).
    let first = parts.first().ok_or(EngineError::NoTokens)?;
    graph_run(
        engine,
        attn,
        fused_router,
        layer,
        s,
        first.kv,
        0..t,
        first.past,
        &segments,
    )?;
    drop(segments);
    let mut row = 0;
    for p in parts.iter_mut() {
        append(engine, layer, s, p.kv, p.rows.len(), row, p.past);
        row += p.rows.len();
    }
    Ok(())
}

/// One run of the attention graph on `rows`; with `segments`, as their batch.
#[allow(clippy::too_many_arguments)]
fn graph_run(
    engine: &Engine,
    attn: &Graph,
    fused_router: bool,
    layer: usize,
    s: &mut Scratch,
    kv: &KvCache,
    rows: Range<usize>,
    past: usize,
    segments: &[Segment<'_>],
) -> Result<(), EngineError> {
    let (h, e) = (engine.hidden, engine.num_experts);
    let t = rows.len();
    let shape = [t as i64, h as i64];
    // The graph reads the cache where it is (its layout, FORMAT.md "KV cache layouts") and writes
    // the new rows to scratch buffers, which the cache then takes.
    s.kv_new.resize_with(engine.cache_io.len(), Vec::new);
    let mut past_in = Vec::with_capacity(engine.cache_io.len());
    let mut new_out = Vec::with_capacity(engine.cache_io.len());
    for (i, (io, buf)) in engine.cache_io.iter().zip(s.kv_new.iter_mut()).enumerate() {
        let (shape, data) = kv.past(layer, i, io, past);
        past_in.push(match data {
            PastData::F32(d) => PastRef::F32(attn.input(&shape, d)?),
            PastData::F16(d) => PastRef::F16(attn.input(&shape, d)?),
        });
        buf.resize(t * io.per_token, 0.0);
        let mut shape = Vec::with_capacity(1 + io.shape.len());
        shape.push(t as i64);
        shape.extend_from_slice(&io.shape);
        new_out.push(attn.output(&shape, buf)?);
    }
    let hidden = attn.input(&shape, &s.hidden[rows.start * h..rows.end * h])?;
    let positions = attn.input(&[t as i64], &s.positions[rows.clone()])?;
    let hidden_out = attn.output(&shape, &mut s.next[rows.start * h..rows.end * h])?;
    let ffn_in = attn.output(&shape, &mut s.ffn_in[rows.start * h..rows.end * h])?;
    let mut inputs: Vec<&dyn AsPointer<Sys = OrtValue>> = vec![&*hidden, &*positions];
    inputs.extend(past_in.iter().map(PastRef::value));
    let mut outputs: Vec<&dyn AsPointer<Sys = OrtValue>> = vec![&*hidden_out, &*ffn_in];
    outputs.extend(
        new_out
            .iter()
            .map(|v| &**v as &dyn AsPointer<Sys = OrtValue>),
    );
    let logits = if fused_router {
        let dst = &mut s.logits[rows.start * e..rows.end * e];
        Some(attn.output(&[t as i64, e as i64], dst)?)
    } else {
        None
    };
    outputs.extend(
        logits
            .as_deref()
            .map(|v| v as &dyn AsPointer<Sys = OrtValue>),
    );
    let c = &engine.counters;
    if segments.is_empty() {
        let nanos = attn.run(&inputs, &outputs, c)?;
        c.attention_nanos.fetch_add(nanos, Relaxed);
        return Ok(());
    }
    let (ran, uses) = with_segments(segments, || attn.run(&inputs, &outputs, c));
    c.attention_nanos.fetch_add(ran?, Relaxed);
    c.batched_attention_runs.fetch_add(1, Relaxed);
    if uses == 0 {
        // The kernel did not see the batch: the output is one sequence's view of all the rows.
        return Err(EngineError::Run {
            file: attn.file.clone(),
            message: "the batched attention kernel did not run on the calling thread".into(),
        });
    }
    Ok(())
}

/// Appends the `t` new rows starting at row `from` of the graph's `new_<name>` outputs to `kv`.
fn append(
    engine: &Engine,
    layer: usize,
    s: &Scratch,
    kv: &mut KvCache,
    t: usize,
    from: usize,
    past: usize,
) {
    for (i, (io, new)) in engine.cache_io.iter().zip(&s.kv_new).enumerate() {
        let rows = &new[from * io.per_token..(from + t) * io.per_token];
        kv.append(layer, i, rows, past, t);
    }
}

/// A `past_<name>` input over the cache in its type.
enum PastRef<'a> {
    F32(ort::value::TensorRef<'a, f32>),
    F16(ort::value::TensorRef<'a, moed_kernels::f16>),
}

impl PastRef<'_> {
    fn value(&self) -> &dyn AsPointer<Sys = OrtValue> {
        match self {
            PastRef::F32(v) => &**v,
            PastRef::F16(v) => &**v,
        }
    }
}
