//! The reference kernel: the integer math every fast path must reproduce, one element at a time.

use crate::driver::{Tile, TileOut};
use crate::input::QuantizedInput;
use crate::matrix::QMatrix;

/// y for weight row `row` and token `t`: Σ_b sw·d·Σ(code·q) − Σ_b sw·z·d·Σq.
pub(crate) fn dot(w: &QMatrix, x: &QuantizedInput, row: usize, t: usize) -> f32 {
    let q = x.q(t);
    let (mut main, mut corr) = (0f32, 0f32);
    for b in 0..w.k_blocks {
        let isum: i32 = (b * w.block..(b + 1) * w.block)
            .map(|i| i32::from(w.code(row, i)) * i32::from(q[i]))
            .sum();
        let sw = w.scales[row * w.k_blocks + b];
        main += sw * x.scale[t * x.row_blocks + b] * isum as f32;
        corr += sw * f32::from(w.zero_point(row, b)) * x.scaled_sum[t * x.row_blocks + b];
    }
    main - corr
}

/// A tile of up to 4 rows × 4 tokens, in the shape the fast kernels return.
pub(crate) fn tile(w: &QMatrix, x: &QuantizedInput, t: Tile) -> TileOut {
    let mut out = TileOut::default();
    for (r, out_r) in out.iter_mut().enumerate().take(t.rows) {
        for (j, o) in out_r.iter_mut().enumerate().take(t.toks) {
            *o = dot(w, x, t.row0 + r, t.tok0 + j);
        }
    }
    out
}
