//! moed's own CPU kernels inside ONNX Runtime sessions: block-quantized matmuls (moed's or ONNX
//! Runtime's `MatMulNBits`, as configured) and grouped-query attention over the head-major cache
//! (always moed's), reached by moving the nodes into the `ai.moed` operator domain before the
//! session is created. The package on disk is never changed.

mod attention_op;
mod onnx_edit;
mod op;

pub(crate) use attention_op::{Segment, SegmentCache, with_segments};
pub use op::packed_bytes;
pub(crate) use op::{on_this_thread, take_unreleased};

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use ort::operator::OperatorDomain;
use ort::session::Session;
use ort::session::builder::SessionBuilder;

/// The operator domain moed's kernels are registered under.
pub const DOMAIN: &str = "ai.moed";
/// A graph file larger than this is left to ONNX Runtime's kernel rather than read into memory to
/// be edited (packages keep their weights in external-data files, so graphs are far smaller).
const MAX_EDITED_GRAPH: u64 = 64 << 20;
/// ONNX Runtime's session option for where a model loaded from memory finds its external data.
const EXTERNAL_DATA_DIR: &str = "session.model_external_initializers_file_folder_path";

/// The kernel for block-quantized matmuls (`engine.quantized_matmul`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MatmulKernel {
    /// moed's kernel wherever this CPU has a fast path for it; ONNX Runtime's elsewhere.
    #[default]
    Moed,
    /// ONNX Runtime's `MatMulNBits` everywhere.
    #[serde(rename = "onnxruntime")]
    OnnxRuntime,
}

impl MatmulKernel {
    pub fn as_str(self) -> &'static str {
        match self {
            MatmulKernel::Moed => "moed",
            MatmulKernel::OnnxRuntime => "onnxruntime",
        }
    }

    /// What actually runs the matmuls, for reports: e.g. `moed (avx512-vnni)`, or `onnxruntime`
    /// with the reason when moed's kernel was asked for but this CPU has no fast path for it.
    pub fn describe(self) -> String {
        match (self, moed_kernels::fast_path()) {
            (MatmulKernel::Moed, Some(path)) => format!("moed ({path})"),
            (MatmulKernel::Moed, None) => {
                "onnxruntime (moed's kernel has no fast path on this CPU)".to_string()
            }
            (MatmulKernel::OnnxRuntime, _) => "onnxruntime".to_string(),
        }
    }

    /// Whether graphs loaded now get moed's kernel.
    pub(crate) fn active(self) -> bool {
        self == MatmulKernel::Moed && moed_kernels::fast_path().is_some()
    }
}

impl fmt::Display for MatmulKernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown quantized matmul kernel {0} (known: moed, onnxruntime)")]
pub struct UnknownKernel(pub String);

impl FromStr for MatmulKernel {
    type Err = UnknownKernel;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "moed" => Ok(MatmulKernel::Moed),
            "onnxruntime" | "ort" => Ok(MatmulKernel::OnnxRuntime),
            _ => Err(UnknownKernel(moed_wire::quote(s))),
        }
    }
}

/// How many times moed's kernel has run in this process.
pub fn moed_kernel_calls() -> u64 {
    op::CALLS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Whether moed's kernel repacks weights it runs again on this CPU (see `op.rs`).
pub fn packs_weights() -> bool {
    moed_kernels::packed_kernel_available()
}

/// How many times moed's attention kernel has run in this process.
pub fn moed_attention_calls() -> u64 {
    attention_op::CALLS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Whether moed's kernel computes what ONNX Runtime's would for this node: 4 or 8 bits, a block
/// of a power of two from 16, int8 compute (accuracy level 4, which is how moed's kernel
/// computes), and no g_idx or bias input.
fn supported_nbits(node: &onnx_edit::NbitsNode) -> bool {
    matches!(node.bits, 4 | 8)
        && node.block_size >= 16
        && node.block_size <= 256
        && (node.block_size as u64).is_power_of_two()
        && node.accuracy_level == 4
        && node.k > 0
        && node.n > 0
        && (3..=4).contains(&node.inputs)
        && !node.extra_inputs
}

/// Whether moed's attention kernel computes what ONNX Runtime's would for this node: the seven
/// core inputs and no later one (rotary caches, position ids, bias, sinks), no rotary, window,
/// softcap or smooth softmax, and present outputs nothing reads (moed's does not write them).
fn supported_gqa(node: &onnx_edit::GqaNode) -> bool {
    node.core_inputs == [true; 7]
        && !node.extra_inputs
        && !node.unknown_attributes
        && !node.presents_used
        && node.do_rotary == 0
        && node.local_window_size == -1
        && node.softcap == 0.0
        && node.smooth_softmax == 0
        && node.qk_output == 0
        && node.num_heads > 0
        && node.kv_num_heads > 0
        && node.num_heads % node.kv_num_heads == 0
        && node.scale.is_finite()
}

/// Serializes the creation of sessions that register moed's operator domain.
static COMMIT: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A session with moed's kernels on some of its nodes.
pub(crate) struct Edited {
    pub session: Session,
    /// The graph has attention nodes and every one runs moed's kernel, which can attend several
    /// sequences in one run ([`with_segments`]).
    pub segmented_attention: bool,
}

/// Creates the session for the graph file `path` with moed's kernels on every supported node
/// (MatMulNBits ones only when `matmul`); `Ok(None)` when the graph has none (or is too large
/// to edit), so the caller loads the file as it is.
pub(crate) fn commit_with_moed_kernel(
    builder: SessionBuilder,
    path: &Path,
    threads: usize,
    matmul: bool,
) -> Result<Option<Edited>, String> {
    let size = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
    if size > MAX_EDITED_GRAPH {
        return Ok(None);
    }
    let model = std::fs::read(path).map_err(|e| e.to_string())?;
    let (gqa_seen, gqa_taken) = (std::cell::Cell::new(0), std::cell::Cell::new(0));
    let Some((edited, moved)) = onnx_edit::redirect(&model, DOMAIN, |node| match node {
        onnx_edit::Candidate::Nbits(n) => matmul && supported_nbits(n),
        onnx_edit::Candidate::Gqa(g) => {
            let ok = supported_gqa(g);
            gqa_seen.set(gqa_seen.get() + 1);
            gqa_taken.set(gqa_taken.get() + usize::from(ok));
            ok
        }
    })
    .map_err(|e| e.to_string())?
    else {
        return Ok(None);
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let domain = OperatorDomain::new(DOMAIN)
        .and_then(|d| d.add(op::MoedMatMulNBits { threads }))
        .and_then(|d| d.add(attention_op::MoedGqa::<f32>::new(threads)))
        .and_then(|d| d.add(attention_op::MoedGqa::<moed_kernels::f16>::new(threads)))
        .map_err(|e| e.to_string())?;
    let mut builder = builder
        .with_operators(domain)
        .map_err(|e| e.to_string())?
        .with_config_entry(EXTERNAL_DATA_DIR, dir.to_string_lossy())
        .map_err(|e| e.to_string())?;
    // ONNX Runtime adds a custom domain's schemas to a process-wide registry without a lock:
    // two sessions committed at once (two requests loading experts) can fail with "Trying to add
    // a domain to DomainToVersion map, but the domain is already exist". One at a time, then.
    let session = {
        let _one = COMMIT
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        builder.commit_from_memory(&edited)
    }
    .map_err(|e| e.to_string())?;
    log::debug!("{}: {moved} node(s) on moed's kernels", path.display());
    Ok(Some(Edited {
        session,
        segmented_attention: gqa_seen.get() > 0 && gqa_seen.get() == gqa_taken.get(),
    }))
}
