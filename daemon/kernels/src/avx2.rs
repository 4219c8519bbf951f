//! The AVX2 kernel, for CPUs without AVX-512 VNNI: `vpmaddubsw` multiplies the unsigned weight codes
//! by the signed int8 activations in pairs to i16, `vpmaddwd` by ones sums those pairs into i32 lanes.
//! It reads the same `QuantizedInput` layout as the AVX-512 kernel, each 64-byte group as two
//! 32-byte halves, so lane l of half h is lane 8h + l of the group's lane scales.
//!
//! `vpmaddubsw` saturates at i16: 4-bit codes (≤ 15 × 127 × 2) never reach it, but 8-bit codes
//! (up to 255 × 127 × 2) would. So an 8-bit code is taken as s = c − 128 (one `xor`): |s| ≤ 128
//! goes in as the unsigned factor and s's sign onto the activation (|q| ≤ 127), each pair then at
//! most 2 × 128 × 127. The sums are then of s·q, which the zero-point correction accounts for with
//! z − 128 (0 for symmetric codes, whose correction vanishes). The code's two factors are made
//! once per load and serve every token of the tile.

use core::arch::x86_64::*;

use crate::avx512::PREFETCH_TILES;
use crate::driver::{Tile, TileOut, by_bits_and_rows, by_tokens};
use crate::input::{LANES, QuantizedInput};
use crate::matrix::QMatrix;
use crate::scalar;

pub(crate) fn available() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

/// y for one tile of at most 4 rows × 4 tokens.
pub(crate) fn tile(w: &QMatrix, x: &QuantizedInput, t: Tile) -> TileOut {
    let in_bounds = t.fits(w, x);
    // The kernel reads through raw pointers computed from these bounds, and uses the features; the
    // driver already guarantees both, this keeps the function safe on its own.
    if !in_bounds || !available() {
        return scalar::tile(w, x, t);
    }
    by_bits_and_rows!(by_toks, w, x, t)
}

fn by_toks<const B: u32, const R: usize>(w: &QMatrix, x: &QuantizedInput, t: Tile) -> TileOut {
    // SAFETY: `tile` checked the CPU features and that rows row0..row0+R of w and the tile's tokens
    // of x exist, with matching blocks; that is all `kernel` relies on.
    unsafe { by_tokens!(kernel, B, R, t; w, x, t) }
}

/// A 32-byte code load's two factors, made once for all tokens: 4 bits, the low and the high
/// nibbles; 8 bits, |c − 128| and c − 128 (whose sign `dot_half` moves onto x).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn prepare<const B: u32>(c: __m256i) -> (__m256i, __m256i) {
    if B == 4 {
        let nib = _mm256_set1_epi8(0x0f);
        (
            _mm256_and_si256(c, nib),
            _mm256_and_si256(_mm256_srli_epi16::<4>(c), nib),
        )
    } else {
        let s = _mm256_xor_si256(c, _mm256_set1_epi8(i8::MIN));
        (_mm256_abs_epi8(s), s)
    }
}

/// Lane sums for one 32-byte half: i32 lane l holds 4 code bytes' products with x (4 bits:
/// codes × x; 8 bits: (codes − 128) × x).
///
/// # Safety
/// The CPU has the enabled features; xe (and for 4 bits xo) point at 32 readable bytes.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_half<const B: u32>(
    (a, b): (__m256i, __m256i),
    xe: *const i8,
    xo: *const i8,
) -> __m256i {
    // SAFETY: the caller guarantees the loads.
    unsafe {
        let ones = _mm256_set1_epi16(1);
        let xa = _mm256_loadu_si256(xe.cast());
        if B == 4 {
            let xb = _mm256_loadu_si256(xo.cast());
            let p = _mm256_add_epi16(_mm256_maddubs_epi16(a, xa), _mm256_maddubs_epi16(b, xb));
            // Each i16 is at most 2 × 2 × 15 × 127 in size: no saturation.
            _mm256_madd_epi16(p, ones)
        } else {
            // |s| × (q with s's sign) = s × q; each i16 at most 2 × 128 × 127.
            _mm256_madd_epi16(_mm256_maddubs_epi16(a, _mm256_sign_epi8(xa, b)), ones)
        }
    }
}

