//! Weight bandwidth (GB/s of codes + scales + zero points) and µs per call of `matmul` at 1 thread,
//! cache-cold: enough copies of each weight are cycled to exceed the last-level cache.
//!
//!   cargo run --release -p moed-kernels --example bench [-- SECONDS_PER_CASE [M]]
//!
//! Each case runs on the weights as stored (`MatMulNBits` layout, `matmul`) and repacked 16 rows
//! abreast (`PackedMatrix`, `matmul_packed`), alternating, and prints both and their ratio.
//! With M, only the cases of that many tokens run. MOED_KERNEL_PATH=avx512|avx2|scalar (or a name
//! `path_names` lists) forces a path this CPU has; by default the fastest runs.

use std::time::Instant;

use moed_kernels::{
    KernelError, PackedMatrix, Parallel, QMatrix, QuantizedInput, Serial, matmul_packed,
    matmul_path, packed_kernel_available, path_names,
};

/// Bytes of weights cycled per case: well over any L3 this runs on.
const COLD_BYTES: usize = 256 << 20;

struct Case {
    n: usize,
    k: usize,
    bits: u32,
    block: usize,
    m: usize,
}

fn fill(seed: &mut u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|_| {
            *seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (*seed >> 56) as u8
        })
        .collect()
}

/// The path named by MOED_KERNEL_PATH ("avx512" meaning "avx512-vnni"), else the fastest.
fn chosen_path() -> Result<&'static str, String> {
    let names = path_names();
    let Ok(wanted) = std::env::var("MOED_KERNEL_PATH") else {
        return Ok(names.first().copied().unwrap_or("scalar"));
    };
    let wanted = if wanted == "avx512" {
        "avx512-vnni"
    } else {
        wanted.as_str()
    };
    names
        .iter()
        .find(|n| **n == wanted)
        .copied()
        .ok_or_else(|| format!("MOED_KERNEL_PATH: this CPU has only {names:?}"))
}

fn run(
    path: &str,
    w: &QMatrix,
    x: &QuantizedInput,
    y: &mut [f32],
    par: &dyn Parallel,
) -> Result<(), KernelError> {
    matmul_path(path, w, x, y, par).unwrap_or(Ok(()))
}

/// µs per call and GB/s of weights, for the layout as stored and (where this CPU has its kernel)
/// packed.
struct Timing {
    /// GB/s of weights repacked (one thread).
    pack_gbs: f64,
    stored: (f64, f64),
    packed: Option<(f64, f64)>,
}

