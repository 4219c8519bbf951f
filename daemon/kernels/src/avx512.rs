//! The AVX-512 VNNI kernel: `vpdpbusd` multiplies the unsigned weight codes by the signed int8
//! activations four at a time per 32-bit lane; a zero point is one correction per block,
//! Σ(code − z)·q = Σcode·q − z·Σq, applied in f32 after the main loop.
//!
//! A 64-byte load of codes spans whole blocks or a whole part of one (block bytes are a power of two
//! ≥ 8), so each lane's sum belongs to one block and is scaled by that block's sw·d, gathered
//! into lanes with one permute. Up to 4 weight rows × 4 tokens share each load.

use core::arch::x86_64::*;

use crate::driver::{Tile, TileOut, by_bits_and_rows, by_tokens};
use crate::input::{LANES, QuantizedInput, ZP_LANES};
use crate::matrix::QMatrix;
use crate::scalar;

pub(crate) fn available() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni")
}

/// y for one tile of at most 4 rows × 4 tokens.
pub(crate) fn tile(w: &QMatrix, x: &QuantizedInput, t: Tile) -> TileOut {
    let in_bounds = t.fits(w, x);
    // The kernels read through raw pointers computed from these bounds, and use the features; the
    // driver already guarantees both, this keeps the function safe on its own.
    if !in_bounds || crate::best_path() != crate::Path::Avx512Vnni {
        return scalar::tile(w, x, t);
    }
    by_bits_and_rows!(by_toks, w, x, t)
}

fn by_toks<const B: u32, const R: usize>(w: &QMatrix, x: &QuantizedInput, t: Tile) -> TileOut {
    // SAFETY: `tile` checked the CPU features and that rows row0..row0+R of w and the tile's tokens
    // of x exist, with matching blocks; that is all `kernel` relies on.
    unsafe { by_tokens!(kernel, B, R, t; w, x, t.row0, t.tok0) }
}

/// How far ahead (in tiles of rows) the kernel prefetches the weights.
pub(crate) const PREFETCH_TILES: usize = 2;

/// The mask of the first `n` (≤ 16) lanes.
fn mask16(n: usize) -> __mmask16 {
    ((1u32 << n) - 1) as __mmask16
}