/// Σ_b sw·d·Σ(code·q) − Σ_b sw·z·d·Σq per row and token.
///
/// # Safety
/// The CPU has the enabled features; t's R rows of w and T tokens of x exist and x was quantized
/// with w's block size and k. Code and scale loads are masked to the row's bytes and blocks; x is
/// padded to whole groups.
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel<const B: u32, const R: usize, const T: usize>(
    w: &QMatrix,
    x: &QuantizedInput,
    t: Tile,
) -> TileOut {
    let (row0, tok0) = (t.row0, t.tok0);
    let block_bytes = w.block * w.bits as usize / 8;
    // Block bytes are a power of two: shifts, not divisions, in the loop.
    let block_shift = block_bytes.trailing_zeros();
    // Lane l (4 code bytes) belongs to block l >> lane_shift of the half's blocks.
    let lane_shift = (block_bytes / 4).trailing_zeros().min(4) as i32;
    let groups = w.row_bytes.div_ceil(64);
    // SAFETY (whole body): pointers are offsets inside their slices per the contract above.
    unsafe {
        let idx = _mm256_srlv_epi32(
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
            _mm256_set1_epi32(lane_shift),
        );
        let (xt, dt, unit) = x.tile_start(B, tok0);
        let mut acc = [[_mm256_setzero_ps(); T]; R];
        let ahead = PREFETCH_TILES * R * w.row_bytes;
        let scales_ahead = PREFETCH_TILES * R * w.k_blocks;
        for g in 0..groups {
            let off = g * 64;
            let left = w.row_bytes - off;
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let row = row0 + r;
                // As in the AVX-512 kernel: the hardware prefetchers stop at each 4 KB page.
                let next = row * w.row_bytes + off + ahead;
                _mm_prefetch::<_MM_HINT_T0>(w.codes.as_ptr().wrapping_add(next).cast());
                if off % 256 == 0 {
                    let next = row * w.k_blocks + (off >> block_shift) + scales_ahead;
                    _mm_prefetch::<_MM_HINT_T0>(w.scales.as_ptr().wrapping_add(next).cast());
                }
                let codes = w.codes.as_ptr().add(row * w.row_bytes + off);
                for h in 0..2 {
                    if h * 32 >= left {
                        break;
                    }
                    // Masked past the row's end (its bytes are whole 4-byte lanes): no copy, so
                    // no call that would spill the accumulators.
                    let c = prepare::<B>(if left >= h * 32 + 32 {
                        _mm256_loadu_si256(codes.add(h * 32).cast())
                    } else {
                        _mm256_maskload_epi32(codes.add(h * 32).cast(), first((left - h * 32) / 4))
                    });
                    let sw = _mm256_permutevar8x32_ps(
                        block_scales(w, row, (off + h * 32) >> block_shift),
                        idx,
                    );
                    for (j, a) in acc_r.iter_mut().enumerate() {
                        let xg = xt.add((g * T + j) * unit);
                        let (xe, xo) = if B == 4 {
                            (xg.add(h * 32), xg.add(64 + h * 32))
                        } else {
                            (xg.add(h * 32), xg)
                        };
                        let i = dot_half::<B>(c, xe, xo);
                        let dx = _mm256_loadu_ps(dt.add((g * T + j) * LANES + h * 8));
                        *a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i), _mm256_mul_ps(sw, dx), *a);
                    }
                }
            }
        }
        let mut out = TileOut::default();
        for (r, acc_r) in acc.iter().enumerate() {
            for (j, a) in acc_r.iter().enumerate() {
                out[r][j] = hsum(*a) - zero_point_sum(w, x, row0 + r, tok0 + j);
            }
        }
        out
    }
}

