//! `QuantizedInput`: activations quantized to int8 per block, in the orders the kernels read.

use crate::matrix::expect_len;
use crate::{KernelError, check_block, checked_len};

/// Elements of x one 64-byte load of 4-bit codes covers; x rows are padded to a multiple of it.
pub(crate) const GROUP4: usize = 128;
/// Blocks the zero-point correction handles per vector.
pub(crate) const ZP_LANES: usize = 16;

/// x [m, k] quantized to int8 per block of the weights' block size: q = round(x / d) with
/// d = max|x| / 127 per block. Kept for reuse across calls so no call allocates once it has grown.
#[derive(Clone, Debug, Default)]
pub struct QuantizedInput {
    pub(crate) m: usize,
    pub(crate) k: usize,
    pub(crate) block: usize,
    pub(crate) k_blocks: usize,
    /// Row stride of `natural` and `split`: k_blocks*block rounded up to `GROUP4`, zero-padded.
    pub(crate) row_len: usize,
    /// Row stride of `scale` and `scaled_sum`: k_blocks rounded up to `ZP_LANES`, zero-padded.
    pub(crate) row_blocks: usize,
    /// q in element order (8-bit codes pair with it byte for byte).
    pub(crate) natural: Vec<i8>,
    /// q per group of 128 elements as its 64 even then its 64 odd elements: a 64-byte load of
    /// 4-bit codes holds the even elements in its low nibbles and the odd ones in its high nibbles.
    pub(crate) split: Vec<i8>,
    /// d per block.
    pub(crate) scale: Vec<f32>,
    /// d × Σq per block: what a zero point multiplies.
    pub(crate) scaled_sum: Vec<f32>,
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
        *self = Self {
            m,
            k,
            block,
            k_blocks,
            row_len,
            row_blocks,
            natural: std::mem::take(&mut self.natural),
            split: std::mem::take(&mut self.split),
            scale: std::mem::take(&mut self.scale),
            scaled_sum: std::mem::take(&mut self.scaled_sum),
        };
        for v in [&mut self.natural, &mut self.split] {
            v.clear();
            v.resize(total, 0);
        }
        for v in [&mut self.scale, &mut self.scaled_sum] {
            v.clear();
            v.resize(m * row_blocks, 0.0);
        }
        if k == 0 {
            return Ok(());
        }
        for (t, xrow) in x.chunks_exact(k).enumerate() {
            let q = &mut self.natural[t * row_len..(t + 1) * row_len];
            for (b, xb) in xrow.chunks(block).enumerate() {
                let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs()));
                let d = amax / 127.0;
                let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
                let mut sum = 0i32;
                for (qi, &v) in q[b * block..].iter_mut().zip(xb) {
                    // `as` saturates (NaN becomes 0): a non-finite input gives a wrong but defined y.
                    *qi = (v * inv).round() as i8;
                    sum += i32::from(*qi);
                }
                self.scale[t * row_blocks + b] = d;
                self.scaled_sum[t * row_blocks + b] = d * sum as f32;
            }
            let s = &mut self.split[t * row_len..(t + 1) * row_len];
            for (sg, qg) in s.chunks_exact_mut(GROUP4).zip(q.chunks_exact(GROUP4)) {
                for i in 0..GROUP4 / 2 {
                    sg[i] = qg[2 * i];
                    sg[GROUP4 / 2 + i] = qg[2 * i + 1];
                }
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