/// # Safety
/// The CPU has the enabled features; rows row0..row0+R of w and tokens tok0..tok0+T of x exist and
/// x was quantized with w's block size and k. Every load stays inside its slice: code loads are
/// masked to the row's bytes, scale loads to the row's blocks, and x is padded to whole groups.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn kernel<const B: u32, const R: usize, const T: usize>(
    w: &QMatrix,
    x: &QuantizedInput,
    row0: usize,
    tok0: usize,
) -> TileOut {
    // Block bytes are a power of two: shifts, not divisions, in the loop.
    let block_bytes = w.block * w.bits as usize / 8;
    let block_shift = block_bytes.trailing_zeros();
    // Lane l (4 code bytes) belongs to block l / lanes_per_block of the group; both are powers of two.
    let lane_shift = (block_bytes / 4).trailing_zeros().min(4) as i32;
    let blocks_per_group = (64 >> block_shift).max(1);
    let groups = w.row_bytes.div_ceil(64);
    // SAFETY (whole body): pointers are offsets inside their slices per the contract above.
    unsafe {
        let iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        let idx = _mm512_srlv_epi32(iota, _mm512_set1_epi32(lane_shift));
        // The next tiles' rows follow this tile's in memory; the hardware prefetchers stop at each
        // 4 KB page, so fetch PREFETCH_TILES tiles ahead explicitly.
        let ahead = PREFETCH_TILES * R * w.row_bytes;
        let scales_ahead = PREFETCH_TILES * R * w.k_blocks;
        let nib = _mm512_set1_epi8(0x0f);
        let codes: [*const u8; R] =
            core::array::from_fn(|r| w.codes.as_ptr().add((row0 + r) * w.row_bytes));
        let scales: [*const f32; R] =
            core::array::from_fn(|r| w.scales.as_ptr().add((row0 + r) * w.k_blocks));
        // This tile's tokens, interleaved group by group (see `QuantizedInput`).
        let (xt, dt, unit) = x.tile_start(B, tok0);
        let mut acc = [[_mm512_setzero_ps(); T]; R];
        for g in 0..groups {
            let off = g * 64;
            let left = w.row_bytes - off;
            let cmask: __mmask64 = if left >= 64 {
                u64::MAX
            } else {
                (1u64 << left) - 1
            };
            let b0 = off >> block_shift;
            let smask = mask16(blocks_per_group.min(w.k_blocks - b0));
            for r in 0..R {
                // Prefetching never faults, and wrapping_add keeps a pointer past the end defined.
                _mm_prefetch::<_MM_HINT_T0>(codes[r].wrapping_add(off + ahead).cast());
                if off % 256 == 0 {
                    _mm_prefetch::<_MM_HINT_T0>(scales[r].wrapping_add(b0 + scales_ahead).cast());
                }
                let c = _mm512_maskz_loadu_epi8(cmask, codes[r].add(off).cast());
                let sw =
                    _mm512_permutexvar_ps(idx, _mm512_maskz_loadu_ps(smask, scales[r].add(b0)));
                let (lo, hi) = if B == 4 {
                    (
                        _mm512_and_si512(c, nib),
                        _mm512_and_si512(_mm512_srli_epi16::<4>(c), nib),
                    )
                } else {
                    (c, c)
                };
                // x and its lane scales are read from memory here (L1 after the first row): keeping
                // them in registers for all tokens would spill the accumulators.
                for (t, a) in acc[r].iter_mut().enumerate() {
                    let xg = xt.add((g * T + t) * unit);
                    let xe = _mm512_loadu_si512(xg.cast());
                    let mut i = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, xe);
                    if B == 4 {
                        let xo = _mm512_loadu_si512(xg.add(64).cast());
                        i = _mm512_dpbusd_epi32(i, hi, xo);
                    }
                    let dx = _mm512_loadu_ps(dt.add((g * T + t) * LANES));
                    *a = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i), _mm512_mul_ps(sw, dx), *a);
                }
            }
        }
        let mut zacc = [[_mm512_setzero_ps(); T]; R];
        let xs: [*const f32; T] =
            core::array::from_fn(|t| x.scaled_sum.as_ptr().add((tok0 + t) * x.row_blocks));
        for c in (0..w.k_blocks).step_by(ZP_LANES) {
            let m = mask16((w.k_blocks - c).min(ZP_LANES));
            // x's block rows are padded to whole ZP_LANES, so this load needs no mask.
            let xv: [__m512; T] = core::array::from_fn(|t| _mm512_loadu_ps(xs[t].add(c)));
            for r in 0..R {
                let sw = _mm512_maskz_loadu_ps(m, scales[r].add(c));
                let swz = _mm512_mul_ps(sw, zero_points(w, row0 + r, c, m));
                for t in 0..T {
                    zacc[r][t] = _mm512_fmadd_ps(swz, xv[t], zacc[r][t]);
                }
            }
        }
        let mut parts = [_mm512_setzero_ps(); 16];
        for r in 0..R {
            for t in 0..T {
                parts[r * T + t] = _mm512_sub_ps(acc[r][t], zacc[r][t]);
            }
        }
        let mut sums = [0f32; 16];
        _mm512_storeu_ps(sums.as_mut_ptr(), sum_each(parts));
        let mut out = TileOut::default();
        for r in 0..R {
            for t in 0..T {
                out[r][t] = sums[r * T + t];
            }
        }
        out
    }
}

