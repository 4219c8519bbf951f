//! `QuantizedInput`: activations quantized to int8 per block, in the orders the kernels read.

use crate::matrix::expect_len;
use crate::{KernelError, check_block, checked_len};

/// Elements of x one 64-byte load of 4-bit codes covers; x rows are padded to a multiple of it.
pub(crate) const GROUP4: usize = 128;
/// Elements of x one 64-byte load of 8-bit codes covers.
pub(crate) const GROUP8: usize = 64;
/// 32-bit lanes of a 64-byte load: each gets its block's scale.
pub(crate) const LANES: usize = 16;
/// Blocks the zero-point correction handles per vector.
pub(crate) const ZP_LANES: usize = 16;
/// Tokens the kernels take together; the tiled arrays interleave them group by group.
pub(crate) const TILE_TOKENS: usize = 4;

/// x [m, k] quantized to int8 per block of the weights' block size: q = round(x / d) with
/// d = max|x| / 127 per block. Kept for reuse across calls so no call allocates once it has grown.
///
/// The tiled arrays hold tokens in tiles of `TILE_TOKENS` (the last tile may be smaller, nt
/// tokens): for each group of one 64-byte code load, the tile's nt tokens follow each other, so a
/// kernel reads a whole tile from one pointer.
#[derive(Clone, Debug, Default)]
pub struct QuantizedInput {
    pub(crate) m: usize,
    pub(crate) k: usize,
    pub(crate) block: usize,
    pub(crate) k_blocks: usize,
    /// Elements per token: k_blocks*block rounded up to `GROUP4`, zero-padded.
    pub(crate) row_len: usize,
    /// Blocks per token in `scale` and `scaled_sum`: k_blocks rounded up to `ZP_LANES`, zero-padded.
    pub(crate) row_blocks: usize,
    /// q in element order, token after token (the reference kernel's input).
    pub(crate) natural: Vec<i8>,
    /// Tiled, per group of 128 elements its 64 even then its 64 odd ones: a 64-byte load of 4-bit
    /// codes holds the even elements in its low nibbles and the odd ones in its high nibbles.
    pub(crate) tiled4: Vec<i8>,
    /// Tiled, per group of 64 elements in order (8-bit codes pair with them byte for byte).
    pub(crate) tiled8: Vec<i8>,
    /// Tiled, d per 32-bit lane of a 64-byte code load (4 code bytes: 8 elements at 4 bits, 4 at
    /// 8 bits), so the kernels scale a load's lane sums with one multiply and no shuffle.
    pub(crate) lanes4: Vec<f32>,
    pub(crate) lanes8: Vec<f32>,
    /// d per block.
    pub(crate) scale: Vec<f32>,
    /// d × Σq per block: what a zero point multiplies.
    pub(crate) scaled_sum: Vec<f32>,
    scratch: Scratch,
}

/// One token's split row and lane scales before they are tiled.
#[derive(Clone, Debug, Default)]
struct Scratch {
    split: Vec<i8>,
    lanes4: Vec<f32>,
    lanes8: Vec<f32>,
}

/// Where one token's quantization goes: its rows of the per-token arrays, and the scratch rows.
struct TokenOut<'a> {
    q: &'a mut [i8],
    d: &'a mut [f32],
    ds: &'a mut [f32],
    split: &'a mut [i8],
    lanes4: &'a mut [f32],
    lanes8: &'a mut [f32],
}

/// Quantizes one token, compiled for AVX-512 so its loops vectorize to 512 bits.
///
/// # Safety
/// The CPU has the enabled features.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn token_avx512(xrow: &[f32], block: usize, out: TokenOut) {
    // SAFETY: this function runs only where the CPU has the features `quantize_block` needs.
    token(xrow, block, out, |xb, q| unsafe {
        crate::avx512::quantize_block(xb, q)
    })
}

/// Quantizes one token, compiled for AVX2 so its loops vectorize to 256 bits.
///
/// # Safety
/// The CPU has the enabled features.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn token_avx2(xrow: &[f32], block: usize, out: TokenOut) {
    token(xrow, block, out, quantize_block)
}

