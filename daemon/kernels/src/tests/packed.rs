//! The 16-row layout: its kernel and its reference against the row-major reference, for every
//! bits, block, zero-point case, partial groups, any token count and any task split.

use super::{Rng, Weights, magnitude, quantized, run};
use crate::packed::matmul_packed_on;
use crate::{PackedMatrix, Parallel, Path, QuantizedInput, Serial, packed_kernel_available};

/// Claims several threads and runs the tasks last first.
struct Reverse(usize);

impl Parallel for Reverse {
    fn threads(&self) -> usize {
        self.0
    }
    fn run(&self, tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        (0..tasks).rev().for_each(f);
    }
}

fn packed_run(fast: bool, w: &PackedMatrix, x: &QuantizedInput, par: &dyn Parallel) -> Vec<f32> {
    let mut y = vec![f32::NAN; x.m * w.n];
    if let Err(e) = matmul_packed_on(fast, w, x, &mut y, par) {
        panic!("valid call rejected: {e}");
    }
    y
}

#[test]
fn packed_weights_give_the_row_major_reference() {
    let mut seed = 101;
    let kernels: Vec<bool> = if packed_kernel_available() {
        vec![false, true]
    } else {
        vec![false]
    };
    for bits in [4, 8] {
        for asym in [false, true] {
            for block in [16, 32, 64, 128, 256] {
                for (n, k, m) in [(37, 3 * block + 5, 1), (16, 200, 6), (5, block, 9)] {
                    seed += 1;
                    let wt = Weights::random(n, k, bits, block, asym, seed);
                    let w = wt.matrix();
                    let x = quantized(&Rng(seed * 7).f32s(m * k), m, k, block);
                    let reference = run(Path::Scalar, &w, &x, &Serial);
                    let packed =
                        match PackedMatrix::pack(&w, &Reverse(if asym { 3 } else { usize::MAX })) {
                            Ok(p) => p,
                            Err(e) => panic!("valid weights rejected: {e}"),
                        };
                    for &fast in &kernels {
                        for par in [&Serial as &dyn Parallel, &Reverse(2), &Reverse(usize::MAX)] {
                            let y = packed_run(fast, &packed, &x, par);
                            for t in 0..m {
                                for row in 0..n {
                                    let i = t * n + row;
                                    let tol = 1e-5 * magnitude(&w, &x, row, t);
                                    assert!(
                                        f64::from((y[i] - reference[i]).abs()) <= tol,
                                        "fast {fast} bits {bits} asym {asym} block {block} n {n} k {k} t {t} row {row}: {} vs {}",
                                        y[i],
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
}

#[test]
fn packed_calls_with_other_shapes_are_refused() {
    let wt = Weights::random(20, 64, 4, 32, false, 3);
    let packed = match PackedMatrix::pack(&wt.matrix(), &Serial) {
        Ok(p) => p,
        Err(e) => panic!("valid weights rejected: {e}"),
    };
    assert_eq!((packed.n(), packed.k()), (20, 64));
    assert!(packed.bytes() >= 20 * 64 / 2 + 20 * 2 * 4);
    for (k, block, len) in [(65, 32, 20), (64, 16, 20), (64, 32, 19)] {
        let x = quantized(&Rng(4).f32s(k), 1, k, block);
        let mut y = vec![0.0; len];
        assert!(matmul_packed_on(false, &packed, &x, &mut y, &Serial).is_err());
        assert!(matmul_packed_on(true, &packed, &x, &mut y, &Serial).is_err());
    }
}