fn bench(c: &Case, path: &str, seconds: f64) -> Result<Timing, KernelError> {
    let kb = c.k.div_ceil(c.block);
    let code_len = c.n * kb * c.block * c.bits as usize / 8;
    let zp_len = c.n * (kb * c.bits as usize).div_ceil(8);
    let bytes = code_len + 4 * c.n * kb + zp_len;
    let copies = COLD_BYTES.div_ceil(bytes).max(2);
    let mut seed = 1;
    let data: Vec<(Vec<u8>, Vec<f32>, Vec<u8>)> = (0..copies)
        .map(|_| {
            let scales = fill(&mut seed, c.n * kb)
                .iter()
                .map(|&b| f32::from(b) * 1e-4)
                .collect();
            (fill(&mut seed, code_len), scales, fill(&mut seed, zp_len))
        })
        .collect();
    let ws = data
        .iter()
        .map(|(codes, scales, zp)| QMatrix::new(c.n, c.k, c.bits, c.block, codes, scales, Some(zp)))
        .collect::<Result<Vec<_>, _>>()?;
    let x: Vec<f32> = fill(&mut seed, c.m * c.k)
        .iter()
        .map(|&b| f32::from(b) / 128.0 - 1.0)
        .collect();
    let mut q = QuantizedInput::default();
    let mut y = vec![0f32; c.m * c.n];
    for w in &ws {
        q.quantize(&x, c.m, c.k, c.block)?;
        run(path, w, &q, &mut y, &Serial)?;
    }
    let packing = Instant::now();
    let packed = if packed_kernel_available() {
        Some(
            ws.iter()
                .map(|w| PackedMatrix::pack(w, &Serial))
                .collect::<Result<Vec<_>, _>>()?,
        )
    } else {
        None
    };
    let pack_gbs = (bytes * copies) as f64 / packing.elapsed().as_secs_f64() / 1e9;
    // Halves of the time alternate between the layouts, so drift in the machine hits both.
    let (mut stored, mut in_packed) = ((0f64, 0usize), (0f64, 0usize));
    let turns = 4;
    for _ in 0..turns {
        let (start, mut calls) = (Instant::now(), 0usize);
        while start.elapsed().as_secs_f64() < seconds / turns as f64 {
            q.quantize(&x, c.m, c.k, c.block)?;
            run(path, &ws[calls % copies], &q, &mut y, &Serial)?;
            calls += 1;
        }
        stored = (stored.0 + start.elapsed().as_secs_f64(), stored.1 + calls);
        let Some(packed) = &packed else { continue };
        let (start, mut calls) = (Instant::now(), 0usize);
        while start.elapsed().as_secs_f64() < seconds / turns as f64 {
            q.quantize(&x, c.m, c.k, c.block)?;
            matmul_packed(&packed[calls % copies], &q, &mut y, &Serial)?;
            calls += 1;
        }
        in_packed = (
            in_packed.0 + start.elapsed().as_secs_f64(),
            in_packed.1 + calls,
        );
    }
    let figures = |(secs, calls): (f64, usize)| {
        let per_call = secs / calls.max(1) as f64;
        (per_call * 1e6, bytes as f64 / per_call / 1e9)
    };
    Ok(Timing {
        pack_gbs,
        stored: figures(stored),
        packed: packed.is_some().then(|| figures(in_packed)),
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = chosen_path()?;
    let seconds = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    println!(
        "path: {}, 1 thread, asymmetric (zero points present), x quantized in each call",
        path
    );
    let cases = [
        Case {
            n: 768,
            k: 2048,
            bits: 4,
            block: 32,
            m: 1,
        },
        Case {
            n: 2048,
            k: 768,
            bits: 4,
            block: 32,
            m: 1,
        },
        Case {
            n: 32000,
            k: 2048,
            bits: 8,
            block: 32,
            m: 1,
        },
        Case {
            n: 4096,
            k: 2048,
            bits: 4,
            block: 32,
            m: 1,
        },
        Case {
            n: 768,
            k: 2048,
            bits: 4,
            block: 32,
            m: 8,
        },
        Case {
            n: 2048,
            k: 768,
            bits: 4,
            block: 32,
            m: 8,
        },
        Case {
            n: 4096,
            k: 2048,
            bits: 8,
            block: 32,
            m: 8,
        },
        Case {
            n: 768,
            k: 2048,
            bits: 4,
            block: 32,
            m: 128,
        },
        Case {
            n: 4096,
            k: 2048,
            bits: 8,
            block: 32,
            m: 128,
        },
        Case {
            n: 2048,
            k: 768,
            bits: 4,
            block: 32,
            m: 128,
        },
    ];
    let only_m: Option<usize> = std::env::args().nth(2).and_then(|s| s.parse().ok());
    for c in cases.iter().filter(|c| only_m.is_none_or(|m| m == c.m)) {
        let timing = bench(c, path, seconds)?;
        let (us, gbs) = timing.stored;
        println!(
            "N={:5} K={:4} bits={} block={} M={:3}: {:9.1} µs per call, {:7.2} µs per token, {:6.2} GB/s of weights",
            c.n,
            c.k,
            c.bits,
            c.block,
            c.m,
            us,
            us / c.m as f64,
            gbs
        );
        if let Some((pus, pgbs)) = timing.packed {
            println!(
                "                      packed 16 rows: {:9.1} µs per call, {:7.2} µs per token, {:6.2} GB/s of weights, {:.2}x as stored (packed at {:.2} GB/s)",
                pus,
                pus / c.m as f64,
                pgbs,
                us / pus,
                timing.pack_gbs
            );
        }
    }
    Ok(())
}
