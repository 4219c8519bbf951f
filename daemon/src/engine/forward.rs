//! One forward pass: embed, then per layer attention (appending to the KV cache) and the FFN (dense
//! MLP, or router -> gate -> the chosen experts grouped by expert -> weighted sum + shared expert),
//! the residual add, and the head.

use std::borrow::Cow;
use std::sync::atomic::Ordering::Relaxed;

use ort::value::TensorRef;

use super::graph::{Graph, Inputs};
use super::kv::{KvCache, Scratch, Sequence};
use super::routing::{Gate, RouterInput};
use super::{Engine, EngineError, ExecMode, Layer, Logits};

fn tensor_err(file: &str, e: ort::Error) -> EngineError {
    EngineError::Run {
        file: file.to_string(),
        message: format!("could not build an input tensor: {e}"),
    }
}

/// A borrowed `[rows, ..shape]` tensor input.
fn view<'a, T>(
    graph: &Graph,
    name: &'a str,
    shape: Vec<i64>,
    data: &'a [T],
) -> Result<(Cow<'a, str>, ort::session::SessionInputValue<'a>), EngineError>
where
    T: ort::value::PrimitiveTensorElementType + std::fmt::Debug + Clone + 'static,
{
    let t = TensorRef::from_array_view((shape, data)).map_err(|e| tensor_err(&graph.file, e))?;
    Ok((Cow::Borrowed(name), t.into()))
}

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
    let inputs = vec![view(embed, "input_ids", vec![t as i64], &s.ids)?];
    let out = embed.run(inputs, &engine.counters)?;
    s.hidden.clear();
    s.hidden.extend_from_slice(out.rows("hidden", t, h)?);

    for (l, layer) in engine.layers.iter().enumerate() {
        let attn = match layer {
            Layer::Dense { attn, .. } | Layer::Moe { attn, .. } => attn,
        };
        attention(engine, attn, kv, l, s, t, past)?;
        // s.hidden now holds hidden_out, s.ffn_in the FFN input.
        match layer {
            Layer::Dense { mlp, .. } => {
                let inputs = vec![view(mlp, "x", vec![t as i64, h as i64], &s.ffn_in)?];
                let out = mlp.run(inputs, &engine.counters)?;
                for (a, b) in s.hidden.iter_mut().zip(out.rows("y", t, h)?) {
                    *a += b;
                }
            }
            Layer::Moe { router, shared, .. } => {
                moe(engine, gate, l, router, shared.as_ref(), s, t, mode)?;
            }
        }
    }

    let head = &engine.head;
    let v = engine.vocab;
    let (rows, start) = match which {
        Logits::Last => (1, (t - 1) * h),
        Logits::All => (t, 0),
    };
    let inputs = vec![view(
        head,
        "hidden",
        vec![rows as i64, h as i64],
        &s.hidden[start..],
    )?];
    let out = head.run(inputs, &engine.counters)?;
    Ok(out.rows("logits", rows, v)?.to_vec())
}

fn attention(
    engine: &Engine,
    attn: &Graph,
    kv: &mut KvCache,
    layer: usize,
    s: &mut Scratch,
    t: usize,
    past: usize,
) -> Result<(), EngineError> {
    let h = engine.hidden;
    let mut inputs: Inputs<'_> = Vec::with_capacity(2 + engine.cache_io.len());
    inputs.push(view(attn, "hidden", vec![t as i64, h as i64], &s.hidden)?);
    inputs.push(view(attn, "positions", vec![t as i64], &s.positions)?);
    for (i, io) in engine.cache_io.iter().enumerate() {
        let (shape, data) = kv.past(layer, i, io, past);
        inputs.push(view(attn, &io.past, shape, data)?);
    }
    let out = attn.run(inputs, &engine.counters)?;
    s.hidden.clear();
    s.hidden.extend_from_slice(out.rows("hidden_out", t, h)?);
    s.ffn_in.clear();
    s.ffn_in.extend_from_slice(out.rows("ffn_in", t, h)?);
    for (i, io) in engine.cache_io.iter().enumerate() {
        kv.append(layer, i, out.rows(&io.new, t, io.per_token)?, past, t);
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn moe(
    engine: &Engine,
    gate: &dyn Gate,
    layer: usize,
    router: &Graph,
    shared: Option<&Graph>,
    s: &mut Scratch,
    t: usize,
    mode: ExecMode,
) -> Result<(), EngineError> {
    let h = engine.hidden;
    let e = engine.num_experts;
    let k = engine.top_k;
    let x_shape = || vec![t as i64, h as i64];

    let inputs = vec![view(router, "ffn_in", x_shape(), &s.ffn_in)?];
    let out = router.run(inputs, &engine.counters)?;
    s.logits.clear();
    s.logits.extend_from_slice(out.rows("logits", t, e)?);
    drop(out);
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
                let inputs = vec![view(&graph, "x", vec![n as i64, h as i64], src)?];
                let out = graph.run(inputs, &engine.counters)?;
                count_expert_run(engine, out.nanos);
                let y = out.rows("y", n, h)?;
                for (&(tok, w), row) in list.iter().zip(y.chunks_exact(h)) {
                    let dst = &mut s.acc[tok as usize * h..(tok as usize + 1) * h];
                    for (d, &v) in dst.iter_mut().zip(row) {
                        *d += w * v;
                    }
                }
            }
            ExecMode::Dense => {
                let graph = engine.expert(layer, x)?;
                let inputs = vec![view(&graph, "x", x_shape(), &s.ffn_in)?];
                let out = graph.run(inputs, &engine.counters)?;
                count_expert_run(engine, out.nanos);
                let y = out.rows("y", t, h)?;
                let mut j = 0;
                for (tok, row) in y.chunks_exact(h).enumerate() {
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

    if let Some(sh) = shared {
        let inputs = vec![view(sh, "x", x_shape(), &s.ffn_in)?];
        let out = sh.run(inputs, &engine.counters)?;
        for (d, &v) in s.acc.iter_mut().zip(out.rows("y", t, h)?) {
            *d += v;
        }
    }
    for (a, &b) in s.hidden.iter_mut().zip(&s.acc) {
        *a += b;
    }
    Ok(())
}
