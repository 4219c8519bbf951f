//! One forward pass over the new tokens of one or several sequences (a batched step): embed, then
//! per layer attention (appending to each KV cache) and the FFN (dense MLP, or router -> each
//! sequence's gate -> the chosen experts grouped by expert over all rows -> weighted sum + shared
//! expert), the residual add, and the head.

use std::sync::atomic::Ordering::Relaxed;

use std::ops::Range;

use super::attention::{self, Part};
use super::graph::Graph;
use super::kv::{Scratch, Sequence};
use super::routing::{Gate, RouterInput};
use super::{Engine, EngineError, ExecMode, Layer, Logits};
use super::{prefetch, side_by_side};

fn count_expert_run(engine: &Engine, nanos: u64) {
    engine.counters.expert_nanos.fetch_add(nanos, Relaxed);
    engine.counters.expert_runs.fetch_add(1, Relaxed);
}

/// One sequence's part of a forward step: `tokens` after its cache, and which logits it wants.
pub struct Step<'a> {
    pub seq: &'a mut Sequence,
    pub tokens: &'a [u32],
    pub which: Logits,
}

pub(super) fn forward(
    engine: &Engine,
    seq: &mut Sequence,
    tokens: &[u32],
    which: Logits,
    mode: ExecMode,
) -> Result<Vec<f32>, EngineError> {
    let mut steps = [Step { seq, tokens, which }];
    let mut out = forward_batch(engine, &mut steps, mode)?;
    out.pop().ok_or(EngineError::NoTokens)?
}