/// Quantizes one token: q, d and d·Σq per block, the even/odd split and the lane scales.
#[inline(always)]
fn token(xrow: &[f32], block: usize, o: TokenOut, quant: impl Fn(&[f32], &mut [i8]) -> (f32, i32)) {
    for (b, xb) in xrow.chunks(block).enumerate() {
        let (d, sum) = quant(xb, &mut o.q[b * block..(b + 1) * block]);
        o.d[b] = d;
        o.ds[b] = d * sum as f32;
    }
    for (sg, qg) in o
        .split
        .chunks_exact_mut(GROUP4)
        .zip(o.q.chunks_exact(GROUP4))
    {
        let (even, odd) = sg.split_at_mut(GROUP4 / 2);
        for ((e, od), pair) in even.iter_mut().zip(odd).zip(qg.chunks_exact(2)) {
            *e = pair[0];
            *od = pair[1];
        }
    }
    let shift = block.trailing_zeros();
    for (elems, lanes) in [(8, o.lanes4), (4, o.lanes8)] {
        for (j, l) in lanes.iter_mut().enumerate() {
            // Lanes past the last block read the zero padding of d, or get 0.
            *l = o.d.get((j * elems) >> shift).copied().unwrap_or(0.0);
        }
    }
}

/// max |x| of a block, as sixteen running maxima halved at the end: one chain of dependent max
/// operations neither vectorizes nor overlaps, and was most of the quantization's time.
#[inline(always)]
fn abs_max(xb: &[f32]) -> f32 {
    let max = |a: f32, b: f32| if b > a { b } else { a };
    let mut lanes = [0f32; 16];
    for c in xb.chunks(16) {
        for (l, v) in lanes.iter_mut().zip(c) {
            *l = max(*l, v.abs());
        }
    }
    let mut width = lanes.len() / 2;
    while width > 0 {
        for i in 0..width {
            lanes[i] = max(lanes[i], lanes[i + width]);
        }
        width /= 2;
    }
    lanes[0]
}

/// Quantizes one block xb into q (q.len() ≥ xb.len()); returns d and Σq.
#[inline(always)]
pub(crate) fn quantize_block(xb: &[f32], q: &mut [i8]) -> (f32, i32) {
    let d = abs_max(xb) / 127.0;
    let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
    let mut sum = 0i32;
    for (qi, &v) in q.iter_mut().zip(xb) {
        *qi = round_small(v * inv);
        sum += i32::from(*qi);
    }
    (d, sum)
}

/// round(r) for |r| ≤ 127 (ties to even), as the FPU does it: adding 1.5 × 2^23 leaves the
/// rounded integer in the low mantissa bits. Plain arithmetic, so the loop vectorizes (a float to
/// int `as` does not); a non-finite x gives a wrong but defined y.
fn round_small(r: f32) -> i8 {
    const MAGIC: f32 = 12_582_912.0;
    ((r + MAGIC).to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32) as i8
}

/// Copies `src` (one token's row, in units) into its place in a tiled array.
fn scatter<T: Copy>(
    dst: &mut [T],
    src: &[T],
    unit: usize,
    tile_start: usize,
    nt: usize,
    pos: usize,
) {
    for (g, chunk) in src.chunks_exact(unit).enumerate() {
        let at = tile_start + (g * nt + pos) * unit;
        dst[at..at + unit].copy_from_slice(chunk);
    }
}

