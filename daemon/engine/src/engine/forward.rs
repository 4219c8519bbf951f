//! One forward pass: embed, then per layer attention (appending to the KV cache) and the FFN (dense
//! MLP, or router -> gate -> the chosen experts grouped by expert -> weighted sum + shared expert),
//! the residual add, and the head.

use std::sync::atomic::Ordering::Relaxed;

use ort::AsPointer;
use ort::sys::OrtValue;

use super::graph::Graph;
use super::kv::{KvCache, PastData, Scratch, Sequence};
use super::routing::{Gate, RouterInput};
use super::side_by_side;
use super::{Engine, EngineError, ExecMode, Layer, Logits};

fn count_expert_run(engine: &Engine, nanos: u64) {
    engine.counters.expert_nanos.fetch_add(nanos, Relaxed);
    engine.counters.expert_runs.fetch_add(1, Relaxed);
}

pub(super) fn forward(
    engine: &Engine,
    seq: &mut Sequence,
    tokens: &[u32],
    which: Logits,
    mode: ExecMode,
) -> Result<Vec<f32>, EngineError> {
    if seq.engine_id != engine.id {
        return Err(EngineError::ForeignSequence);
    }
    if tokens.is_empty() {
        return Err(EngineError::NoTokens);
    }
    let ctx = engine.package.context_length();
    if seq.len + tokens.len() > ctx {
        return Err(EngineError::ContextOverflow {
            cached: seq.len,
            new: tokens.len(),
            context_length: ctx,
        });
    }
    if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= engine.vocab) {
        return Err(EngineError::TokenOutOfRange {
            token: bad,
            vocab: engine.vocab,
        });
    }
    let past = seq.len;
    match run(engine, seq, tokens, which, mode) {
        Ok(logits) => {
            seq.len = past + tokens.len();
            engine.counters.forward_calls.fetch_add(1, Relaxed);
            engine
                .counters
                .forward_tokens
                .fetch_add(tokens.len() as u64, Relaxed);
            Ok(logits)
        }
        Err(e) => {
            // Layers before the failure appended to their caches; keep the sequence consistent.
            seq.truncate_caches(past);
            Err(e)
        }
    }
}

fn run(
    engine: &Engine,
    seq: &mut Sequence,
    tokens: &[u32],
    which: Logits,
    mode: ExecMode,
) -> Result<Vec<f32>, EngineError> {
    let t = tokens.len();
    let h = engine.hidden;
    let past = seq.len;
    let Sequence {
        kv, scratch, gate, ..
    } = seq;
    kv.reserve(past + t, past);
    let s = scratch;
    let gate: &dyn Gate = gate.as_deref().unwrap_or(&*engine.gate);

    s.ids.clear();
    s.ids.extend(tokens.iter().map(|&x| i64::from(x)));
    s.positions.clear();
    s.positions.extend((past..past + t).map(|p| p as i64));

    let embed = &engine.embed;
    let rows = [t as i64, h as i64];
    s.hidden.resize(t * h, 0.0);
    embed.run(
        &[&*embed.input(&[t as i64], &s.ids)?],
        &[&*embed.output(&rows, &mut s.hidden)?],
        &engine.counters,
    )?;

    for (l, layer) in engine.layers.iter().enumerate() {
        let (attn, fused_router) = match layer {
            Layer::Dense { attn, .. } => (attn, false),
            Layer::Moe { attn, router, .. } => (attn, router.is_none()),
        };
        attention(engine, attn, fused_router, kv, l, s, t, past)?;
        // s.hidden now holds hidden_out, s.ffn_in the FFN input.
        match layer {
            Layer::Dense { mlp, .. } => {
                add_ffn(engine, mlp, rows, &s.ffn_in, &mut s.y, &mut s.hidden)?;
            }
            Layer::Moe { router, shared, .. } => {
                moe(
                    engine,
                    gate,
                    l,
                    router.as_ref(),
                    shared.as_ref(),
                    s,
                    t,
                    mode,
                )?;
            }
        }
    }

    let head = &engine.head;
    let v = engine.vocab;
    let (rows, start) = match which {
        Logits::Last => (1, (t - 1) * h),
        Logits::All => (t, 0),
    };
    let mut logits = vec![0.0; rows * v];
    head.run(
        &[&*head.input(&[rows as i64, h as i64], &s.hidden[start..])?],
        &[&*head.output(&[rows as i64, v as i64], &mut logits)?],
        &engine.counters,
    )?;
    Ok(logits)
}

