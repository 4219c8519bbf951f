//! Every path against the scalar reference, the reference against a plain f32 matmul of the
//! dequantized weights, the two block quantizers, and argument checks; task splitting in `parallel`;
//! the attention kernel against an exact softmax in `attention`.

mod attention;
mod packed;
mod parallel;

use crate::driver::matmul_on;
use crate::{
    KernelError, Parallel, Path, QMatrix, QuantizedInput, Serial, available_paths, best_path,
    matmul,
};

/// A small deterministic generator (xorshift64*), so the tests need no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next() >> 56) as u8).collect()
    }
    /// Uniform in [-1, 1).
    fn f32s(&mut self, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0)
            .collect()
    }
}

struct Weights {
    n: usize,
    k: usize,
    bits: u32,
    block: usize,
    codes: Vec<u8>,
    scales: Vec<f32>,
    zero_points: Option<Vec<u8>>,
}

impl Weights {
    fn random(n: usize, k: usize, bits: u32, block: usize, asym: bool, seed: u64) -> Self {
        let mut rng = Rng(seed | 1);
        let kb = k.div_ceil(block);
        let codes = rng.bytes(n * kb * block * bits as usize / 8);
        let scales = rng.f32s(n * kb).iter().map(|s| s * 0.02).collect();
        let zero_points = asym.then(|| rng.bytes(n * (kb * bits as usize).div_ceil(8)));
        Self {
            n,
            k,
            bits,
            block,
            codes,
            scales,
            zero_points,
        }
    }

    fn matrix(&self) -> QMatrix<'_> {
        let zp = self.zero_points.as_deref();
        match QMatrix::new(
            self.n,
            self.k,
            self.bits,
            self.block,
            &self.codes,
            &self.scales,
            zp,
        ) {
            Ok(w) => w,
            Err(e) => panic!("valid weights rejected: {e}"),
        }
    }

    /// W[row, i] read straight from the layout's definition.
    fn dequant(&self, row: usize, i: usize) -> f32 {
        let kb = self.k.div_ceil(self.block);
        let (b, j) = (i / self.block, i % self.block);
        let blk = &self.codes[(row * kb + b) * self.block * self.bits as usize / 8..];
        let zrow = self
            .zero_points
            .as_ref()
            .map(|z| &z[row * (kb * self.bits as usize).div_ceil(8)..]);
        let (code, zp) = if self.bits == 8 {
            (blk[j], zrow.map_or(128, |z| z[b]))
        } else {
            let nibble = |byte: u8, hi: bool| if hi { byte >> 4 } else { byte & 15 };
            (
                nibble(blk[j / 2], j % 2 == 1),
                zrow.map_or(8, |z| nibble(z[b / 2], b % 2 == 1)),
            )
        };
        (f32::from(code) - f32::from(zp)) * self.scales[row * kb + b]
    }
}

fn quantized(x: &[f32], m: usize, k: usize, block: usize) -> QuantizedInput {
    let mut q = QuantizedInput::default();
    if let Err(e) = q.quantize(x, m, k, block) {
        panic!("valid input rejected: {e}");
    }
    q
}

fn run(path: Path, w: &QMatrix, x: &QuantizedInput, par: &dyn Parallel) -> Vec<f32> {
    let mut y = vec![f32::NAN; x.m * w.n];
    if let Err(e) = matmul_on(path, w, x, &mut y, par) {
        panic!("valid call rejected: {e}");
    }
    y
}

/// Σ of |each term| of y[t, row]'s integer formula: the scale f32 rounding errors are relative to.
fn magnitude(w: &QMatrix, x: &QuantizedInput, row: usize, t: usize) -> f64 {
    let q = x.q(t);
    (0..w.k_blocks)
        .map(|b| {
            let sw = f64::from(w.scales[row * w.k_blocks + b].abs());
            let d = f64::from(x.scale[t * x.row_blocks + b]);
            let z = f64::from(w.zero_point(row, b));
            let terms: f64 = (b * w.block..(b + 1) * w.block)
                .map(|i| (f64::from(w.code(row, i)) + z) * f64::from(q[i].unsigned_abs()))
                .sum();
            sw * d * terms
        })
        .sum()
}

const SHAPES_M: [usize; 3] = [1, 3, 17];

