//! Grouped-query attention of one sequence over a head-major KV cache, read in place: each task
//! streams one KV head's cached keys and values once for all the query heads that share it, with
//! the softmax computed online (running maximum and sum), so nothing the size of the cache is
//! written. The cache holds f32 or f16 values ([`KvElem`]); the arithmetic is f32 either way.

use std::sync::atomic::{AtomicU32, Ordering};

use half::f16;

use crate::matrix::expect_len;
use crate::{KernelError, Parallel, checked_len};

/// Keys scored together before their probabilities are folded into the running sums.
const BLOCK: usize = 32;
/// How many rows past the next block the cache is prefetched (0: the next block itself, which
/// measured best; two blocks ahead was no better).
const AHEAD: usize = 0;

/// The sizes of one attention call.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionShape {
    /// Query heads; a multiple of `kv_heads` (query head `h` reads KV head `h / (heads / kv_heads)`).
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// New tokens (the queries, and the new key/value rows they also attend to, causally).
    pub tokens: usize,
    /// Valid rows at the start of each cached head.
    pub past: usize,
    /// Rows each cached head holds (`past` valid ones, then spare capacity that is not read).
    pub capacity: usize,
    /// What scores are multiplied by before the softmax.
    pub scale: f32,
}

impl AttentionShape {
    fn check(
        &self,
        q: usize,
        new: [usize; 2],
        cache: [usize; 2],
        out: usize,
    ) -> Result<(), KernelError> {
        let s = self;
        if s.kv_heads == 0 || !s.heads.is_multiple_of(s.kv_heads) {
            return Err(KernelError::Mismatch {
                what: "query heads per KV head",
                input: s.heads,
                weights: s.kv_heads,
            });
        }
        if s.past > s.capacity {
            return Err(KernelError::Mismatch {
                what: "cached rows",
                input: s.past,
                weights: s.capacity,
            });
        }
        let q_len = checked_len("query", &[s.tokens, s.heads, s.head_dim])?;
        let new_len = checked_len("new keys", &[s.tokens, s.kv_heads, s.head_dim])?;
        let cache_len = checked_len("cache", &[s.kv_heads, s.capacity, s.head_dim])?;
        expect_len("query", q_len, q)?;
        expect_len("new keys", new_len, new[0])?;
        expect_len("new values", new_len, new[1])?;
        expect_len("cached keys", cache_len, cache[0])?;
        expect_len("cached values", cache_len, cache[1])?;
        expect_len("output", q_len, out)
    }
}

/// What a KV cache holds: f32, or f16 (half the bytes to stream per token, widened as read).
pub trait KvElem: Copy + Send + Sync + 'static + sealed::Sealed {
    const ZERO: Self;

    fn to_f32(self) -> f32;

    /// Round to nearest even for f16, as ONNX's Cast to float16 does: rows the engine stores
    /// then equal those the attention graph attends to.
    fn from_f32(v: f32) -> Self;

    /// [`crate::attention_avx2`]'s score loop for this element.
    ///
    /// # Safety
    /// As the loop's: AVX2, FMA and F16C, and the lengths it states.
    #[cfg(target_arch = "x86_64")]
    #[doc(hidden)]
    unsafe fn scores_avx2(q: &[f32], d: usize, keys: &[&[Self]], scores: &mut [f32]);

    /// [`crate::attention_avx2`]'s context loop for this element.
    ///
    /// # Safety
    /// As the loop's: AVX2, FMA and F16C, and the lengths it states.
    #[cfg(target_arch = "x86_64")]
    #[doc(hidden)]
    unsafe fn context_avx2(acc: &mut [f32], d: usize, p: &[f32], rows: &[&[Self]]);
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for half::f16 {}
}

impl KvElem for f32 {
    const ZERO: f32 = 0.0;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn from_f32(v: f32) -> f32 {
        v
    }
    #[cfg(target_arch = "x86_64")]
    unsafe fn scores_avx2(q: &[f32], d: usize, keys: &[&[f32]], scores: &mut [f32]) {
        // SAFETY: passed on from the caller.
        unsafe { crate::attention_avx2::block_scores_f32(q, d, keys, scores, BLOCK) }
    }
    #[cfg(target_arch = "x86_64")]
    unsafe fn context_avx2(acc: &mut [f32], d: usize, p: &[f32], rows: &[&[f32]]) {
        // SAFETY: passed on from the caller.
        unsafe { crate::attention_avx2::block_context_f32(acc, d, p, rows, BLOCK) }
    }
}