/// Runs every step's tokens in one pass: the embedding, router, experts, shared expert and head
/// once over the rows of all of them (an expert chosen by several sequences runs once on all its
/// rows), attention per sequence or batched (see `attention`). The outer error is a failure of
/// the pass itself (every step's cache is then as before); a step's own error (a bad token, its
/// gate) fails that step only.
pub(super) fn forward_batch(
    engine: &Engine,
    steps: &mut [Step<'_>],
    mode: ExecMode,
) -> Result<Vec<Result<Vec<f32>, EngineError>>, EngineError> {
    let mut out: Vec<Result<Vec<f32>, EngineError>> = steps
        .iter()
        .map(|st| check(engine, st).map(|()| Vec::new()))
        .collect();
    let live: Vec<usize> = (0..steps.len()).filter(|&i| out[i].is_ok()).collect();
    let Some(&first) = live.first() else {
        return Ok(out);
    };
    let pasts: Vec<usize> = steps.iter().map(|st| st.seq.len).collect();
    // The first live sequence's scratch serves the whole step.
    let mut s = std::mem::take(&mut steps[first].seq.scratch);
    let reads_before = crate::procmem::storage_reads();
    let ran = run(engine, steps, &live, mode, &mut s, &mut out);
    if let (Some(a), Some(b)) = (reads_before, crate::procmem::storage_reads()) {
        engine
            .counters
            .storage_read_bytes
            .fetch_add(b.saturating_sub(a), Relaxed);
    }
    steps[first].seq.scratch = s;
    if let Err(e) = ran {
        // Layers before the failure appended to their caches; keep the sequences consistent.
        for &i in &live {
            steps[i].seq.truncate_caches(pasts[i]);
        }
        return Err(e);
    }
    if live.len() > 1 {
        engine.counters.batch_steps.fetch_add(1, Relaxed);
        engine
            .counters
            .batch_sequences
            .fetch_add(live.len() as u64, Relaxed);
    }
    for &i in &live {
        let st = &mut steps[i];
        if out[i].is_err() {
            st.seq.truncate_caches(pasts[i]);
            continue;
        }
        st.seq.len = pasts[i] + st.tokens.len();
        engine.counters.forward_calls.fetch_add(1, Relaxed);
        engine
            .counters
            .forward_tokens
            .fetch_add(st.tokens.len() as u64, Relaxed);
    }
    Ok(out)
}

fn check(engine: &Engine, st: &Step<'_>) -> Result<(), EngineError> {
    let (seq, tokens) = (&*st.seq, st.tokens);
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
    Ok(())
}

/// The pass over the `live` steps, with `s` as the step's scratch; a step whose gate fails gets
/// its error in `out` and no experts from then on.
fn run(
    engine: &Engine,
    steps: &mut [Step<'_>],
    live: &[usize],
    mode: ExecMode,
    s: &mut Scratch,
    out: &mut [Result<Vec<f32>, EngineError>],
) -> Result<(), EngineError> {
    let h = engine.hidden;
    s.ids.clear();
    s.positions.clear();
    // What a pass that failed left is not this pass's.
    s.guess_layer = None;
    s.prev_layer = None;
    let mut rows = Vec::with_capacity(live.len());
    for &i in live {
        let st = &mut steps[i];
        let past = st.seq.len;
        let t = st.tokens.len();
        st.seq.kv.reserve(past + t, past);
        let at = s.ids.len();
        rows.push(at..at + t);
        s.ids.extend(st.tokens.iter().map(|&x| i64::from(x)));
        s.positions.extend((past..past + t).map(|p| p as i64));
    }
    let t = s.ids.len();

    let embed = &engine.embed;
    let shape = [t as i64, h as i64];
    s.hidden.resize(t * h, 0.0);
    embed.run(
        &[&*embed.input(&[t as i64], &s.ids)?],
        &[&*embed.output(&shape, &mut s.hidden)?],
        &engine.counters,
    )?;

    for (l, layer) in engine.layers.iter().enumerate() {
        let (attn, fused_router) = match layer {
            Layer::Dense { attn, .. } => (attn, false),
            Layer::Moe { attn, router, .. } => (attn, router.is_none()),
        };
        {
            let mut parts: Vec<Part<'_>> = Vec::with_capacity(live.len());
            for (st, r) in live_steps(steps, live).zip(&rows) {
                parts.push(Part {
                    past: st.seq.len,
                    kv: &mut st.seq.kv,
                    rows: r.clone(),
                });
            }
            attention::run(engine, attn, fused_router, l, s, &mut parts)?;
        }
        std::mem::swap(&mut s.hidden, &mut s.next);
        // s.hidden now holds hidden_out, s.ffn_in the FFN input.
        match layer {
            Layer::Dense { mlp, .. } => {
                add_ffn(engine, mlp, shape, &s.ffn_in, &mut s.y, &mut s.hidden)?;
            }
            Layer::Moe { router, shared, .. } => {
                let mut gates = Vec::with_capacity(live.len());
                for ((&i, st), r) in live.iter().zip(live_steps(steps, live)).zip(&rows) {
                    let gate: &dyn Gate = st.seq.gate.as_deref().unwrap_or(&*engine.gate);
                    gates.push((gate, r.clone(), i));
                }
                let layer_in = MoeIn {
                    router: router.as_ref(),
                    shared: shared.as_ref(),
                    gates: &gates,
                };
                moe(engine, l, &layer_in, s, t, mode, out)?;
            }
        }
        release_packed_originals(engine);
    }

    let headed = head(engine, steps, live, &rows, s, out);
    release_packed_originals(engine);
    headed
}

/// Mapped bytes kernels may repack before the engine drops the dead originals' pages: finding the
/// clean mappings reads `/proc/self/smaps` (milliseconds with hundreds of sessions), so it is
/// paced by bytes, and the dead pages it leaves resident at any time stay under this.
const RELEASE_EVERY: u64 = 64 << 20;

/// Drops the package's clean mapped pages once kernels have repacked `RELEASE_EVERY` bytes of
/// them since the last time; looked at after each layer, so a first pass over every expert holds
/// little more than that beside the packed copies.
fn release_packed_originals(engine: &Engine) {
    if crate::qmatmul::take_unreleased(RELEASE_EVERY) {
        engine.release_mapped_weights();
    }
}

/// The live steps, in `live`'s order.
fn live_steps<'s, 'a>(
    steps: &'s mut [Step<'a>],
    live: &'s [usize],
) -> impl Iterator<Item = &'s mut Step<'a>> {
    steps
        .iter_mut()
        .enumerate()
        .filter(move |(i, _)| live.binary_search(i).is_ok())
        .map(|(_, st)| st)
}

/// The head over each step's wanted rows, one run for the whole step.
fn head(
    engine: &Engine,
    steps: &[Step<'_>],
    live: &[usize],
    rows: &[Range<usize>],
    s: &mut Scratch,
    out: &mut [Result<Vec<f32>, EngineError>],
) -> Result<(), EngineError> {
    let (h, v) = (engine.hidden, engine.vocab);
    let wanted = |st: &Step<'_>, r: &Range<usize>| match st.which {
        Logits::Last => r.end - 1..r.end,
        Logits::All => r.clone(),
    };
    let head = &engine.head;
    if let ([i], [r]) = (live, rows) {
        // One sequence: its rows are already contiguous.
        let want = wanted(&steps[*i], r);
        let mut logits = vec![0.0; want.len() * v];
        let nanos = head.run(
            &[&*head.input(
                &[want.len() as i64, h as i64],
                &s.hidden[want.start * h..want.end * h],
            )?],
            &[&*head.output(&[want.len() as i64, v as i64], &mut logits)?],
            &engine.counters,
        )?;
        engine.counters.head_nanos.fetch_add(nanos, Relaxed);
        if out[*i].is_ok() {
            out[*i] = Ok(logits);
        }
        return Ok(());
    }
    s.gather.clear();
    let mut counts = Vec::with_capacity(live.len());
    for (&i, r) in live.iter().zip(rows) {
        let want = if out[i].is_ok() {
            wanted(&steps[i], r)
        } else {
            0..0
        };
        s.gather
            .extend_from_slice(&s.hidden[want.start * h..want.end * h]);
        counts.push(want.len());
    }
    let n: usize = counts.iter().sum();
    if n == 0 {
        return Ok(());
    }
    let mut logits = vec![0.0; n * v];
    let nanos = head.run(
        &[&*head.input(&[n as i64, h as i64], &s.gather)?],
        &[&*head.output(&[n as i64, v as i64], &mut logits)?],
        &engine.counters,
    )?;
    engine.counters.head_nanos.fetch_add(nanos, Relaxed);
    let mut at = 0;
    for (&i, &c) in live.iter().zip(&counts) {
        if c > 0 {
            out[i] = Ok(logits[at * v..(at + c) * v].to_vec());
            at += c;
        }
    }
    Ok(())
}

/// A MoE layer's graphs and, per live step, its gate, rows and index (a step already failed is skipped).
struct MoeIn<'g> {
    router: Option<&'g Graph>,
    shared: Option<&'g Graph>,
    gates: &'g [(&'g dyn Gate, Range<usize>, usize)],
}

