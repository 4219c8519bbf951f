//! The attention kernel's inner products with AVX2 and FMA: scores take four query rows against
//! two key rows at a time (eight independent sums, each key chunk loaded once for four products);
//! the context keeps 32 floats of two rows' sums in registers across a block of value rows. The
//! cache is f32 or f16 (widened with F16C as it is loaded); each has its own copy of the loops.

use std::arch::x86_64::*;

use half::f16;

/// Eight cache values as floats.
#[inline]
#[target_feature(enable = "avx")]
unsafe fn load_f32(p: *const f32) -> __m256 {
    // SAFETY: the caller guarantees eight readable floats at `p`.
    unsafe { _mm256_loadu_ps(p) }
}

/// Eight f16 cache values widened to floats.
#[inline]
#[target_feature(enable = "avx,f16c")]
unsafe fn load_f16(p: *const f16) -> __m256 {
    // SAFETY: the caller guarantees eight readable halves (16 bytes) at `p`.
    unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast())) }
}

/// The score and context loops for cache elements `$elem`, read with `$load`.
macro_rules! loops {
    ($elem:ty, $load:ident, $scores:ident, $context:ident) => {
        /// scores[g * stride + b] = q_g . keys[b] for every row g of `q` ([groups, d]).
        ///
        /// # Safety
        /// The CPU must have AVX2 and FMA; `d` must be a multiple of 8, `q.len()` a multiple of `d`,
        /// every key exactly `d` long, and `scores` at least `groups * stride` long with `keys.len() <=
        /// stride`.
        #[target_feature(enable = "avx2,fma,f16c")]
        pub(crate) unsafe fn $scores(
            q: &[f32],
            d: usize,
            keys: &[&[$elem]],
            scores: &mut [f32],
            stride: usize,
        ) {
            // SAFETY: the caller guarantees the features and the lengths every pointer offset stays within.
            unsafe {
                let groups = q.len() / d;
                let mut g = 0;
                while g + 4 <= groups {
                    let qp = q.as_ptr().add(g * d);
                    let mut b = 0;
                    // Two keys at a time: eight independent sums, so the products are not held up by
                    // the latency of one accumulator.
                    while b + 2 <= keys.len() {
                        let (k0, k1) = (keys[b].as_ptr(), keys[b + 1].as_ptr());
                        let mut a = [_mm256_setzero_ps(); 8];
                        let mut c = 0;
                        while c < d {
                            let x0 = $load(k0.add(c));
                            let x1 = $load(k1.add(c));
                            for i in 0..4 {
                                let qv = _mm256_loadu_ps(qp.add(i * d + c));
                                a[i] = _mm256_fmadd_ps(qv, x0, a[i]);
                                a[4 + i] = _mm256_fmadd_ps(qv, x1, a[4 + i]);
                            }
                            c += 8;
                        }
                        let mut out = [0.0f32; 8];
                        _mm_storeu_ps(out.as_mut_ptr(), hsum4(a[0], a[1], a[2], a[3]));
                        _mm_storeu_ps(out.as_mut_ptr().add(4), hsum4(a[4], a[5], a[6], a[7]));
                        for i in 0..4 {
                            scores[(g + i) * stride + b] = out[i];
                            scores[(g + i) * stride + b + 1] = out[4 + i];
                        }
                        b += 2;
                    }
                    if b < keys.len() {
                        let kp = keys[b].as_ptr();
                        let mut a = [_mm256_setzero_ps(); 4];
                        let mut c = 0;
                        while c < d {
                            let x = $load(kp.add(c));
                            for (i, ai) in a.iter_mut().enumerate() {
                                *ai = _mm256_fmadd_ps(_mm256_loadu_ps(qp.add(i * d + c)), x, *ai);
                            }
                            c += 8;
                        }
                        let mut out = [0.0f32; 4];
                        _mm_storeu_ps(out.as_mut_ptr(), hsum4(a[0], a[1], a[2], a[3]));
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
                            a = _mm256_fmadd_ps(_mm256_loadu_ps(qp.add(c)), $load(kp.add(c)), a);
                            c += 8;
                        }
                        let z = _mm256_setzero_ps();
                        scores[g * stride + b] = _mm_cvtss_f32(hsum4(a, z, z, z));
                    }
                    g += 1;
                }
            }
        }

        /// acc_g += sum_b p[g * stride + b] * rows[b] for every row g of `acc` ([groups, d]).
        ///
        /// # Safety
        /// The CPU must have AVX2 and FMA; `d` must be a multiple of 32, `acc.len()` a multiple of `d`,
        /// every row exactly `d` long, `rows.len() <= stride` and `p` at least `groups * stride` long.
        #[target_feature(enable = "avx2,fma,f16c")]
        pub(crate) unsafe fn $context(
            acc: &mut [f32],
            d: usize,
            p: &[f32],
            rows: &[&[$elem]],
            stride: usize,
        ) {
            let groups = acc.len() / d;
            // SAFETY: the caller guarantees the features and the lengths every pointer offset stays within.
            unsafe {
                // Two query rows at a time: each value chunk loaded once for two products.
                let mut g = 0;
                while g < groups {
                    let pair = g + 1 < groups;
                    let p0 = p.as_ptr().add(g * stride);
                    let p1 = if pair {
                        p.as_ptr().add((g + 1) * stride)
                    } else {
                        p0
                    };
                    let mut c = 0;
                    while c < d {
                        let a0p = acc.as_mut_ptr().add(g * d + c);
                        let a1p = if pair {
                            acc.as_mut_ptr().add((g + 1) * d + c)
                        } else {
                            a0p
                        };
                        let mut a = [
                            _mm256_loadu_ps(a0p),
                            _mm256_loadu_ps(a0p.add(8)),
                            _mm256_loadu_ps(a0p.add(16)),
                            _mm256_loadu_ps(a0p.add(24)),
                        ];
                        let mut b = [
                            _mm256_loadu_ps(a1p),
                            _mm256_loadu_ps(a1p.add(8)),
                            _mm256_loadu_ps(a1p.add(16)),
                            _mm256_loadu_ps(a1p.add(24)),
                        ];
                        for (r, row) in rows.iter().enumerate() {
                            let w0 = _mm256_broadcast_ss(&*p0.add(r));
                            let w1 = _mm256_broadcast_ss(&*p1.add(r));
                            let v = row.as_ptr().add(c);
                            for i in 0..4 {
                                let x = $load(v.add(8 * i));
                                a[i] = _mm256_fmadd_ps(w0, x, a[i]);
                                b[i] = _mm256_fmadd_ps(w1, x, b[i]);
                            }
                        }
                        for (i, ai) in a.iter().enumerate() {
                            _mm256_storeu_ps(a0p.add(8 * i), *ai);
                        }
                        if pair {
                            for (i, bi) in b.iter().enumerate() {
                                _mm256_storeu_ps(a1p.add(8 * i), *bi);
                            }
                        }
                        c += 32;
                    }
                    g += 2;
                }
            }
        }
    };
}

loops!(f32, load_f32, block_scores_f32, block_context_f32);
loops!(f16, load_f16, block_scores_f16, block_context_f16);

/// The four horizontal sums of a0..a3, in lanes 0..3.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn hsum4(a0: __m256, a1: __m256, a2: __m256, a3: __m256) -> __m128 {
    let h01 = _mm256_hadd_ps(a0, a1);
    let h23 = _mm256_hadd_ps(a2, a3);
    let h = _mm256_hadd_ps(h01, h23);
    _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1))
}

/// Asks for every cache line of `rows`; a hint, never a fault.
pub(crate) fn prefetch<E>(rows: &[E]) {
    let start = rows.as_ptr().cast::<i8>();
    for line in (0..std::mem::size_of_val(rows)).step_by(64) {
        // SAFETY: the address is inside `rows`; a prefetch neither reads nor faults.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(start.add(line)) };
    }
}