impl KvElem for f16 {
    const ZERO: f16 = f16::ZERO;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(v: f32) -> f16 {
        f16::from_f32(v)
    }
    #[cfg(target_arch = "x86_64")]
    unsafe fn scores_avx2(q: &[f32], d: usize, keys: &[&[f16]], scores: &mut [f32]) {
        // SAFETY: passed on from the caller.
        unsafe { crate::attention_avx2::block_scores_f16(q, d, keys, scores, BLOCK) }
    }
    #[cfg(target_arch = "x86_64")]
    unsafe fn context_avx2(acc: &mut [f32], d: usize, p: &[f32], rows: &[&[f16]]) {
        // SAFETY: passed on from the caller.
        unsafe { crate::attention_avx2::block_context_f16(acc, d, p, rows, BLOCK) }
    }
}

/// The inputs of one call: `q` [tokens, heads, head_dim]; `k_new`, `v_new` [tokens, kv_heads,
/// head_dim]; `past_k`, `past_v` [kv_heads, capacity, head_dim]. The new rows have the cache's
/// element type: they are what the cache will hold, so a token sees the same values now as later.
pub struct AttentionInput<'a, E: KvElem = f32> {
    pub q: &'a [f32],
    pub k_new: &'a [E],
    pub v_new: &'a [E],
    pub past_k: &'a [E],
    pub past_v: &'a [E],
}

/// `out` [tokens, heads, head_dim]: for query token `t`, softmax(scale * q . K^T) . V over the
/// `past` cached rows and the new rows `0..=t`.
pub fn attention<E: KvElem>(
    s: &AttentionShape,
    x: &AttentionInput<'_, E>,
    out: &mut [f32],
    par: &dyn Parallel,
) -> Result<(), KernelError> {
    s.check(
        x.q.len(),
        [x.k_new.len(), x.v_new.len()],
        [x.past_k.len(), x.past_v.len()],
        out.len(),
    )?;
    if out.is_empty() {
        return Ok(());
    }
    let fma = fma_available();
    // SAFETY: AtomicU32 has the size and alignment of f32 and `out` is exclusively borrowed for
    // the whole call; tasks write disjoint rows, and a `Parallel` that runs a task twice only
    // stores the same values again.
    let shared: &[AtomicU32] =
        unsafe { std::slice::from_raw_parts(out.as_mut_ptr().cast::<AtomicU32>(), out.len()) };
    let tasks = s.tokens * s.kv_heads;
    par.run(tasks, &|id| {
        if id >= tasks {
            return;
        }
        let (t, j) = (id / s.kv_heads, id % s.kv_heads);
        let rows = head_group(s, x, t, j, fma);
        let groups = s.heads / s.kv_heads;
        let base = (t * s.heads + j * groups) * s.head_dim;
        for (o, v) in shared[base..base + rows.len()].iter().zip(&rows) {
            o.store(v.to_bits(), Ordering::Relaxed);
        }
    });
    Ok(())
}

