//! The routed experts of a short step (decode) run side by side, one expert per thread at a time,
//! each computing its matmuls on its own thread, instead of one after another with every matmul
//! split across the intra-op pool.
//!
//! Why: a decode expert is a few small matmuls (e.g. 2 MB of int4 weights, ~0.2 ms). Split across
//! the pool, each of them wakes the pool's sleeping threads and waits for the slowest, so a second
//! thread gained ~1.4× where the bandwidth allowed ~1.8×. Side by side, the threads meet once per
//! layer. The outputs are summed afterwards in expert order, as the one-at-a-time loop sums them:
//! the logits are the same floats either way.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use super::graph::Graph;
use super::kv::Scratch;
use super::{Engine, EngineError, experts};
use crate::qmatmul;

/// Steps of up to this many tokens run their experts side by side; longer ones (prompts) give
/// each expert enough rows for its matmuls to split well across the pool.
pub(crate) const MAX_TOKENS: usize = 16;

/// How many threads run the `chosen` experts of a step of `tokens` tokens side by side on a pool
/// of `pool` threads; 1: one after another, as before.
pub(crate) fn threads(enabled: bool, pool: usize, tokens: usize, chosen: usize) -> usize {
    if !enabled || tokens > MAX_TOKENS {
        return 1;
    }
    pool.min(chosen).max(1)
}

/// The engine's kept helper threads (the pool's size less the caller's), started on first use;
/// None (threads created per step instead) if they could not be started.
fn helpers(engine: &Engine) -> Option<&rayon_core::ThreadPool> {
    engine
        .helpers
        .get_or_init(|| {
            let n = engine.intra_threads().saturating_sub(1).max(1);
            rayon_core::ThreadPoolBuilder::new()
                .num_threads(n)
                .thread_name(|i| format!("moed-experts-{i}"))
                .build()
                .map_err(|e| log::warn!("no helper threads for side-by-side experts: {e}"))
                .ok()
        })
        .as_ref()
}

/// One routed expert of the step: its session, its rows, where its input and output rows are.
struct Job {
    expert: usize,
    graph: Arc<Graph>,
    rows: usize,
    /// Offset of its gathered input rows in `Scratch::gather`; `None`: every token chose it, the
    /// input is `Scratch::ffn_in` itself.
    input: Option<usize>,
    /// Its first output row in `Scratch::y`.
    output: usize,
}

/// Runs every expert of `layer` that the step routed to (`s.assigned`) on up to `threads` threads
/// and adds their weighted outputs to `s.acc`.
pub(super) fn run(
    engine: &Engine,
    layer: usize,
    s: &mut Scratch,
    t: usize,
    threads: usize,
) -> Result<(), EngineError> {
    let h = engine.hidden;
    // Sessions and inputs on this thread first: what is left for the threads is the runs.
    let mut jobs = Vec::with_capacity(engine.top_k);
    let mut rows = 0;
    s.gather.clear();
    for (x, list) in s.assigned.iter().enumerate() {
        if list.is_empty() {
            continue;
        }
        let n = list.len();
        let input = (n != t).then(|| {
            let at = s.gather.len();
            for &(tok, _) in list {
                let r = tok as usize * h;
                s.gather.extend_from_slice(&s.ffn_in[r..r + h]);
            }
            at
        });
        jobs.push(Job {
            expert: x,
            graph: engine.expert(layer, x)?,
            rows: n,
            input,
            output: rows,
        });
        rows += n;
    }
    s.y.resize(rows * h, 0.0);
    let mut outputs = Vec::with_capacity(jobs.len());
    let mut rest = s.y.as_mut_slice();
    for job in &jobs {
        let (mine, tail) = rest.split_at_mut(job.rows * h);
        // Each job's rows are written by the one thread that runs it; the lock only proves that.
        outputs.push(Mutex::new(mine));
        rest = tail;
    }
    let (ffn_in, gather) = (&s.ffn_in, &s.gather);
    let start = Instant::now();
    experts::run_parallel_on(helpers(engine), jobs.len(), threads, |i| {
        let job = &jobs[i];
        let src = match job.input {
            None => &ffn_in[..],
            Some(at) => &gather[at..at + job.rows * h],
        };
        let mut out = outputs[i].lock().unwrap_or_else(PoisonError::into_inner);
        let shape = [job.rows as i64, h as i64];
        let graph = &job.graph;
        qmatmul::on_this_thread(|| {
            graph.run_uncounted(
                &[&*graph.input(&shape, src)?],
                &[&*graph.output(&shape, &mut out)?],
            )
        })
        .map(drop)
    })?;
    drop(outputs);
    // The runs overlap: their wall time together is what the step spent in them.
    let nanos = start.elapsed().as_nanos() as u64;
    let c = &engine.counters;
    let runs = jobs.len() as u64;
    c.ort_nanos.fetch_add(nanos, Relaxed);
    c.ort_runs.fetch_add(runs, Relaxed);
    c.expert_nanos.fetch_add(nanos, Relaxed);
    c.expert_runs.fetch_add(runs, Relaxed);
    for job in &jobs {
        let y = &s.y[job.output * h..(job.output + job.rows) * h];
        add_weighted(&s.assigned[job.expert], y, &mut s.acc, h);
    }
    Ok(())
}

/// Adds each row of `y` (one per `(token, weight)` of `list`, in order) times its weight to that
/// token's row of `acc`.
pub(super) fn add_weighted(list: &[(u32, f32)], y: &[f32], acc: &mut [f32], h: usize) {
    for (&(tok, w), row) in list.iter().zip(y.chunks_exact(h)) {
        let r = tok as usize * h;
        if let Some(dst) = acc.get_mut(r..r + h) {
            for (d, &v) in dst.iter_mut().zip(row) {
                *d += w * v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn side_by_side_only_for_short_steps_with_threads_and_experts_to_share() {
        assert_eq!(threads(true, 2, 1, 8), 2);
        assert_eq!(threads(true, 4, 1, 3), 3, "no more threads than experts");
        assert_eq!(threads(true, 2, MAX_TOKENS, 8), 2);
        assert_eq!(
            threads(true, 2, MAX_TOKENS + 1, 8),
            1,
            "a prompt splits its matmuls"
        );
        assert_eq!(threads(true, 1, 1, 8), 1);
        assert_eq!(threads(false, 2, 1, 8), 1, "turned off");
        assert_eq!(threads(true, 2, 1, 0), 1);
    }

    #[test]
    fn weighted_rows_land_on_their_tokens() {
        let h = 2;
        let mut acc = vec![1.0; 3 * h];
        add_weighted(&[(0, 0.5), (2, 2.0)], &[2.0, 4.0, 1.0, -1.0], &mut acc, h);
        assert_eq!(acc, [2.0, 3.0, 1.0, 1.0, 3.0, -1.0]);
    }
}