#[test]
fn every_path_equals_the_scalar_reference_and_the_f32_matmul() {
    let mut seed = 7;
    for bits in [4, 8] {
        for asym in [false, true] {
            for block in [16, 32, 64, 128, 256] {
                for k in [21 * block + 3, block / 2 + 1, 200] {
                    for m in SHAPES_M {
                        seed += 1;
                        let n = 11;
                        let wt = Weights::random(n, k, bits, block, asym, seed);
                        let w = wt.matrix();
                        let xf = Rng(seed * 31).f32s(m * k);
                        let x = quantized(&xf, m, k, block);
                        let reference = run(Path::Scalar, &w, &x, &Serial);
                        for path in available_paths() {
                            let fast = run(path, &w, &x, &Serial);
                            for t in 0..m {
                                for row in 0..n {
                                    let i = t * n + row;
                                    let tol = 1e-5 * magnitude(&w, &x, row, t);
                                    let diff = f64::from((fast[i] - reference[i]).abs());
                                    assert!(
                                        diff <= tol,
                                        "{path:?} bits {bits} asym {asym} block {block} k {k} m {m} t {t} row {row}: {} vs {}",
                                        fast[i],
                                        reference[i]
                                    );
                                }
                            }
                        }
                        for t in 0..m {
                            for row in 0..n {
                                let i = t * n + row;
                                let case = format!(
                                    "bits {bits} asym {asym} block {block} k {k} m {m} t {t} row {row}"
                                );
                                let tol = 1e-5 * magnitude(&w, &x, row, t);
                                // y − y_f32 = Σ W·(d·q − x), and |d·q − x| ≤ d/2 per element.
                                let (mut exact, mut bound) = (0f64, 0f64);
                                for j in 0..k {
                                    let wv = f64::from(wt.dequant(row, j));
                                    exact += wv * f64::from(xf[t * k + j]);
                                    bound += wv.abs()
                                        * f64::from(x.scale[t * x.row_blocks + j / block])
                                        / 2.0;
                                }
                                let err = (f64::from(reference[i]) - exact).abs();
                                assert!(
                                    err <= bound * 1.001 + tol,
                                    "{case}: {} vs f32 {exact}",
                                    reference[i]
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn missing_zero_points_mean_the_midpoint() {
    for bits in [4u32, 8] {
        let (n, k, block) = (6, 100, 32);
        let sym = Weights::random(n, k, bits, block, false, 3);
        let kb = k.div_ceil(block);
        let mid = if bits == 8 { 128 } else { 0x88 };
        let explicit = Weights {
            zero_points: Some(vec![mid; n * (kb * bits as usize).div_ceil(8)]),
            ..Weights::random(n, k, bits, block, false, 3)
        };
        let x = quantized(&Rng(5).f32s(2 * k), 2, k, block);
        for path in available_paths() {
            assert_eq!(
                run(path, &sym.matrix(), &x, &Serial),
                run(path, &explicit.matrix(), &x, &Serial)
            );
        }
    }
}

fn is_err<T>(r: Result<T, KernelError>, what: &str) {
    match r {
        Err(e) => assert!(!e.to_string().is_empty()),
        Ok(_) => panic!("{what} was accepted"),
    }
}

#[test]
fn wrong_arguments_are_errors() {
    let wt = Weights::random(4, 64, 4, 32, true, 1);
    let (c, s, z) = (&wt.codes[..], &wt.scales[..], wt.zero_points.as_deref());
    is_err(QMatrix::new(4, 64, 3, 32, c, s, z), "bits 3");
    is_err(QMatrix::new(4, 64, 2, 32, c, s, z), "bits 2");
    for block in [0, 8, 24, 512] {
        is_err(QMatrix::new(4, 64, 4, block, c, s, z), "a bad block");
    }
    is_err(QMatrix::new(4, 64, 4, 32, &c[1..], s, z), "short codes");
    is_err(QMatrix::new(4, 64, 4, 32, c, &s[1..], z), "short scales");
    is_err(
        QMatrix::new(4, 64, 4, 32, c, s, Some(&[0u8; 3])),
        "short zero points",
    );
    is_err(
        QMatrix::new(4, 64, 8, 32, c, s, z),
        "4-bit codes read as 8-bit",
    );
    is_err(
        QMatrix::new(usize::MAX, usize::MAX, 8, 256, c, s, z),
        "an overflowing shape",
    );
    let mut q = QuantizedInput::default();
    is_err(q.quantize(&[0.0; 63], 1, 64, 32), "short x");
    is_err(q.quantize(&[0.0; 64], 1, 64, 48), "a bad x block");
    is_err(
        q.quantize(&[], usize::MAX, usize::MAX, 32),
        "an overflowing x",
    );
    is_err(
        q.quantize(&[], 0, usize::MAX - 50, 16),
        "a k whose padded row overflows",
    );
    // No tokens: nothing to quantize, however long the row would be.
    assert!(q.quantize(&[], 0, usize::MAX - 300, 16).is_ok());
    let w = wt.matrix();
    let mut y = vec![0f32; 4];
    is_err(
        matmul(&w, &quantized(&[0.5; 64], 1, 64, 64), &mut y, &Serial),
        "x with another block",
    );
    is_err(
        matmul(&w, &quantized(&[0.5; 65], 1, 65, 32), &mut y, &Serial),
        "x with another k",
    );
    is_err(
        matmul(&w, &quantized(&[0.5; 128], 2, 64, 32), &mut y, &Serial),
        "y of the wrong length",
    );
}

#[test]
fn empty_shapes_are_fine() {
    let w = match QMatrix::new(0, 64, 4, 32, &[], &[], None) {
        Ok(w) => w,
        Err(e) => panic!("{e}"),
    };
    let x = quantized(&[1.0; 64], 1, 64, 32);
    assert!(matmul(&w, &x, &mut [], &Serial).is_ok());
    let w = Weights::random(3, 0, 8, 16, true, 2);
    let x = quantized(&[], 2, 0, 16);
    for path in available_paths() {
        assert_eq!(run(path, &w.matrix(), &x, &Serial), vec![0.0; 6]);
    }
}

/// Codes 255 against x = ±127 everywhere: a pairwise i16 product sum (2 × 255 × 127) would
/// saturate, so a path that keeps one would differ from the reference here.
#[test]
fn extreme_codes_and_inputs_do_not_saturate() {
    for bits in [4u32, 8] {
        for asym in [false, true] {
            for block in [16usize, 32, 256] {
                let (n, k, m) = (5, 3 * block + 16, 5);
                let kb = k.div_ceil(block);
                let mut wt = Weights::random(n, k, bits, block, asym, 11);
                wt.codes.fill(0xff);
                if let Some(z) = wt.zero_points.as_mut() {
                    z.fill(0);
                }
                wt.scales = vec![1.0; n * kb];
                for sign in [1.0f32, -1.0] {
                    let xf = vec![sign; m * k];
                    let x = quantized(&xf, m, k, block);
                    let reference = run(Path::Scalar, &wt.matrix(), &x, &Serial);
                    // Σ code·x with every code at its maximum and x at d·(±127).
                    let top = if bits == 8 { 255.0 } else { 15.0 };
                    let mid = if asym {
                        0.0
                    } else {
                        f32::from(1u8 << (bits - 1))
                    };
                    let expected = sign * (top - mid) * k as f32;
                    for v in &reference {
                        assert!(
                            (v - expected).abs() <= expected.abs() * 1e-5,
                            "{v} vs {expected}"
                        );
                    }
                    for path in available_paths() {
                        let fast = run(path, &wt.matrix(), &x, &Serial);
                        for v in &fast {
                            let case = format!("{path:?} bits {bits} asym {asym} block {block}");
                            assert!((v - expected).abs() <= expected.abs() * 1e-5, "{case}: {v}");
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn avx2_is_found_where_the_cpu_has_it() {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        assert!(available_paths().contains(&Path::Avx2));
        assert!(crate::path_names().contains(&"avx2"));
    }
    assert_eq!(available_paths().last(), Some(&Path::Scalar));
    assert_eq!(available_paths().first(), Some(&best_path()));
}

#[test]
fn both_block_quantizers_agree() {
    let mut rng = Rng(99);
    for len in [5, 16, 37, 64, 256] {
        let x: Vec<f32> = rng.f32s(len).iter().map(|v| v * 3.0).collect();
        let mut q = vec![0i8; len];
        let (d, sum) = crate::input::quantize_block(&x, &mut q);
        assert!(d > 0.0 && q.iter().any(|&v| v.unsigned_abs() == 127));
        for (&v, &qi) in x.iter().zip(&q) {
            assert!(
                (v - d * f32::from(qi)).abs() <= d * 0.5001,
                "{v} quantized to {qi} × {d}"
            );
        }
        assert_eq!(sum, q.iter().map(|&v| i32::from(v)).sum::<i32>());
        #[cfg(target_arch = "x86_64")]
        if best_path() == Path::Avx512Vnni {
            let mut q_wide = vec![0i8; len];
            // SAFETY: the fast path is chosen only where the CPU has AVX-512.
            let wide = unsafe { crate::avx512::quantize_block(&x, &mut q_wide) };
            assert_eq!((wide, &q_wide), ((d, sum), &q));
        }
    }
}
