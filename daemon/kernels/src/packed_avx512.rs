//! The AVX-512 VNNI kernel over `PackedMatrix`: each 64-byte chunk holds 4 code bytes of each of
//! 16 rows, so `vpdpbusd` against 4 broadcast int8 activations adds one row's partial dot product
//! per lane; a block's sums are scaled per lane (row) and token, with no horizontal sum.

use core::arch::x86_64::*;

use crate::input::{QuantizedInput, TILE_TOKENS};
use crate::packed::{GroupOut, PACK_ROWS, PackedMatrix, group_scalar};

/// y of group g for tokens tok0..tok0+nt (nt ≤ 4).
pub(crate) fn group(
    w: &PackedMatrix,
    x: &QuantizedInput,
    g: usize,
    tok0: usize,
    nt: usize,
) -> GroupOut {
    let fits = (1..=TILE_TOKENS).contains(&nt)
        && tok0 + nt <= x.m
        && g < w.groups()
        && x.block == w.block
        && x.k_blocks == w.k_blocks
        && (w.bits == 4 || w.bits == 8);
    // The kernel reads through raw pointers computed from these bounds and uses the features; the
    // driver already guarantees both, this keeps the function safe on its own.
    if !fits || !crate::avx512::available() {
        return group_scalar(w, x, g, tok0, nt);
    }
    // SAFETY: checked just above: the features, the group, the tokens and matching blocks.
    unsafe {
        match (w.bits, nt) {
            (4, 1) => kernel::<4, 1>(w, x, g, tok0),
            (4, 2) => kernel::<4, 2>(w, x, g, tok0),
            (4, 3) => kernel::<4, 3>(w, x, g, tok0),
            (4, _) => kernel::<4, 4>(w, x, g, tok0),
            (_, 1) => kernel::<8, 1>(w, x, g, tok0),
            (_, 2) => kernel::<8, 2>(w, x, g, tok0),
            (_, 3) => kernel::<8, 3>(w, x, g, tok0),
            (_, _) => kernel::<8, 4>(w, x, g, tok0),
        }
    }
}

/// Bytes ahead of the current chunk the kernel asks the cache for: the stream is sequential, but
/// the hardware prefetcher stops at each 4 KB page. Prefetching never faults, and wrapping_add
/// keeps a pointer past the end defined.
const AHEAD: usize = 1024;

/// 4 int8 activations as one 32-bit lane, broadcast.
///
/// # Safety
/// p..p+4 is readable.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn broadcast4(p: *const i8) -> __m512i {
    // SAFETY: per the contract.
    unsafe { _mm512_set1_epi32(p.cast::<i32>().read_unaligned()) }
}

/// # Safety
/// The CPU has the enabled features; group g and tokens tok0..tok0+T exist; x was quantized with
/// w's block size and k (its rows hold k_blocks*block elements and k_blocks scales or more).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn kernel<const B: u32, const T: usize>(
    w: &PackedMatrix,
    x: &QuantizedInput,
    g: usize,
    tok0: usize,
) -> GroupOut {
    let chunks = w.block_bytes / 4;
    let codes_len = PACK_ROWS * w.block_bytes;
    // SAFETY (whole body): every pointer is an offset inside its slice per the contract above.
    unsafe {
        let base = w.data.as_ptr().add(g * w.group_bytes());
        let xq: [*const i8; T] =
            core::array::from_fn(|t| x.natural.as_ptr().add((tok0 + t) * x.row_len));
        let xd: [*const f32; T] =
            core::array::from_fn(|t| x.scale.as_ptr().add((tok0 + t) * x.row_blocks));
        let xs: [*const f32; T] =
            core::array::from_fn(|t| x.scaled_sum.as_ptr().add((tok0 + t) * x.row_blocks));
        let nib = _mm512_set1_epi8(0x0f);
        let midpoint = _mm512_set1_ps(f32::from(1u8 << (B - 1)));
        let mut acc = [_mm512_setzero_ps(); T];
        for b in 0..w.k_blocks {
            let rec = base.add(b * w.record);
            let xo = b * w.block;
            let mut ia = [_mm512_setzero_si512(); T];
            let mut ib = [_mm512_setzero_si512(); T];
            if B == 4 {
                for c in 0..chunks {
                    let p = rec.add(c * 64);
                    _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(AHEAD).cast());
                    let v = _mm512_loadu_si512(p.cast());
                    let lo = _mm512_and_si512(v, nib);
                    let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(v), nib);
                    for t in 0..T {
                        let xp = xq[t].add(xo + 8 * c);
                        ia[t] = _mm512_dpbusd_epi32(ia[t], lo, broadcast4(xp));
                        ib[t] = _mm512_dpbusd_epi32(ib[t], hi, broadcast4(xp.add(4)));
                    }
                }
            } else {
                // block ≥ 16, so chunks (block / 4) is even.
                for c in (0..chunks).step_by(2) {
                    let p = rec.add(c * 64);
                    _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(AHEAD).cast());
                    _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(AHEAD + 64).cast());
                    let v0 = _mm512_loadu_si512(p.cast());
                    let v1 = _mm512_loadu_si512(p.add(64).cast());
                    for t in 0..T {
                        let xp = xq[t].add(xo + 4 * c);
                        ia[t] = _mm512_dpbusd_epi32(ia[t], v0, broadcast4(xp));
                        ib[t] = _mm512_dpbusd_epi32(ib[t], v1, broadcast4(xp.add(4)));
                    }
                }
            }
            let sw = _mm512_loadu_ps(rec.add(codes_len).cast());
            let z = if w.zero_points {
                let zb = _mm_loadu_si128(rec.add(codes_len + 64).cast());
                _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(zb))
            } else {
                midpoint
            };
            let swz = _mm512_mul_ps(sw, z);
            for t in 0..T {
                let i = _mm512_cvtepi32_ps(_mm512_add_epi32(ia[t], ib[t]));
                let d = _mm512_set1_ps(*xd[t].add(b));
                acc[t] = _mm512_fmadd_ps(i, _mm512_mul_ps(sw, d), acc[t]);
                acc[t] = _mm512_fnmadd_ps(swz, _mm512_set1_ps(*xs[t].add(b)), acc[t]);
            }
        }
        let mut out = GroupOut::default();
        for t in 0..T {
            _mm512_storeu_ps(out[t].as_mut_ptr(), acc[t]);
        }
        out
    }
}
