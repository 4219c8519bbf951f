//! The ONNX Runtime custom operator `ai.moed.MatMulNBits`: MatMulNBits' inputs, attributes and
//! meaning, computed by `moed_kernels`.
//!
//! Where this CPU has the kernel for it, the weights are repacked 16 rows abreast on the node's
//! first run (`PackedMatrix`: one sequential stream, 1.5–2.2× the row-major kernel's speed in
//! `cargo run --release -p moed-kernels --example bench`), and the packed copy is what every run
//! reads. ONNX Runtime's buffers are then dead: they are mapped from the package, and the engine
//! drops their pages once every 64 MB packed (`take_unreleased`, `procmem::release_mapped`), so
//! the weights stay resident about once. Elsewhere the kernel reads ONNX Runtime's buffers in place.

use std::cell::{Cell, RefCell};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use moed_kernels::{KernelError, PackedMatrix, Parallel, QMatrix, QuantizedInput};
use ort::operator::{
    ComputeContext, Kernel, KernelContext, Operator, OperatorInput, OperatorOutput,
};
use ort::value::TensorElementType;

pub(crate) const OP_NAME: &str = "MatMulNBits";

/// The operator; `threads` is the size of the intra-op pool its tasks run on.
pub(crate) struct MoedMatMulNBits {
    pub threads: usize,
}

pub(crate) struct NbitsKernel {
    n: usize,
    k: usize,
    bits: u32,
    block: usize,
    threads: usize,
    /// The weights repacked on the first run; None when packing does not pay on this CPU or failed.
    packed: OnceLock<Option<Packed>>,
}

/// A node's weights repacked, with the buffer they came from: ONNX Runtime passes a constant
/// initializer's buffer on every run, so a run with any other buffer (a graph whose B is not a
/// constant) reads that buffer in place instead.
struct Packed {
    source: (usize, usize),
    matrix: PackedMatrix,
}

/// Calls of the kernel since the process started (what shows that it, not ONNX Runtime's, ran).
pub(crate) static CALLS: AtomicU64 = AtomicU64::new(0);
/// Bytes of the repacked weights still held.
static PACKED_BYTES: AtomicU64 = AtomicU64::new(0);

impl Drop for Packed {
    fn drop(&mut self) {
        PACKED_BYTES.fetch_sub(self.matrix.bytes() as u64, Relaxed);
    }
}

/// Bytes of ONNX Runtime's buffers repacked since the engine last dropped dead mapped pages.
static UNRELEASED: AtomicU64 = AtomicU64::new(0);

/// Whether at least `bytes` of mapped weights were repacked (and so are dead) since it last said
/// yes; saying yes starts the count again.
pub(crate) fn take_unreleased(bytes: u64) -> bool {
    UNRELEASED
        .fetch_update(Relaxed, Relaxed, |v| (v >= bytes).then_some(0))
        .is_ok()
}

/// Bytes of repacked weights this process holds (sessions dropped free theirs).
pub fn packed_bytes() -> u64 {
    PACKED_BYTES.load(Relaxed)
}

/// Activations (elements) up to which the quantized copy is kept on the calling thread for the
/// next call: decode steps and short prompts reuse it, a long prompt's is freed after its call.
const KEEP_SCRATCH: usize = 1 << 20;

thread_local! {
    // Set while this thread runs graphs side by side with other threads (`on_this_thread`): the
    // cores are taken, so moed's kernels keep their work instead of handing it to the pool.
    static OWN_THREAD: Cell<bool> = const { Cell::new(false) };
    // The quantized activations of the calling thread's current run, kept between calls so a
    // decode step allocates nothing.
    static INPUT: RefCell<QuantizedInput> = RefCell::new(QuantizedInput::default());
}

impl Operator for MoedMatMulNBits {
    type Kernel<'attr> = NbitsKernel;

    fn name(&self) -> &str {
        OP_NAME
    }

    fn inputs(&self) -> impl IntoIterator<Item = OperatorInput> {
        [
            OperatorInput::required(TensorElementType::Float32),
            OperatorInput::required(TensorElementType::Uint8),
            OperatorInput::required(TensorElementType::Float32),
            OperatorInput::optional(TensorElementType::Uint8),
        ]
    }