/// The scales of blocks b..b+8 of `row`, zero past the row's last block.
///
/// # Safety
/// The CPU has the enabled features; b < k_blocks.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_scales(w: &QMatrix, row: usize, b: usize) -> __m256 {
    // SAFETY: the load is masked to the row's blocks.
    unsafe {
        let p = w.scales.as_ptr().add(row * w.k_blocks + b);
        _mm256_maskload_ps(p, first(w.k_blocks - b))
    }
}

/// The mask of the first `n` (any size) 32-bit lanes.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn first(n: usize) -> __m256i {
    let n = n.min(8) as i32;
    _mm256_cmpgt_epi32(
        _mm256_set1_epi32(n),
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
    )
}

/// Σ_b sw·z·d·Σq for one row and token, eight blocks at a time (8 bits: z − 128, as the kernel
/// sums (c − 128)·q).
///
/// # Safety
/// As `kernel`, for this row and token.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn zero_point_sum(w: &QMatrix, x: &QuantizedInput, row: usize, tok: usize) -> f32 {
    if w.bits == 8 && w.zero_points.is_none() {
        // The midpoint, 128: nothing to correct.
        return 0.0;
    }
    let shift = _mm256_set1_ps(if w.bits == 8 { 128.0 } else { 0.0 });
    let mut acc = _mm256_setzero_ps();
    // SAFETY: x's block rows are padded to whole ZP_LANES (a multiple of 8), so the x loads stay
    // inside; the others are `block_scales`' and `zero_points`' own.
    unsafe {
        let xs = x.scaled_sum.as_ptr().add(tok * x.row_blocks);
        for c in (0..w.k_blocks).step_by(8) {
            let z = _mm256_sub_ps(zero_points(w, row, c), shift);
            let swz = _mm256_mul_ps(block_scales(w, row, c), z);
            acc = _mm256_fmadd_ps(swz, _mm256_loadu_ps(xs.add(c)), acc);
        }
    }
    hsum(acc)
}

/// The zero points of blocks c..c+8 of `row` as f32 (lanes past the last block are don't-care:
/// their scales are 0).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn zero_points(w: &QMatrix, row: usize, c: usize) -> __m256 {
    let Some(z) = w.zero_points else {
        return _mm256_set1_ps(f32::from(1u8 << (w.bits - 1)));
    };
    let zr = z
        .get(row * w.zp_row_bytes..(row + 1) * w.zp_row_bytes)
        .unwrap_or_default();
    let (start, n) = if w.bits == 8 { (c, 8) } else { (c / 2, 4) };
    let v = match zr.get(start..start + n) {
        // SAFETY: each reads exactly the n bytes `get` returned.
        Some(src) if n == 8 => unsafe { _mm_loadl_epi64(src.as_ptr().cast()) },
        Some(src) => unsafe { _mm_cvtsi32_si128(src.as_ptr().cast::<i32>().read_unaligned()) },
        None => {
            // The row's last blocks: copy what is there.
            let mut buf = [0u8; 16];
            let have = zr.len().saturating_sub(start).min(n);
            if let (Some(dst), Some(src)) = (buf.get_mut(..have), zr.get(start..start + have)) {
                dst.copy_from_slice(src);
            }
            // SAFETY: buf holds 16 bytes.
            unsafe { _mm_loadu_si128(buf.as_ptr().cast()) }
        }
    };
    let bytes = if w.bits == 8 {
        v
    } else {
        let nib = _mm_set1_epi8(0x0f);
        _mm_unpacklo_epi8(
            _mm_and_si128(v, nib),
            _mm_and_si128(_mm_srli_epi16::<4>(v), nib),
        )
    };
    _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes))
}

/// The sum of v's 8 lanes.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
    _mm_cvtss_f32(s)
}