/// Lane i of the result is the sum of the 16 lanes of v[i]: 45 shuffles and adds for all 16,
/// where a reduction each would take about 150.
#[inline]
#[target_feature(enable = "avx512f")]
fn sum_each(v: [__m512; 16]) -> __m512 {
    // Pairs (a, b): per 128-bit lane [a0+a2, b0+b2, a1+a3, b1+b3].
    let pairs: [__m512; 8] = core::array::from_fn(|j| {
        let (a, b) = (v[2 * j], v[2 * j + 1]);
        _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b))
    });
    // Quads: per 128-bit lane k, lane k's sums of 4 vectors of v in order.
    let quads: [__m512; 4] = core::array::from_fn(|j| {
        let (c, d) = (
            _mm512_castps_pd(pairs[2 * j]),
            _mm512_castps_pd(pairs[2 * j + 1]),
        );
        _mm512_add_ps(
            _mm512_castpd_ps(_mm512_unpacklo_pd(c, d)),
            _mm512_castpd_ps(_mm512_unpackhi_pd(c, d)),
        )
    });
    // Then add the four 128-bit lanes, two at a time.
    let fold = |x: __m512, y: __m512| {
        _mm512_add_ps(
            _mm512_shuffle_f32x4::<0b10_00_10_00>(x, y),
            _mm512_shuffle_f32x4::<0b11_01_11_01>(x, y),
        )
    };
    fold(fold(quads[0], quads[1]), fold(quads[2], quads[3]))
}

/// Quantizes one block xb (its values past q's length are ignored) into q as `input::quantize_block`
/// does, rounding ties to even like it; returns d and Σq.
///
/// # Safety
/// The CPU has the enabled features.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(crate) unsafe fn quantize_block(xb: &[f32], q: &mut [i8]) -> (f32, i32) {
    let n = xb.len().min(q.len());
    let mask = |i: usize| mask16((n - i).min(16));
    // SAFETY: every load and store is masked to the first n values of xb and q.
    unsafe {
        let mut mx = _mm512_setzero_ps();
        for i in (0..n).step_by(16) {
            let v = _mm512_maskz_loadu_ps(mask(i), xb.as_ptr().add(i));
            mx = _mm512_max_ps(mx, _mm512_abs_ps(v));
        }
        let d = _mm512_reduce_max_ps(mx) / 127.0;
        let inv = _mm512_set1_ps(if d > 0.0 { 1.0 / d } else { 0.0 });
        let mut sum = _mm512_setzero_si512();
        for i in (0..n).step_by(16) {
            let v = _mm512_maskz_loadu_ps(mask(i), xb.as_ptr().add(i));
            let r = _mm512_cvtps_epi32(_mm512_mul_ps(v, inv));
            sum = _mm512_add_epi32(sum, r);
            _mm512_mask_cvtepi32_storeu_epi8(q.as_mut_ptr().add(i), mask(i), r);
        }
        (d, _mm512_reduce_add_epi32(sum))
    }
}

/// The zero points of blocks c..c+16 of `row` as f32 (lanes outside `m` are don't-care: their
/// scales are loaded as 0).
///
/// # Safety
/// As `kernel`; c < k_blocks.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn zero_points(w: &QMatrix, row: usize, c: usize, m: __mmask16) -> __m512 {
    let Some(z) = w.zero_points else {
        return _mm512_set1_ps(f32::from(1u8 << (w.bits - 1)));
    };
    // SAFETY: the row's zero points hold k_blocks*bits/8 bytes (rounded up); loads are masked to
    // the blocks that exist (for 4 bits, to the bytes holding them).
    unsafe {
        let p = z.as_ptr().add(row * w.zp_row_bytes);
        let bytes = if w.bits == 8 {
            _mm_maskz_loadu_epi8(m, p.add(c).cast())
        } else {
            let nbytes = (m.count_ones() as usize).div_ceil(2);
            let v = _mm_maskz_loadu_epi8(mask16(nbytes), p.add(c / 2).cast());
            let nib = _mm_set1_epi8(0x0f);
            _mm_unpacklo_epi8(
                _mm_and_si128(v, nib),
                _mm_and_si128(_mm_srli_epi16::<4>(v), nib),
            )
        };
        _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(bytes))
    }
}