    fn outputs(&self) -> impl IntoIterator<Item = OperatorOutput> {
        [OperatorOutput::required(TensorElementType::Float32)]
    }

    fn create_kernel<'attr>(&self, info: &KernelContext<'attr>) -> ort::Result<NbitsKernel> {
        let attr = |name: &str| -> ort::Result<usize> {
            let v: i64 = info.get(name).ok_or_else(|| {
                ort::Error::new(format!("MatMulNBits: attribute `{name}` is missing"))
            })?;
            usize::try_from(v)
                .map_err(|_| ort::Error::new(format!("MatMulNBits: attribute `{name}` is {v}")))
        };
        let bits = attr("bits")?;
        Ok(NbitsKernel {
            n: attr("N")?,
            k: attr("K")?,
            bits: u32::try_from(bits)
                .map_err(|_| ort::Error::new(format!("MatMulNBits: bits {bits}")))?,
            block: attr("block_size")?,
            threads: self.threads.max(1),
            packed: OnceLock::new(),
        })
    }
}

/// Runs `f` with moed's kernels computing on the calling thread alone (no tasks handed to the
/// intra-op pool), for graphs run side by side on several threads; restored afterwards, panic or
/// not.
pub(crate) fn on_this_thread<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            OWN_THREAD.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(OWN_THREAD.with(|c| c.replace(true)));
    f()
}

/// Whether moed's kernels on this thread keep their work (inside [`on_this_thread`]).
pub(crate) fn own_thread_only() -> bool {
    OWN_THREAD.with(Cell::get)
}

/// Runs the kernel's tasks on ONNX Runtime's intra-op pool, through the compute context; a single
/// thread inside [`on_this_thread`].
pub(super) struct OrtPool<'a> {
    pub(super) ctx: &'a ComputeContext,
    pub(super) threads: usize,
    pub(super) failed: &'a AtomicBool,
}

impl Parallel for OrtPool<'_> {
    fn threads(&self) -> usize {
        if own_thread_only() { 1 } else { self.threads }
    }
    fn run(&self, tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        if tasks <= 1 || self.threads() <= 1 {
            (0..tasks).for_each(f);
            return;
        }
        if self.ctx.par_for(tasks, tasks, f).is_err() {
            self.failed.store(true, Relaxed);
        }
    }
}

fn kernel_err(e: KernelError) -> ort::Error {
    ort::Error::new(format!("MatMulNBits (moed kernel): {e}"))
}

fn missing(what: &str) -> ort::Error {
    ort::Error::new(format!(
        "MatMulNBits (moed kernel): input `{what}` is missing"
    ))
}