fn moe(
    engine: &Engine,
    layer: usize,
    m: &MoeIn<'_>,
    s: &mut Scratch,
    t: usize,
    mode: ExecMode,
    out: &mut [Result<Vec<f32>, EngineError>],
) -> Result<(), EngineError> {
    let h = engine.hidden;
    let e = engine.num_experts;
    let k = engine.top_k;
    let rows = [t as i64, h as i64];

    // Without a router graph, attention left the logits in s.logits.
    if let Some(router) = m.router {
        s.logits.resize(t * e, 0.0);
        router.run(
            &[&*router.input(&rows, &s.ffn_in)?],
            &[&*router.output(&[t as i64, e as i64], &mut s.logits)?],
            &engine.counters,
        )?;
    }
    for list in s.assigned.iter_mut() {
        list.clear();
    }
    s.choice.clear();
    s.choice.resize(t * k, prefetch::NONE);
    // Each sequence's gate routes its own rows (a request's gate plugin sees only its tokens).
    for (gate, r, i) in m.gates {
        if out[*i].is_err() {
            continue;
        }
        let input = RouterInput {
            logits: &s.logits[r.start * e..r.end * e],
            num_tokens: r.len(),
            num_experts: e,
            top_k: k,
        };
        s.routing.reset(k);
        let routed = gate
            .route(layer, &input, &mut s.routing)
            .map_err(|g| EngineError::Gate {
                layer,
                message: g.to_string(),
            })
            .and_then(|()| {
                s.routing
                    .validate(&input)
                    .map_err(|message| EngineError::InvalidRouting { layer, message })
            });
        if let Err(err) = routed {
            out[*i] = Err(err);
            continue;
        }
        for tok in 0..r.len() {
            let (ex, w) = s.routing.token(tok);
            let row = (r.start + tok) * k;
            for (j, (&x, &wt)) in ex.iter().zip(w).enumerate() {
                s.assigned[x as usize].push(((r.start + tok) as u32, wt));
                if let Some(slot) = s.choice.get_mut(row + j) {
                    *slot = x;
                }
            }
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
    let foresight = engine
        .foresight
        .as_ref()
        .filter(|_| mode == ExecMode::Sparse);
    if let Some(f) = foresight {
        f.learn_and_score(engine, layer, s, k);
    }
    // Cold experts are created together first: session creation is CPU-bound and parallel.
    engine.prefetch_experts(layer, |x| {
        mode == ExecMode::Dense || !s.assigned[x].is_empty()
    })?;
    // This layer's own files were asked for first; the next layer's guess comes after them.
    if let Some(f) = foresight {
        f.guess_next(engine, layer, s, k);
    }
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

    if let Some(sh) = m.shared {
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