fn fma_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static FMA: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *FMA.get_or_init(|| {
            is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The context rows of the query heads of KV head `j` for token `t`, [groups * head_dim].
fn head_group<E: KvElem>(
    s: &AttentionShape,
    x: &AttentionInput<'_, E>,
    t: usize,
    j: usize,
    fma: bool,
) -> Vec<f32> {
    #[cfg(target_arch = "x86_64")]
    if fma {
        // SAFETY: the CPU has AVX2, FMA and F16C (checked by `fma_available`).
        return unsafe { head_group_avx2(s, x, t, j) };
    }
    let _ = fma;
    head_group_body::<Plain, E>(s, x, t, j)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn head_group_avx2<E: KvElem>(
    s: &AttentionShape,
    x: &AttentionInput<'_, E>,
    t: usize,
    j: usize,
) -> Vec<f32> {
    head_group_body::<Fused, E>(s, x, t, j)
}

/// How `a * b + c` is computed: fused where the code is compiled for FMA, plain elsewhere (a
/// fused multiply-add without the instruction is a slow library call).
trait MulAdd: Sized {
    fn mul_add(a: f32, b: f32, c: f32) -> f32;

    /// acc_g += sum_b p[g * BLOCK + b] * rows[b] for every row g of `acc` ([groups, d]).
    fn block_context<E: KvElem>(acc: &mut [f32], d: usize, p: &[f32], rows: &[&[E]]) {
        portable_context::<Self, E>(acc, d, p, rows);
    }

    /// A hint that `rows` will be read soon.
    fn prefetch<E>(_rows: &[E]) {}

    /// scores[g * BLOCK + b] = q_g . keys[b] for every query row g of `q` ([groups, d]).
    fn block_scores<E: KvElem>(q: &[f32], d: usize, keys: &[&[E]], scores: &mut [f32]) {
        portable_scores::<Self, E>(q, d, keys, scores);
    }
}
struct Plain;
// Only x86-64 has a path compiled for FMA.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
struct Fused;
impl MulAdd for Plain {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
}
impl MulAdd for Fused {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }

    fn prefetch<E>(rows: &[E]) {
        #[cfg(target_arch = "x86_64")]
        crate::attention_avx2::prefetch(rows);
        #[cfg(not(target_arch = "x86_64"))]
        let _ = rows;
    }

    fn block_context<E: KvElem>(acc: &mut [f32], d: usize, p: &[f32], rows: &[&[E]]) {
        #[cfg(target_arch = "x86_64")]
        if d > 0
            && d.is_multiple_of(32)
            && rows.iter().all(|r| r.len() == d)
            && p.len() >= acc.len() / d * BLOCK
        {
            // SAFETY: as in `block_scores`; rows are `d` long, `p` holds every group's stride.
            unsafe { E::context_avx2(acc, d, p, rows) };
            return;
        }
        portable_context::<Self, E>(acc, d, p, rows);
    }

    fn block_scores<E: KvElem>(q: &[f32], d: usize, keys: &[&[E]], scores: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if d > 0 && d.is_multiple_of(8) && keys.iter().all(|k| k.len() == d) {
            // SAFETY: `Fused` only runs inside `head_group_avx2`, on a CPU with AVX2, FMA and
            // F16C; every row read is `d` values long (checked here and by the chunking of `q`).
            unsafe { E::scores_avx2(q, d, keys, scores) };
            return;
        }
        portable_scores::<Self, E>(q, d, keys, scores);
    }
}

/// Online softmax over every key row the token sees, in blocks of [`BLOCK`] rows.
#[inline(always)]
fn head_group_body<M: MulAdd, E: KvElem>(
    s: &AttentionShape,
    x: &AttentionInput<'_, E>,
    t: usize,
    j: usize,
) -> Vec<f32> {
    let (d, groups) = (s.head_dim, s.heads / s.kv_heads);
    let q0 = (t * s.heads + j * groups) * d;
    let q: Vec<f32> = x.q[q0..q0 + groups * d]
        .iter()
        .map(|v| v * s.scale)
        .collect();
    let mut acc = vec![0.0f32; groups * d];
    let mut max = vec![f32::MIN; groups];
    let mut sum = vec![0.0f32; groups];
    let mut scores = vec![0.0f32; groups * BLOCK];
    let past_k = &x.past_k[j * s.capacity * d..][..s.past * d];
    let past_v = &x.past_v[j * s.capacity * d..][..s.past * d];
    let seen = s.past + t + 1;
    let mut start = 0;
    while start < seen {
        let n = BLOCK.min(seen - start);
        let key = |r: usize| {
            if r < s.past {
                &past_k[r * d..][..d]
            } else {
                &x.k_new[((r - s.past) * s.kv_heads + j) * d..][..d]
            }
        };
        let value = |r: usize| {
            if r < s.past {
                &past_v[r * d..][..d]
            } else {
                &x.v_new[((r - s.past) * s.kv_heads + j) * d..][..d]
            }
        };
        let mut keys: [&[E]; BLOCK] = [&[]; BLOCK];
        for (b, row) in keys.iter_mut().enumerate().take(n) {
            *row = key(start + b);
        }
        // The cache streams from memory: ask for the next block's keys and values while this
        // one is computed, so the loads do not wait on memory latency.
        let (next, end) = (
            (start + n + AHEAD).min(s.past),
            (start + n + AHEAD + BLOCK).min(s.past),
        );
        M::prefetch(&past_k[next * d..end * d]);
        M::prefetch(&past_v[next * d..end * d]);
        M::block_scores(&q, d, &keys[..n], &mut scores);
        for g in 0..groups {
            let row = &mut scores[g * BLOCK..][..n];
            let block_max = lanes(row, f32::MIN, f32::max);
            let new_max = max[g].max(block_max);
            let rescale = exp(max[g] - new_max);
            max[g] = new_max;
            for v in row.iter_mut() {
                *v = exp(*v - new_max);
            }
            sum[g] = sum[g] * rescale + lanes(row, 0.0, |a, b| a + b);
            if rescale != 1.0 {
                acc[g * d..][..d].iter_mut().for_each(|a| *a *= rescale);
            }
        }
        let mut rows: [&[E]; BLOCK] = [&[]; BLOCK];
        for (b, row) in rows.iter_mut().enumerate().take(n) {
            *row = value(start + b);
        }
        M::block_context(&mut acc, d, &scores, &rows[..n]);
        start += n;
    }
    for g in 0..groups {
        // The row's own key is always seen, so the sum is at least exp(0) = 1 unless the inputs
        // were not finite; those give NaN, as the exact formula would.
        let inv = 1.0 / sum[g];
        acc[g * d..][..d].iter_mut().for_each(|a| *a *= inv);
    }
    acc
}

/// [`MulAdd::block_scores`] without intrinsics.
#[inline(always)]
fn portable_scores<M: MulAdd, E: KvElem>(q: &[f32], d: usize, keys: &[&[E]], scores: &mut [f32]) {
    for (b, k) in keys.iter().enumerate() {
        for (g, qg) in q.chunks_exact(d.max(1)).enumerate() {
            scores[g * BLOCK + b] = dot::<M, E>(qg, k);
        }
    }
}

/// [`MulAdd::block_context`] without intrinsics.
#[inline(always)]
fn portable_context<M: MulAdd, E: KvElem>(acc: &mut [f32], d: usize, p: &[f32], rows: &[&[E]]) {
    for (g, acc_g) in acc.chunks_exact_mut(d.max(1)).enumerate() {
        accumulate::<M, E>(acc_g, &p[g * BLOCK..][..rows.len()], rows);
    }
}

/// acc += sum_b p[b] * rows[b], a slice of `ACC` floats at a time held in registers across the
/// block's rows (rather than loading and storing `acc` once per row).
#[inline(always)]
fn accumulate<M: MulAdd, E: KvElem>(acc: &mut [f32], p: &[f32], rows: &[&[E]]) {
    const ACC: usize = 32;
    let (chunks, _) = acc.as_chunks_mut::<ACC>();
    let full = chunks.len() * ACC;
    for (c, chunk) in chunks.iter_mut().enumerate() {
        let mut a = *chunk;
        for (&pb, row) in p.iter().zip(rows) {
            let Some(v) = row.get(c * ACC..).and_then(|r| r.first_chunk::<ACC>()) else {
                continue;
            };
            for i in 0..ACC {
                a[i] = M::mul_add(pb, v[i].to_f32(), a[i]);
            }
        }
        *chunk = a;
    }
    for (&pb, row) in p.iter().zip(rows) {
        for (a, &v) in acc[full..].iter_mut().zip(row.get(full..).unwrap_or(&[])) {
            *a = M::mul_add(pb, v.to_f32(), *a);
        }
    }
}

/// `row` folded with `f` (associative and commutative) in 8 independent lanes, so the compiler
/// can vectorize it (a sequential fold is one long dependency chain).
#[inline(always)]
fn lanes(row: &[f32], init: f32, f: impl Fn(f32, f32) -> f32) -> f32 {
    let (chunks, tail) = row.as_chunks::<8>();
    let mut l = [init; 8];
    for c in chunks {
        for i in 0..8 {
            l[i] = f(l[i], c[i]);
        }
    }
    let h = [f(l[0], l[4]), f(l[1], l[5]), f(l[2], l[6]), f(l[3], l[7])];
    tail.iter()
        .fold(f(f(h[0], h[2]), f(h[1], h[3])), |a, &b| f(a, b))
}

/// a . b, in 16 independent lanes summed pairwise, so the compiler can vectorize both.
#[inline(always)]
fn dot<M: MulAdd, E: KvElem>(a: &[f32], b: &[E]) -> f32 {
    let mut l = [0.0f32; 16];
    let ((ac, ar), (bc, br)) = (a.as_chunks::<16>(), b.as_chunks::<16>());
    let tail: f32 = ar.iter().zip(br).map(|(x, y)| x * y.to_f32()).sum();
    for (x, y) in ac.iter().zip(bc) {
        for i in 0..16 {
            l[i] = M::mul_add(x[i], y[i].to_f32(), l[i]);
        }
    }
    let mut h = [0.0f32; 8];
    for i in 0..8 {
        h[i] = l[i] + l[i + 8];
    }
    let q = [h[0] + h[4], h[1] + h[5], h[2] + h[6], h[3] + h[7]];
    (q[0] + q[2]) + (q[1] + q[3]) + tail
}

/// e^x for x <= 0 (what the online softmax needs), to about 2 ulp; below -87 it is 0-ish (the
/// smallest normal power of two), which no probability that matters is.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.0, 0.0);
    let n = (x * LOG2E + 0.5).floor();
    let r = x - n * LN2_HI - n * LN2_LO;
    // n (an integer from -126 to 0) in the low mantissa bits of 1.5 * 2^23 + n, so 2^n is built
    // with integer operations that vectorize (a float-to-int cast does not).
    const MAGIC: f32 = 12_582_912.0;
    let n_bits = (n + MAGIC).to_bits().wrapping_sub(MAGIC.to_bits());
    let p = 1.987_569_1e-4f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 0.166_666_66;
    let p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    f32::from_bits(n_bits.wrapping_add(127) << 23) * e
}
