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

impl Tile {
    /// Whether the tile's rows and tokens exist in w and x, with x tiled as the fast kernels read
    /// it and quantized for w's blocks: all the fast kernels' raw pointers rely on.
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn fits(&self, w: &QMatrix, x: &QuantizedInput) -> bool {
        self.rows <= TILE
            && self.row0 + self.rows <= w.n
            && self.tok0 < x.m
            && self.tok0.is_multiple_of(TILE_TOKENS)
            && self.toks == TILE_TOKENS.min(x.m - self.tok0)
            && x.block == w.block
            && x.k_blocks == w.k_blocks
    }
}

/// Calls `$f::<BITS, ROWS>(w, x, t)` with the tile's bits and rows as constants.
#[cfg(target_arch = "x86_64")]
macro_rules! by_bits_and_rows {
    ($f:ident, $w:expr, $x:expr, $t:expr) => {
        match ($w.bits, $t.rows) {
            (4, 1) => $f::<4, 1>($w, $x, $t),
            (4, 2) => $f::<4, 2>($w, $x, $t),
            (4, 3) => $f::<4, 3>($w, $x, $t),
            (4, _) => $f::<4, 4>($w, $x, $t),
            (_, 1) => $f::<8, 1>($w, $x, $t),
            (_, 2) => $f::<8, 2>($w, $x, $t),
            (_, 3) => $f::<8, 3>($w, $x, $t),
            (_, _) => $f::<8, 4>($w, $x, $t),
        }
    };
}
#[cfg(target_arch = "x86_64")]
pub(crate) use by_bits_and_rows;

/// Calls `$kernel::<BITS, ROWS, TOKENS>(args…)` with the tile's tokens as a constant.
#[cfg(target_arch = "x86_64")]
macro_rules! by_tokens {
    ($kernel:ident, $b:ident, $r:ident, $t:expr; $($arg:expr),*) => {
        match $t.toks {
            1 => $kernel::<$b, $r, 1>($($arg),*),
            2 => $kernel::<$b, $r, 2>($($arg),*),
            3 => $kernel::<$b, $r, 3>($($arg),*),
            _ => $kernel::<$b, $r, 4>($($arg),*),
        }
    };
}
#[cfg(target_arch = "x86_64")]
pub(crate) use by_tokens;

/// A kernel's result for a `Tile`, [row][token].
pub(crate) type TileOut = [[f32; TILE_TOKENS]; TILE];
/// Tokens per task (a multiple of `TILE_TOKENS`): their quantized x (≤ 2 × 256 KB at k = 2048) stays in L2 while each
/// weight row is read once for all of them.
pub(crate) const TOKENS_PER_TASK: usize = 128;
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

/// Checks a call's x against the weights' k, block size and rows, and y's length (m × n).
pub(crate) fn check_call(
    x: &QuantizedInput,
    k: usize,
    block: usize,
    n: usize,
    y_len: usize,
) -> Result<(), KernelError> {
    for (what, input, weights) in [("k", x.k, k), ("block size", x.block, block)] {
        if input != weights {
            return Err(KernelError::Mismatch {
                what,
                input,
                weights,
            });
        }
    }
    expect_len("y", checked_len("y", &[x.m, n])?, y_len)
}

/// y viewed as atomics for the length of the borrow. Tasks may run at once and a `Parallel` is
/// free to misbehave (run one task twice), so y is written through atomics: relaxed stores are
/// plain stores, and no write can race unsoundly.
pub(crate) fn as_atomics(y: &mut [f32]) -> &[AtomicU32] {
    // SAFETY: AtomicU32 has the size and alignment of f32 and y is exclusively borrowed for as
    // long as the view lives, so it aliases nothing else.
    unsafe { std::slice::from_raw_parts(y.as_mut_ptr().cast::<AtomicU32>(), y.len()) }
}

/// How many of `units` (rows or row groups of `unit_bytes` each) one task takes on `threads`:
/// all of them on one thread; else about `TASKS_PER_THREAD` tasks a thread, none under
/// `MIN_TASK_BYTES`.
pub(crate) fn units_per_task(units: usize, unit_bytes: usize, threads: usize) -> usize {
    if threads <= 1 {
        return units.max(1);
    }
    units
        .div_ceil(threads.saturating_mul(TASKS_PER_THREAD))
        .max(MIN_TASK_BYTES.div_ceil(unit_bytes.max(1)))
}

/// Task `id`'s units (rows or row groups, `per_task` of `units`) and tokens (`TOKENS_PER_TASK` of
/// `m`), tasks numbered units-major over `tok_tasks` token ranges.
pub(crate) fn task_ranges(
    id: usize,
    tok_tasks: usize,
    per_task: usize,
    units: usize,
    m: usize,
) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
    let (ut, tt) = (id / tok_tasks, id % tok_tasks);
    (
        ut * per_task..((ut + 1) * per_task).min(units),
        tt * TOKENS_PER_TASK..((tt + 1) * TOKENS_PER_TASK).min(m),
    )
}

pub(crate) fn matmul_on(
    path: Path,
    w: &QMatrix,
    x: &QuantizedInput,
    y: &mut [f32],
    par: &dyn Parallel,
) -> Result<(), KernelError> {
    check_call(x, w.k, w.block, w.n, y.len())?;
    if y.is_empty() {
        return Ok(());
    }
    let row_cost = (w.row_bytes + 4 * w.k_blocks + w.zp_row_bytes).max(1);
    let rows_per_task = units_per_task(w.n, row_cost, par.threads()).div_ceil(TILE) * TILE;
    let row_tasks = w.n.div_ceil(rows_per_task);
    let tok_tasks = x.m.div_ceil(TOKENS_PER_TASK);
    let out = as_atomics(y);
    let task = |id: usize| {
        let (rows, toks) = task_ranges(id, tok_tasks, rows_per_task, w.n, x.m);
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
