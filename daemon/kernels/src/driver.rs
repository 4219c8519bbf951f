//! `matmul`: checks the call, splits y into tasks of rows of W × tokens, and runs them on a `Parallel`.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::input::{QuantizedInput, TILE_TOKENS};
use crate::matrix::{QMatrix, expect_len};
use crate::{KernelError, Path, checked_len, scalar};

/// How the kernel runs its tasks: the engine implements it over ONNX Runtime's intra-op pool.
pub trait Parallel {
    /// How many tasks may run at once (the kernel splits the work for about this many).
    fn threads(&self) -> usize;
    /// Calls f(0..tasks), each once, in any order and on any threads, and returns when all are done.
    fn run(&self, tasks: usize, f: &(dyn Fn(usize) + Sync));
}

/// Runs tasks in order on the caller's thread.
#[derive(Clone, Copy, Debug, Default)]
pub struct Serial;

impl Parallel for Serial {
    fn threads(&self) -> usize {
        1
    }

    fn run(&self, tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        (0..tasks).for_each(f);
    }
}

/// Rows of W one kernel call handles (and `TILE_TOKENS` tokens).
const TILE: usize = 4;

/// The part of y one kernel call computes: rows row0..row0+rows of W (rows ≤ 4) and tokens
/// tok0..tok0+toks (toks ≤ 4).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tile {
    pub(crate) row0: usize,
    pub(crate) rows: usize,
    pub(crate) tok0: usize,
    pub(crate) toks: usize,
}

/// A kernel's result for a `Tile`, [row][token].
pub(crate) type TileOut = [[f32; TILE_TOKENS]; TILE];
/// Tokens per task (a multiple of `TILE_TOKENS`): their quantized x (≤ 2 × 256 KB at k = 2048) stays in L2 while each
/// weight row is read once for all of them.
const TOKENS_PER_TASK: usize = 128;
/// A task smaller than this many weight bytes costs more to hand out than to compute.
const MIN_TASK_BYTES: usize = 8 << 10;
/// Tasks per thread when N is large, so uneven threads still finish together.
const TASKS_PER_THREAD: usize = 4;

/// y [m, n] = x · Wᵀ. y.len() must be m*n.
pub fn matmul(
    w: &QMatrix,
    x: &QuantizedInput,
    y: &mut [f32],
    par: &dyn Parallel,
) -> Result<(), KernelError> {
    matmul_on(crate::best_path(), w, x, y, par)
}

/// `matmul` on the path named as `path_names` lists it, or None when this CPU has no such path:
/// for benchmarks comparing the paths; the engine calls `matmul`.
pub fn matmul_path(
    path: &str,
    w: &QMatrix,
    x: &QuantizedInput,
    y: &mut [f32],
    par: &dyn Parallel,
) -> Option<Result<(), KernelError>> {
    let p = crate::available_paths()
        .into_iter()
        .find(|p| p.name().unwrap_or("scalar") == path)?;
    Some(matmul_on(p, w, x, y, par))
}

pub(crate) fn matmul_on(
    path: Path,
    w: &QMatrix,
    x: &QuantizedInput,
    y: &mut [f32],
    par: &dyn Parallel,
) -> Result<(), KernelError> {
    for (what, input, weights) in [("k", x.k, w.k), ("block size", x.block, w.block)] {
        if input != weights {
            return Err(KernelError::Mismatch {
                what,
                input,
                weights,
            });
        }
    }
    expect_len("y", checked_len("y", &[x.m, w.n])?, y.len())?;
    if y.is_empty() {
        return Ok(());
    }
    let row_cost = (w.row_bytes + 4 * w.k_blocks + w.zp_row_bytes).max(1);
    let threads = par.threads().max(1);
    let rows_per_task = if threads == 1 {
        w.n
    } else {
        let min_rows = MIN_TASK_BYTES.div_ceil(row_cost);
        w.n.div_ceil(threads.saturating_mul(TASKS_PER_THREAD))
            .max(min_rows)
            .div_ceil(TILE)
            * TILE
    };
    let row_tasks = w.n.div_ceil(rows_per_task);
    let tok_tasks = x.m.div_ceil(TOKENS_PER_TASK);
    // Tasks may run at once and a `Parallel` is free to misbehave (run one task twice), so y is
    // written through atomics: relaxed stores are plain stores, and no write can race unsoundly.
    // SAFETY: AtomicU32 has the size and alignment of f32 and y is exclusively borrowed for the
    // whole call, so viewing it as atomics for that time aliases nothing else.
    let out: &[AtomicU32] =
        unsafe { std::slice::from_raw_parts(y.as_mut_ptr().cast::<AtomicU32>(), y.len()) };
    let task = |id: usize| {
        let (rt, tt) = (id / tok_tasks, id % tok_tasks);
        let rows = rt * rows_per_task..((rt + 1) * rows_per_task).min(w.n);
        let toks = tt * TOKENS_PER_TASK..((tt + 1) * TOKENS_PER_TASK).min(x.m);
        for row0 in rows.clone().step_by(TILE) {
            let nr = TILE.min(rows.end - row0);
            for tok0 in toks.clone().step_by(TILE_TOKENS) {
                let nt = TILE_TOKENS.min(toks.end - tok0);
                let spec = Tile {
                    row0,
                    rows: nr,
                    tok0,
                    toks: nt,
                };
                let tile = match path {
                    Path::Scalar => scalar::tile(w, x, spec),
                    #[cfg(target_arch = "x86_64")]
                    Path::Avx2 => crate::avx2::tile(w, x, spec),
                    #[cfg(target_arch = "x86_64")]
                    Path::Avx512Vnni => crate::avx512::tile(w, x, spec),
                };
                for (r, tile_r) in tile.iter().enumerate().take(nr) {
                    for (t, v) in tile_r.iter().enumerate().take(nt) {
                        if let Some(o) = out.get((tok0 + t) * w.n + row0 + r) {
                            o.store(v.to_bits(), Ordering::Relaxed);
                        }
                    }
                }
            }
        }
    };
    let tasks = row_tasks * tok_tasks;
    par.run(tasks, &|id| {
        if id < tasks {
            task(id)
        }
    });
    Ok(())
}
