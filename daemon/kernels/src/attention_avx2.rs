//! The attention kernel's inner products with AVX2 and FMA: scores take four query rows against
//! one key row at a time (each key chunk loaded once for four products); the context keeps 32
//! floats of a row's sum in registers across a block of value rows.

use std::arch::x86_64::*;

/// scores[g * stride + b] = q_g . keys[b] for every row g of `q` ([groups, d]).
///
/// # Safety
/// The CPU must have AVX2 and FMA; `d` must be a multiple of 8, `q.len()` a multiple of `d`,
/// every key exactly `d` long, and `scores` at least `groups * stride` long with `keys.len() <=
/// stride`.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn block_scores(
    q: &[f32],
    d: usize,
    keys: &[&[f32]],
    scores: &mut [f32],
    stride: usize,
) {
    // SAFETY: the caller guarantees the features and the lengths every pointer offset stays within.
    unsafe {
        let groups = q.len() / d;
        let mut g = 0;
        while g + 4 <= groups {
            let qp = q.as_ptr().add(g * d);
            for (b, k) in keys.iter().enumerate() {
                let kp = k.as_ptr();
                let (mut a0, mut a1, mut a2, mut a3) = (
                    _mm256_setzero_ps(),
                    _mm256_setzero_ps(),
                    _mm256_setzero_ps(),
                    _mm256_setzero_ps(),
                );
                let mut c = 0;
                while c < d {
                    let kv = _mm256_loadu_ps(kp.add(c));
                    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(qp.add(c)), kv, a0);
                    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(qp.add(d + c)), kv, a1);
                    a2 = _mm256_fmadd_ps(_mm256_loadu_ps(qp.add(2 * d + c)), kv, a2);
                    a3 = _mm256_fmadd_ps(_mm256_loadu_ps(qp.add(3 * d + c)), kv, a3);
                    c += 8;
                }
                let sums = hsum4(a0, a1, a2, a3);
                let mut out = [0.0f32; 4];
                _mm_storeu_ps(out.as_mut_ptr(), sums);
                for (i, v) in out.iter().enumerate() {
                    scores[(g + i) * stride + b] = *v;
                }
            }
            g += 4;
        }
        while g < groups {
            let qp = q.as_ptr().add(g * d);
            for (b, k) in keys.iter().enumerate() {
                let kp = k.as_ptr();
                let mut a = _mm256_setzero_ps();
                let mut c = 0;
                while c < d {
                    a = _mm256_fmadd_ps(_mm256_loadu_ps(qp.add(c)), _mm256_loadu_ps(kp.add(c)), a);
                    c += 8;
                }
                let z = _mm256_setzero_ps();
                scores[g * stride + b] = _mm_cvtss_f32(hsum4(a, z, z, z));
            }
            g += 1;
        }
    }
}

/// The four horizontal sums of a0..a3, in lanes 0..3.
#[target_feature(enable = "avx2,fma")]
fn hsum4(a0: __m256, a1: __m256, a2: __m256, a3: __m256) -> __m128 {
    let h01 = _mm256_hadd_ps(a0, a1);
    let h23 = _mm256_hadd_ps(a2, a3);
    let h = _mm256_hadd_ps(h01, h23);
    _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1))
}

/// acc_g += sum_b p[g * stride + b] * rows[b] for every row g of `acc` ([groups, d]).
///
/// # Safety
/// The CPU must have AVX2 and FMA; `d` must be a multiple of 32, `acc.len()` a multiple of `d`,
/// every row exactly `d` long, `rows.len() <= stride` and `p` at least `groups * stride` long.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn block_context(
    acc: &mut [f32],
    d: usize,
    p: &[f32],
    rows: &[&[f32]],
    stride: usize,
) {
    let groups = acc.len() / d;
    // SAFETY: the caller guarantees the features and the lengths every pointer offset stays within.
    unsafe {
        for g in 0..groups {
            let pg = p.as_ptr().add(g * stride);
            let mut c = 0;
            while c < d {
                let ap = acc.as_mut_ptr().add(g * d + c);
                let mut a0 = _mm256_loadu_ps(ap);
                let mut a1 = _mm256_loadu_ps(ap.add(8));
                let mut a2 = _mm256_loadu_ps(ap.add(16));
                let mut a3 = _mm256_loadu_ps(ap.add(24));
                for (b, row) in rows.iter().enumerate() {
                    let w = _mm256_broadcast_ss(&*pg.add(b));
                    let v = row.as_ptr().add(c);
                    a0 = _mm256_fmadd_ps(w, _mm256_loadu_ps(v), a0);
                    a1 = _mm256_fmadd_ps(w, _mm256_loadu_ps(v.add(8)), a1);
                    a2 = _mm256_fmadd_ps(w, _mm256_loadu_ps(v.add(16)), a2);
                    a3 = _mm256_fmadd_ps(w, _mm256_loadu_ps(v.add(24)), a3);
                }
                _mm256_storeu_ps(ap, a0);
                _mm256_storeu_ps(ap.add(8), a1);
                _mm256_storeu_ps(ap.add(16), a2);
                _mm256_storeu_ps(ap.add(24), a3);
                c += 32;
            }
        }
    }
}

/// Asks for every cache line of `bytes` (into all cache levels); a hint, never a fault.
pub(crate) fn prefetch(bytes: &[f32]) {
    let start = bytes.as_ptr().cast::<i8>();
    for line in (0..std::mem::size_of_val(bytes)).step_by(64) {
        // SAFETY: the address is inside `bytes`; a prefetch neither reads nor faults.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(start.add(line)) };
    }
}
