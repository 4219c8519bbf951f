//! The ONNX Runtime custom operator `ai.moed.GroupQueryAttention`: GroupQueryAttention's inputs,
//! attributes and meaning for the graphs moed exports (rotary applied before it, batch 1, the
//! head-major cache as the past), computed by `moed_kernels::attention` from the cache in place.
//! The present outputs are not written: the engine appends the new rows itself. It is registered
//! once per cache type (f32, f16: FORMAT.md "KV cache types"); ONNX Runtime picks by the node's.
//!
//! A batched step runs one attention graph over the rows of several sequences: the engine then
//! names each sequence's rows and cache with [`with_segments`] around the run, and the kernel
//! attends each segment over its own cache instead of the (one) past the graph's inputs carry.

use std::borrow::Cow;
use std::cell::RefCell;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use moed_kernels::{AttentionInput, AttentionShape, KernelError, KvElem, f16};
use ort::operator::{
    ComputeContext, Kernel, KernelContext, Operator, OperatorInput, OperatorOutput,
};
use ort::value::TensorElementType;

use super::op::OrtPool;

pub(crate) const OP_NAME: &str = "GroupQueryAttention";

/// Calls of the kernel since the process started (what shows that it, not ONNX Runtime's, ran).
pub(crate) static CALLS: AtomicU64 = AtomicU64::new(0);

/// The element types the operator runs on: every float input and output is `E`.
pub(crate) trait GqaElem:
    KvElem + ort::value::PrimitiveTensorElementType + std::fmt::Debug + Clone
{
    const TYPE: TensorElementType;
    /// The values as f32: borrowed when they are.
    fn widen(v: &[Self]) -> Cow<'_, [f32]>;
    /// The slice as f32 where it is, so the kernel writes the output in place.
    fn as_f32_mut(v: &mut [Self]) -> Option<&mut [f32]>;
    /// A segment's cache buffer when it is of this type.
    fn cache<'a>(c: &SegmentCache<'a>) -> Option<&'a [Self]>;
}
impl GqaElem for f32 {
    const TYPE: TensorElementType = TensorElementType::Float32;
    fn widen(v: &[f32]) -> Cow<'_, [f32]> {
        Cow::Borrowed(v)
    }
    fn as_f32_mut(v: &mut [f32]) -> Option<&mut [f32]> {
        Some(v)
    }
    fn cache<'a>(c: &SegmentCache<'a>) -> Option<&'a [f32]> {
        match c {
            SegmentCache::F32(d) => Some(d),
            SegmentCache::F16(_) => None,
        }
    }
}
impl GqaElem for f16 {
    const TYPE: TensorElementType = TensorElementType::Float16;
    fn widen(v: &[f16]) -> Cow<'_, [f32]> {
        Cow::Owned(v.iter().map(|x| x.to_f32()).collect())
    }
    fn as_f32_mut(_: &mut [f16]) -> Option<&mut [f32]> {
        None
    }
    fn cache<'a>(c: &SegmentCache<'a>) -> Option<&'a [f16]> {
        match c {
            SegmentCache::F16(d) => Some(d),
            SegmentCache::F32(_) => None,
        }
    }
}

/// A head-major cache buffer `[kv_heads, capacity, head_dim]` in its type.
#[derive(Clone, Copy)]
pub(crate) enum SegmentCache<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
}

/// One sequence of a batched run: the next `rows` rows of the graph's tokens, after `past` rows
/// of its cache, whose buffers hold `capacity` rows per head.
#[derive(Clone, Copy)]
pub(crate) struct Segment<'a> {
    pub rows: usize,
    pub past: usize,
    pub capacity: usize,
    pub key: SegmentCache<'a>,
    pub value: SegmentCache<'a>,
}

/// The segments of the run in progress on this thread, lifetimes erased (see [`with_segments`]),
/// and how many attention nodes computed with them.
struct Installed {
    segments: Vec<Segment<'static>>,
    uses: usize,
}

thread_local! {
    static SEGMENTS: RefCell<Option<Installed>> = const { RefCell::new(None) };
}

/// Clears the installed segments however the run ends.
struct Uninstall;

impl Drop for Uninstall {
    fn drop(&mut self) {
        SEGMENTS.with(|s| s.borrow_mut().take());
    }
}

/// Runs `run` (one session run, on this thread) with `segments` as the sequences of every moed
/// attention node it computes; returns its result and how many nodes used them (0 means the
/// kernel did not run on this thread, so the output is not the batched one).
pub(crate) fn with_segments<R>(segments: &[Segment<'_>], run: impl FnOnce() -> R) -> (R, usize) {
    // SAFETY: the erased borrows are read only by the kernel during `run`, on this thread (ONNX
    // Runtime's sequential executor computes nodes on the calling thread), and `Uninstall`
    // removes them before this function returns, while `segments`' borrows are still alive.
    let erased: Vec<Segment<'static>> = segments
        .iter()
        .map(|s| unsafe { std::mem::transmute::<Segment<'_>, Segment<'static>>(*s) })
        .collect();
    SEGMENTS.with(|s| {
        *s.borrow_mut() = Some(Installed {
            segments: erased,
            uses: 0,
        })
    });
    let guard = Uninstall;
    let out = run();
    let uses = SEGMENTS.with(|s| s.borrow().as_ref().map_or(0, |i| i.uses));
    drop(guard);
    (out, uses)
}

/// The installed segments, counted as used, when a batched run is in progress on this thread.
fn installed() -> Option<Vec<Segment<'static>>> {
    SEGMENTS.with(|s| {
        s.borrow_mut().as_mut().map(|i| {
            i.uses += 1;
            i.segments.clone()
        })
    })
}

