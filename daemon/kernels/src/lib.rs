//! Block-quantized matrix products over ONNX Runtime's `MatMulNBits` weight layout, read in place or repacked.
//!
//! The weights stay in the layout the exporter wrote (codes, scales, optional zero points); the
//! activations are quantized to int8 per block once per call (`QuantizedInput`), and each weight
//! block is multiplied in integers, then scaled. `matmul` picks the fastest path this CPU has
//! (`fast_path`); `scalar` is the reference every other path must equal. `PackedMatrix` is the same
//! weights repacked 16 rows abreast for `matmul_packed`, faster where memory streams are what bound
//! a core. `attention` is grouped-query attention over a head-major KV cache, read in place.

mod attention;
#[cfg(target_arch = "x86_64")]
mod attention_avx2;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod driver;
mod input;
mod matrix;
mod packed;
#[cfg(target_arch = "x86_64")]
mod packed_avx512;
mod scalar;
#[cfg(test)]
mod tests;

pub use attention::{AttentionInput, AttentionShape, KvElem, attention};
pub use driver::{Parallel, Serial, matmul, matmul_path};
/// The half-precision type an f16 KV cache holds.
pub use half::f16;
pub use input::QuantizedInput;
pub use matrix::QMatrix;
pub use packed::{PACK_ROWS, PackedMatrix, matmul_packed, packed_kernel_available};

/// What is wrong with a kernel call's arguments.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("bits must be 4 or 8, got {0}")]
    Bits(u32),
    #[error("block size must be a power of two from 16 to 256, got {0}")]
    Block(usize),
    #[error("{what} has {got} elements, expected {expected}")]
    Length {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("{what} is too large to address")]
    TooLarge { what: &'static str },
    #[error("input and weights disagree on {what}: {input} against {weights}")]
    Mismatch {
        what: &'static str,
        input: usize,
        weights: usize,
    },
}

/// The smallest and largest block sizes the layout allows.
const MIN_BLOCK: usize = 16;
const MAX_BLOCK: usize = 256;

fn check_block(block: usize) -> Result<(), KernelError> {
    if block.is_power_of_two() && (MIN_BLOCK..=MAX_BLOCK).contains(&block) {
        Ok(())
    } else {
        Err(KernelError::Block(block))
    }
}

fn checked_len(what: &'static str, dims: &[usize]) -> Result<usize, KernelError> {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or(KernelError::TooLarge { what })
}

/// Which kernel runs the integer products.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Path {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512Vnni,
}

impl Path {
    /// Whether this CPU has the features the path needs.
    fn available(self) -> bool {
        match self {
            Path::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Path::Avx2 => avx2::available(),
            #[cfg(target_arch = "x86_64")]
            Path::Avx512Vnni => avx512::available(),
        }
    }

    fn name(self) -> Option<&'static str> {
        match self {
            Path::Scalar => None,
            #[cfg(target_arch = "x86_64")]
            Path::Avx2 => Some("avx2"),
            #[cfg(target_arch = "x86_64")]
            Path::Avx512Vnni => Some("avx512-vnni"),
        }
    }
}

/// Every path this CPU can run, fastest first; the scalar reference is always last.
pub(crate) fn available_paths() -> Vec<Path> {
    [
        #[cfg(target_arch = "x86_64")]
        Path::Avx512Vnni,
        #[cfg(target_arch = "x86_64")]
        Path::Avx2,
        Path::Scalar,
    ]
    .into_iter()
    .filter(|p| p.available())
    .collect()
}

/// The names of the paths this CPU can run, fastest first ("scalar" last), for benchmarks that
/// compare them through `matmul_path`.
pub fn path_names() -> Vec<&'static str> {
    available_paths()
        .into_iter()
        .map(|p| p.name().unwrap_or("scalar"))
        .collect()
}

/// Detected once: feature detection is cheap but not free, and the answer never changes.
pub(crate) fn best_path() -> Path {
    static BEST: std::sync::OnceLock<Path> = std::sync::OnceLock::new();
    *BEST.get_or_init(|| available_paths().first().copied().unwrap_or(Path::Scalar))
}

/// The fastest path this CPU has, or None when only the scalar reference exists (the engine then
/// keeps ONNX Runtime's own `MatMulNBits`).
pub fn fast_path() -> Option<&'static str> {
    best_path().name()
}
