//! The ONNX Runtime custom operator `ai.moed.GroupQueryAttention`: GroupQueryAttention's inputs,
//! attributes and meaning for the graphs moed exports (rotary applied before it, batch 1, the
//! head-major cache as the past), computed by `moed_kernels::attention` from the cache in place.
//! The present outputs are not written: the engine appends the new rows itself.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use moed_kernels::{AttentionInput, AttentionShape, KernelError};
use ort::operator::{
    ComputeContext, Kernel, KernelContext, Operator, OperatorInput, OperatorOutput,
};
use ort::value::TensorElementType;

use super::op::OrtPool;

pub(crate) const OP_NAME: &str = "GroupQueryAttention";

/// Calls of the kernel since the process started (what shows that it, not ONNX Runtime's, ran).
pub(crate) static CALLS: AtomicU64 = AtomicU64::new(0);

/// The operator; `threads` is the size of the intra-op pool its tasks run on.
pub(crate) struct MoedGqa {
    pub threads: usize,
}

pub(crate) struct GqaKernel {
    heads: usize,
    kv_heads: usize,
    scale: Option<f32>,
    threads: usize,
}

impl Operator for MoedGqa {
    type Kernel<'attr> = GqaKernel;

    fn name(&self) -> &str {
        OP_NAME
    }

    fn inputs(&self) -> impl IntoIterator<Item = OperatorInput> {
        let f = TensorElementType::Float32;
        let i = TensorElementType::Int32;
        [
            OperatorInput::required(f),
            OperatorInput::required(f),
            OperatorInput::required(f),
            OperatorInput::required(f),
            OperatorInput::required(f),
            OperatorInput::required(i),
            OperatorInput::required(i),
        ]
    }

    fn outputs(&self) -> impl IntoIterator<Item = OperatorOutput> {
        let f = TensorElementType::Float32;
        [
            OperatorOutput::required(f),
            OperatorOutput::optional(f),
            OperatorOutput::optional(f),
        ]
    }

    fn create_kernel<'attr>(&self, info: &KernelContext<'attr>) -> ort::Result<GqaKernel> {
        let count = |name: &str| -> ort::Result<usize> {
            let v: i64 = info
                .get(name)
                .ok_or_else(|| err(format!("attribute `{name}` is missing")))?;
            usize::try_from(v)
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| err(format!("attribute `{name}` is {v}")))
        };
        let (heads, kv_heads) = (count("num_heads")?, count("kv_num_heads")?);
        if heads % kv_heads != 0 {
            return Err(err(format!(
                "num_heads {heads} is not a multiple of kv_num_heads {kv_heads}"
            )));
        }
        let scale: Option<f32> = info.get("scale");
        Ok(GqaKernel {
            heads,
            kv_heads,
            scale: scale.filter(|s| *s != 0.0),
            threads: self.threads.max(1),
        })
    }
}

fn err(message: impl std::fmt::Display) -> ort::Error {
    ort::Error::new(format!("GroupQueryAttention (moed kernel): {message}"))
}

fn kernel_err(e: KernelError) -> ort::Error {
    err(e)
}

/// A dimension of a tensor shape as a size.
fn dim(shape: &[i64], i: usize, what: &str) -> ort::Result<usize> {
    shape
        .get(i)
        .and_then(|&d| usize::try_from(d).ok())
        .ok_or_else(|| err(format!("{what} has shape {shape:?}")))
}

impl Kernel for GqaKernel {
    // ONNX Runtime may call one kernel from concurrent runs of its session; `compute` only reads
    // `self`.
    fn compute(&mut self, ctx: &ComputeContext) -> ort::Result<()> {
        CALLS.fetch_add(1, Relaxed);
        let input = |i: usize, what: &str| {
            ctx.input(i)?
                .ok_or_else(|| err(format!("input `{what}` is missing")))
        };
        let (q, k, v) = (input(0, "query")?, input(1, "key")?, input(2, "value")?);
        let (pk, pv) = (input(3, "past_key")?, input(4, "past_value")?);
        let total = input(6, "total_sequence_length")?;
        let (q_shape, q) = q.try_extract_tensor::<f32>()?;
        let (k_shape, k) = k.try_extract_tensor::<f32>()?;
        let (_, v) = v.try_extract_tensor::<f32>()?;
        let (past_shape, past_k) = pk.try_extract_tensor::<f32>()?;
        let (_, past_v) = pv.try_extract_tensor::<f32>()?;
        let (_, total) = total.try_extract_tensor::<i32>()?;
        // Batch 1 only: moed runs one sequence per call.
        if dim(q_shape, 0, "query")? != 1 || dim(past_shape, 0, "past_key")? != 1 {
            return Err(err("only batch 1 is supported"));
        }
        let tokens = dim(q_shape, 1, "query")?;
        let head_dim = dim(q_shape, 2, "query")? / self.heads;
        if dim(k_shape, 1, "key")? != tokens
            || dim(past_shape, 1, "past_key")? != self.kv_heads
            || dim(past_shape, 3, "past_key")? != head_dim
        {
            return Err(err(format!(
                "shapes disagree: query {q_shape:?}, key {k_shape:?}, past {past_shape:?}"
            )));
        }
        let capacity = dim(past_shape, 2, "past_key")?;
        let total = total
            .first()
            .and_then(|&t| usize::try_from(t).ok())
            .ok_or_else(|| err("total_sequence_length is missing or negative"))?;
        let past = total
            .checked_sub(tokens)
            .filter(|&p| p <= capacity)
            .ok_or_else(|| {
                err(format!(
                    "total_sequence_length {total} does not fit {tokens} new rows after a cache of {capacity}"
                ))
            })?;
        let shape = AttentionShape {
            heads: self.heads,
            kv_heads: self.kv_heads,
            head_dim,
            tokens,
            past,
            capacity,
            scale: self.scale.unwrap_or(1.0 / (head_dim.max(1) as f32).sqrt()),
        };
        let mut out = ctx
            .output(0, q_shape.to_vec())?
            .ok_or_else(|| err("no output"))?;
        let (_, out) = out.try_extract_tensor_mut::<f32>()?;
        let failed = AtomicBool::new(false);
        let pool = OrtPool {
            ctx,
            threads: self.threads,
            failed: &failed,
        };
        let x = AttentionInput {
            q,
            k_new: k,
            v_new: v,
            past_k,
            past_v,
        };
        moed_kernels::attention(&shape, &x, out, &pool).map_err(kernel_err)?;
        if failed.into_inner() {
            return Err(err("the intra-op pool refused the work"));
        }
        Ok(())
    }
}