/// The operator for element type `E`; `threads` is the size of the intra-op pool its tasks run on.
pub(crate) struct MoedGqa<E> {
    pub threads: usize,
    pub elem: PhantomData<E>,
}

impl<E> MoedGqa<E> {
    pub(crate) fn new(threads: usize) -> MoedGqa<E> {
        MoedGqa {
            threads,
            elem: PhantomData,
        }
    }
}

pub(crate) struct GqaKernel<E> {
    heads: usize,
    kv_heads: usize,
    scale: Option<f32>,
    threads: usize,
    elem: PhantomData<E>,
}

impl<E: GqaElem> Operator for MoedGqa<E> {
    type Kernel<'attr> = GqaKernel<E>;

    fn name(&self) -> &str {
        OP_NAME
    }

    fn inputs(&self) -> impl IntoIterator<Item = OperatorInput> {
        let f = E::TYPE;
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
        let f = E::TYPE;
        [
            OperatorOutput::required(f),
            OperatorOutput::optional(f),
            OperatorOutput::optional(f),
        ]
    }

    fn create_kernel<'attr>(&self, info: &KernelContext<'attr>) -> ort::Result<GqaKernel<E>> {
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
            elem: PhantomData,
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

impl<E: GqaElem> Kernel for GqaKernel<E> {
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
        let (q_shape, q) = q.try_extract_tensor::<E>()?;
        let (k_shape, k) = k.try_extract_tensor::<E>()?;
        let (_, v) = v.try_extract_tensor::<E>()?;
        let (past_shape, past_k) = pk.try_extract_tensor::<E>()?;
        let (_, past_v) = pv.try_extract_tensor::<E>()?;
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
        let mut out_value = ctx
            .output(0, q_shape.to_vec())?
            .ok_or_else(|| err("no output"))?;
        let (_, out) = out_value.try_extract_tensor_mut::<E>()?;
        // The kernel computes in f32: an f16 query is widened (a few KB per token) and the
        // context narrowed back on the way out.
        let q = E::widen(q);
        let q = &*q;
        let mut out_wide = Vec::new();
        let out_f32: &mut [f32] = match E::as_f32_mut(out) {
            Some(o) => o,
            None => {
                out_wide.resize(q.len(), 0.0);
                &mut out_wide
            }
        };
        let failed = AtomicBool::new(false);
        let pool = OrtPool {
            ctx,
            threads: self.threads,
            failed: &failed,
        };
        match installed() {
            None => {
                let x = AttentionInput {
                    q,
                    k_new: k,
                    v_new: v,
                    past_k,
                    past_v,
                };
                moed_kernels::attention(&shape, &x, out_f32, &pool).map_err(kernel_err)?;
            }
            Some(segments) => {
                let widths = (self.heads * head_dim, self.kv_heads * head_dim);
                attend_segments::<E>(&segments, &shape, widths, (q, k, v), out_f32, &pool)?;
            }
        }
        if failed.into_inner() {
            return Err(err("the intra-op pool refused the work"));
        }
        if !out_wide.is_empty() {
            let (_, out) = out_value.try_extract_tensor_mut::<E>()?;
            for (o, v) in out.iter_mut().zip(&out_wide) {
                *o = E::from_f32(*v);
            }
        }
        Ok(())
    }
}

/// The batched form: each segment's rows of `q`, `k`, `v` (widths `q_width`, `kv_width` per row)
/// attend over that segment's cache, into its rows of `out`.
fn attend_segments<E: GqaElem>(
    segments: &[Segment<'_>],
    shape: &AttentionShape,
    (q_width, kv_width): (usize, usize),
    (q, k, v): (&[f32], &[E], &[E]),
    out: &mut [f32],
    pool: &OrtPool<'_>,
) -> ort::Result<()> {
    let total: usize = segments.iter().map(|s| s.rows).sum();
    if total != shape.tokens {
        return Err(err(format!(
            "the batch's segments hold {total} rows, the query {}",
            shape.tokens
        )));
    }
    let mut row = 0;
    for seg in segments {
        let (Some(past_k), Some(past_v)) = (E::cache(&seg.key), E::cache(&seg.value)) else {
            return Err(err("a segment's cache is not of the node's type"));
        };
        let per_head = shape.kv_heads * shape.head_dim;
        if seg.past > seg.capacity
            || past_k.len() < seg.capacity * per_head
            || past_v.len() < seg.capacity * per_head
        {
            return Err(err("a segment's cache is smaller than its capacity"));
        }
        let s = AttentionShape {
            tokens: seg.rows,
            past: seg.past,
            capacity: seg.capacity,
            ..*shape
        };
        let rows = row..row + seg.rows;
        let x = AttentionInput {
            q: &q[rows.start * q_width..rows.end * q_width],
            k_new: &k[rows.start * kv_width..rows.end * kv_width],
            v_new: &v[rows.start * kv_width..rows.end * kv_width],
            past_k,
            past_v,
        };
        let o = &mut out[rows.start * q_width..rows.end * q_width];
        moed_kernels::attention(&s, &x, o, pool).map_err(kernel_err)?;
        row = rows.end;
    }
    Ok(())
}