impl QuantizedInput {
    /// Quantizes x [m, k] per block of `block` elements (the weights' block size).
    pub fn quantize(
        &mut self,
        x: &[f32],
        m: usize,
        k: usize,
        block: usize,
    ) -> Result<(), KernelError> {
        check_block(block)?;
        expect_len("x", checked_len("x", &[m, k])?, x.len())?;
        let k_blocks = k.div_ceil(block);
        let row_len = checked_len("x", &[k_blocks, block])?
            .checked_next_multiple_of(GROUP4)
            .ok_or(KernelError::TooLarge { what: "x" })?;
        let row_blocks = k_blocks.div_ceil(ZP_LANES) * ZP_LANES;
        let total = checked_len("x", &[m, row_len])?;
        self.m = m;
        self.k = k;
        self.block = block;
        self.k_blocks = k_blocks;
        self.row_len = row_len;
        self.row_blocks = row_blocks;
        for v in [&mut self.natural, &mut self.tiled4, &mut self.tiled8] {
            v.clear();
            v.resize(total, 0);
        }
        for (v, len) in [
            (&mut self.lanes4, total / (GROUP4 / LANES)),
            (&mut self.lanes8, total / (GROUP8 / LANES)),
            (&mut self.scale, m * row_blocks),
            (&mut self.scaled_sum, m * row_blocks),
        ] {
            v.clear();
            v.resize(len, 0.0);
        }
        if total == 0 {
            return Ok(());
        }
        let Scratch {
            split,
            lanes4,
            lanes8,
        } = &mut self.scratch;
        split.resize(row_len, 0);
        lanes4.resize(row_len / (GROUP4 / LANES), 0.0);
        lanes8.resize(row_len / (GROUP8 / LANES), 0.0);
        let wide = crate::best_path();
        for (t, xrow) in x.chunks_exact(k).enumerate() {
            let out = TokenOut {
                q: &mut self.natural[t * row_len..(t + 1) * row_len],
                d: &mut self.scale[t * row_blocks..(t + 1) * row_blocks],
                ds: &mut self.scaled_sum[t * row_blocks..(t + 1) * row_blocks],
                split,
                lanes4,
                lanes8,
            };
            #[cfg(target_arch = "x86_64")]
            match wide {
                // SAFETY: a fast path is chosen only where the CPU has its features.
                crate::Path::Avx512Vnni => unsafe { token_avx512(xrow, block, out) },
                crate::Path::Avx2 => unsafe { token_avx2(xrow, block, out) },
                crate::Path::Scalar => token(xrow, block, out, quantize_block),
            }
            #[cfg(not(target_arch = "x86_64"))]
            {
                let _ = wide;
                token(xrow, block, out, quantize_block)
            }
            let tile_start = t / TILE_TOKENS * TILE_TOKENS;
            let (nt, pos) = (TILE_TOKENS.min(m - tile_start), t - tile_start);
            let q = &self.natural[t * row_len..(t + 1) * row_len];
            let start = tile_start * row_len;
            scatter(&mut self.tiled4, split, GROUP4, start, nt, pos);
            scatter(&mut self.tiled8, q, GROUP8, start, nt, pos);
            scatter(
                &mut self.lanes4,
                lanes4,
                LANES,
                start / (GROUP4 / LANES),
                nt,
                pos,
            );
            scatter(
                &mut self.lanes8,
                lanes8,
                LANES,
                start / (GROUP8 / LANES),
                nt,
                pos,
            );
        }
        Ok(())
    }

    /// Rows of x (tokens).
    pub fn m(&self) -> usize {
        self.m
    }

    /// For `bits`-bit codes, where the tile of tokens from `tok0` (a multiple of `TILE_TOKENS`,
    /// < m) starts in the tiled x and in its lane scales, and how many x elements one group of a
    /// token holds (the tile's tokens follow each other group by group).
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn tile_start(&self, bits: u32, tok0: usize) -> (*const i8, *const f32, usize) {
        let (xq, lanes, unit) = if bits == 4 {
            (&self.tiled4, &self.lanes4, GROUP4)
        } else {
            (&self.tiled8, &self.lanes8, GROUP8)
        };
        let lanes_per_token = self.row_len / (unit / LANES);
        // wrapping_add: the pointers are only computed here; the kernels read inside the slices.
        (
            xq.as_ptr().wrapping_add(tok0 * self.row_len),
            lanes.as_ptr().wrapping_add(tok0 * lanes_per_token),
            unit,
        )
    }

    pub(crate) fn q(&self, t: usize) -> &[i8] {
        &self.natural[t * self.row_len..(t + 1) * self.row_len]
    }
}