/// Runs `attn`; with `fused_router` its extra output, the router logits, lands in `s.logits`.
#[allow(clippy::too_many_arguments)]
fn attention(
    engine: &Engine,
    attn: &Graph,
    fused_router: bool,
    kv: &mut KvCache,
    layer: usize,
    s: &mut Scratch,
    t: usize,
    past: usize,
) -> Result<(), EngineError> {
    let rows = [t as i64, engine.hidden as i64];
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
    s.next.resize(s.hidden.len(), 0.0);
    s.ffn_in.resize(s.hidden.len(), 0.0);
    if fused_router {
        s.logits.resize(t * engine.num_experts, 0.0);
    }
    {
        let hidden = attn.input(&rows, &s.hidden)?;
        let positions = attn.input(&[t as i64], &s.positions)?;
        let hidden_out = attn.output(&rows, &mut s.next)?;
        let ffn_in = attn.output(&rows, &mut s.ffn_in)?;
        let mut inputs: Vec<&dyn AsPointer<Sys = OrtValue>> = vec![&*hidden, &*positions];
        inputs.extend(past_in.iter().map(PastRef::value));
        let mut outputs: Vec<&dyn AsPointer<Sys = OrtValue>> = vec![&*hidden_out, &*ffn_in];
        outputs.extend(
            new_out
                .iter()
                .map(|v| &**v as &dyn AsPointer<Sys = OrtValue>),
        );
        let logits = if fused_router {
            Some(attn.output(&[t as i64, engine.num_experts as i64], &mut s.logits)?)
        } else {
            None
        };
        outputs.extend(
            logits
                .as_deref()
                .map(|v| v as &dyn AsPointer<Sys = OrtValue>),
        );
        attn.run(&inputs, &outputs, &engine.counters)?;
    }
    drop((past_in, new_out));
    for (i, (io, new)) in engine.cache_io.iter().zip(&s.kv_new).enumerate() {
        kv.append(layer, i, &new[..t * io.per_token], past, t);
    }
    std::mem::swap(&mut s.hidden, &mut s.next);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn moe(
    engine: &Engine,
    gate: &dyn Gate,
    layer: usize,
    router: Option<&Graph>,
    shared: Option<&Graph>,
    s: &mut Scratch,
    t: usize,
    mode: ExecMode,
) -> Result<(), EngineError> {
    let h = engine.hidden;
    let e = engine.num_experts;
    let k = engine.top_k;
    let rows = [t as i64, h as i64];

    // Without a router graph, attention left the logits in s.logits.
    if let Some(router) = router {
        s.logits.resize(t * e, 0.0);
        router.run(
            &[&*router.input(&rows, &s.ffn_in)?],
            &[&*router.output(&[t as i64, e as i64], &mut s.logits)?],
            &engine.counters,
        )?;
    }
    let input = RouterInput {
        logits: &s.logits,
        num_tokens: t,
        num_experts: e,
        top_k: k,
    };
    s.routing.reset(k);
    gate.route(layer, &input, &mut s.routing)
        .map_err(|g| EngineError::Gate {
            layer,
            message: g.to_string(),
        })?;
    s.routing
        .validate(&input)
        .map_err(|message| EngineError::InvalidRouting { layer, message })?;

    for list in s.assigned.iter_mut() {
        list.clear();
    }
    for tok in 0..t {
        let (ex, w) = s.routing.token(tok);
        for (&x, &wt) in ex.iter().zip(w) {
            s.assigned[x as usize].push((tok as u32, wt));
        }
    }
    let counts = &engine.counters.activations[layer];
    for (x, list) in s.assigned.iter().enumerate() {
        if !list.is_empty() {
            counts[x].fetch_add(list.len() as u64, Relaxed);
        }
    }

    s.acc.clear();
    s.acc.resize(t * h, 0.0);
    // Cold experts are created together first: session creation is CPU-bound and parallel.
    engine.prefetch_experts(layer, |x| {
        mode == ExecMode::Dense || !s.assigned[x].is_empty()
    })?;
    let chosen = s.assigned.iter().filter(|l| !l.is_empty()).count();
    let threads = side_by_side::threads(
        engine.experts_side_by_side(),
        engine.intra_threads(),
        t,
        chosen,
    );
    if mode == ExecMode::Sparse && threads > 1 {
        side_by_side::run(engine, layer, s, t, threads)?;
    } else {
        one_at_a_time(engine, layer, s, t, mode)?;
    }

    if let Some(sh) = shared {
        add_ffn(engine, sh, rows, &s.ffn_in, &mut s.y, &mut s.acc)?;
    }
    for (a, &b) in s.hidden.iter_mut().zip(&s.acc) {
        *a += b;
    }
    Ok(())
}

/// Runs the experts of `layer` one after another (every one in dense mode, the routed ones in
/// sparse mode), each on the whole intra-op pool, and adds their weighted outputs to `s.acc`.
fn one_at_a_time(
    engine: &Engine,
    layer: usize,
    s: &mut Scratch,
    t: usize,
    mode: ExecMode,
) -> Result<(), EngineError> {
    let h = engine.hidden;
    let e = engine.num_experts;
    let rows = [t as i64, h as i64];
    // Experts run in index order, as transformers sums them.
    for x in 0..e {
        let list = &s.assigned[x];
        match mode {
            ExecMode::Sparse => {
                if list.is_empty() {
                    continue;
                }
                let graph = engine.expert(layer, x)?;
                let n = list.len();
                // Rows are in token order; when every token chose this expert, no gather is needed.
                let src: &[f32] = if n == t {
                    &s.ffn_in
                } else {
                    s.gather.clear();
                    for &(tok, _) in list {
                        let r = tok as usize * h;
                        s.gather.extend_from_slice(&s.ffn_in[r..r + h]);
                    }
                    &s.gather
                };
                let shape = [n as i64, h as i64];
                s.y.resize(n * h, 0.0);
                let nanos = graph.run(
                    &[&*graph.input(&shape, src)?],
                    &[&*graph.output(&shape, &mut s.y)?],
                    &engine.counters,
                )?;
                count_expert_run(engine, nanos);
                side_by_side::add_weighted(list, &s.y, &mut s.acc, h);
            }
            ExecMode::Dense => {
                let graph = engine.expert(layer, x)?;
                s.y.resize(t * h, 0.0);
                let nanos = graph.run(
                    &[&*graph.input(&rows, &s.ffn_in)?],
                    &[&*graph.output(&rows, &mut s.y)?],
                    &engine.counters,
                )?;
                count_expert_run(engine, nanos);
                let mut j = 0;
                for (tok, row) in s.y.chunks_exact(h).enumerate() {
                    // The router weight of this expert for this token, zero when unselected.
                    let w = if j < list.len() && list[j].0 as usize == tok {
                        j += 1;
                        list[j - 1].1
                    } else {
                        0.0
                    };
                    let dst = &mut s.acc[tok * h..(tok + 1) * h];
                    for (d, &v) in dst.iter_mut().zip(row) {
                        *d += w * v;
                    }
                }
            }
        }
    }
    Ok(())
}

/// Runs a dense FFN graph (dense MLP, shared expert) on `x` `[rows]` into `y` and adds it to `dst`.
fn add_ffn(
    engine: &Engine,
    graph: &Graph,
    rows: [i64; 2],
    x: &[f32],
    y: &mut Vec<f32>,
    dst: &mut [f32],
) -> Result<(), EngineError> {
    y.resize(x.len(), 0.0);
    graph.run(
        &[&*graph.input(&rows, x)?],
        &[&*graph.output(&rows, y)?],
        &engine.counters,
    )?;
    for (d, &v) in dst.iter_mut().zip(y.iter()) {
        *d += v;
    }
    Ok(())
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