impl Kernel for NbitsKernel {
    // ONNX Runtime may call one kernel from concurrent runs of its session; `compute` only reads
    // `self`, and per-call scratch is thread-local.
    fn compute(&mut self, ctx: &ComputeContext) -> ort::Result<()> {
        CALLS.fetch_add(1, Relaxed);
        let a = ctx.input(0)?.ok_or_else(|| missing("A"))?;
        let b = ctx.input(1)?.ok_or_else(|| missing("B"))?;
        let s = ctx.input(2)?.ok_or_else(|| missing("scales"))?;
        let zp = ctx.input(3)?;
        let (a_shape, x) = a.try_extract_tensor::<f32>()?;
        let (_, codes) = b.try_extract_tensor::<u8>()?;
        let (_, scales) = s.try_extract_tensor::<f32>()?;
        let zero_points = match &zp {
            Some(z) => Some(z.try_extract_tensor::<u8>()?.1),
            None => None,
        };
        let w = QMatrix::new(
            self.n,
            self.k,
            self.bits,
            self.block,
            codes,
            scales,
            zero_points,
        )
        .map_err(kernel_err)?;
        let (Some(&last), true) = (a_shape.last(), x.len() % self.k.max(1) == 0) else {
            return Err(ort::Error::new(
                "MatMulNBits (moed kernel): A has no rows of K",
            ));
        };
        if usize::try_from(last).ok() != Some(self.k) {
            return Err(ort::Error::new(format!(
                "MatMulNBits (moed kernel): A's last dimension is {last}, K is {}",
                self.k
            )));
        }
        let m = x.len() / self.k.max(1);
        let mut out_shape: Vec<i64> = a_shape.to_vec();
        if let Some(d) = out_shape.last_mut() {
            *d = self.n as i64;
        }
        let mut y = ctx
            .output(0, out_shape)?
            .ok_or_else(|| ort::Error::new("MatMulNBits (moed kernel): no output"))?;
        let (_, y) = y.try_extract_tensor_mut::<f32>()?;
        let failed = AtomicBool::new(false);
        let pool = OrtPool {
            ctx,
            threads: self.threads,
            failed: &failed,
        };
        let source = (codes.as_ptr() as usize, codes.len());
        // Packed on the first run, never read in place after it where this CPU packs: the two
        // kernels sum in different orders, and a node must give the same floats whether its
        // session is new (an expert a budget evicted and loaded again) or not, so greedy output
        // does not depend on what the expert cache held.
        let packed = if moed_kernels::packed_kernel_available() {
            self.packed
                .get_or_init(|| pack(&w, ctx, self.threads, source))
                .as_ref()
        } else {
            None
        }
        .filter(|p| p.source == source);
        let mut run = |input: &mut QuantizedInput| {
            input
                .quantize(x, m, self.k, self.block)
                .map_err(kernel_err)?;
            match packed {
                Some(p) => moed_kernels::matmul_packed(&p.matrix, input, y, &pool),
                None => moed_kernels::matmul(&w, input, y, &pool),
            }
            .map_err(kernel_err)
        };
        if x.len() <= KEEP_SCRATCH {
            INPUT.with(|cell| match cell.try_borrow_mut() {
                Ok(mut input) => run(&mut input),
                // Only if a kernel ever ran inside another on one thread: no reuse then.
                Err(_) => run(&mut QuantizedInput::default()),
            })?;
        } else {
            // A long prompt's activations: not worth keeping on this thread for the next call.
            run(&mut QuantizedInput::default())?;
        }
        if failed.into_inner() {
            return Err(ort::Error::new(
                "MatMulNBits (moed kernel): the intra-op pool refused the work",
            ));
        }
        Ok(())
    }
}

/// Repacks w on the intra-op pool; None (the node keeps reading w in place) if the pool refused
/// part of the work.
fn pack(
    w: &QMatrix,
    ctx: &ComputeContext,
    threads: usize,
    source: (usize, usize),
) -> Option<Packed> {
    let failed = AtomicBool::new(false);
    let pool = OrtPool {
        ctx,
        threads,
        failed: &failed,
    };
    let matrix = match PackedMatrix::pack(w, &pool) {
        Ok(m) if !failed.into_inner() => m,
        Ok(_) => {
            log::warn!("MatMulNBits: the intra-op pool refused to repack weights; read in place");
            return None;
        }
        Err(e) => {
            log::warn!("MatMulNBits: weights not repacked ({e}); read in place");
            return None;
        }
    };
    PACKED_BYTES.fetch_add(matrix.bytes() as u64, Relaxed);
    // The codes are nearly all of a weight's bytes; the count only paces the releases.
    UNRELEASED.fetch_add(source.1 as u64, Relaxed);
    Some(Packed { source, matrix })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_thread_holds_inside_the_call_only_and_per_thread() {
        assert!(!own_thread_only());
        let inside = on_this_thread(|| {
            let nested = on_this_thread(own_thread_only);
            let other = std::thread::scope(|s| s.spawn(own_thread_only).join());
            (own_thread_only(), nested, other.ok())
        });
        assert_eq!(inside, (true, true, Some(false)));
        assert!(!own_thread_only(), "restored after the call");
    }

    #[test]
    fn own_thread_is_restored_after_a_panic() {
        let caught = std::panic::catch_unwind(|| on_this_thread(|| panic!("inside")));
        assert!(caught.is_err());
        assert!(!own_thread_only());
    }
}
