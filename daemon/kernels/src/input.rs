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
    /// One token's split row and lane scales before they are tiled.
    split: Vec<i8>,
    lanes: Vec<f32>,
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
        let row_len = checked_len("x", &[k_blocks, block])?.div_ceil(GROUP4) * GROUP4;
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
        if k == 0 {
            return Ok(());
        }
        let (split, lanes) = (&mut self.split, &mut self.lanes);
        split.resize(row_len, 0);
        lanes.resize(row_len / (GROUP8 / LANES), 0.0);
        for (t, xrow) in x.chunks_exact(k).enumerate() {
            let q = &mut self.natural[t * row_len..(t + 1) * row_len];
            let d = &mut self.scale[t * row_blocks..(t + 1) * row_blocks];
            let ds = &mut self.scaled_sum[t * row_blocks..(t + 1) * row_blocks];
            for (b, xb) in xrow.chunks(block).enumerate() {
                let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs()));
                d[b] = amax / 127.0;
                let inv = if d[b] > 0.0 { 1.0 / d[b] } else { 0.0 };
                let mut sum = 0i32;
                for (qi, &v) in q[b * block..].iter_mut().zip(xb) {
                    // Rounds half away from zero without a libm call; `as` truncates and saturates
                    // (NaN becomes 0): a non-finite input gives a wrong but defined y.
                    let r = v * inv;
                    *qi = (r + 0.5f32.copysign(r)) as i8;
                    sum += i32::from(*qi);
                }
                ds[b] = d[b] * sum as f32;
            }
            let tile_start = t / TILE_TOKENS * TILE_TOKENS;
            let (nt, pos) = (TILE_TOKENS.min(m - tile_start), t - tile_start);
            for (sg, qg) in split.chunks_exact_mut(GROUP4).zip(q.chunks_exact(GROUP4)) {
                for i in 0..GROUP4 / 2 {
                    sg[i] = qg[2 * i];
                    sg[GROUP4 / 2 + i] = qg[2 * i + 1];
                }
            }
            scatter(
                &mut self.tiled4,
                split,
                GROUP4,
                tile_start * row_len,
                nt,
                pos,
            );
            scatter(&mut self.tiled8, q, GROUP8, tile_start * row_len, nt, pos);
            let shift = block.trailing_zeros();
            for (elems, dst) in [(8, &mut self.lanes4), (4, &mut self.lanes8)] {
                let per_token = row_len / elems;
                for (j, l) in lanes[..per_token].iter_mut().enumerate() {
                    // Padding lanes past the last block read the zero padding of `d`, or get 0.
                    *l = d.get((j * elems) >> shift).copied().unwrap_or(0.0);
                }
                scatter(
                    dst,
                    &lanes[..per_token],
                    LANES,
                    tile_start * per_token,
                    nt,
                    pos,
                );
            }
        }
        Ok(())
    }

    /// Rows of x (tokens).
    pub fn m(&self) -> usize {
        self.m
    }

    pub(crate) fn q(&self, t: usize) -> &[i8] {
        &self.natural[t * self.row_len..(t + 1) * self.row_len]
    }
}
