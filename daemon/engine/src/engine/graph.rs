//! One loaded ONNX graph: its session, the check of its inputs and outputs against the manifest,
//! and timed runs straight into the caller's buffers (the time inside ONNX Runtime feeds the bench's
//! outside-ORT share).

use std::ffi::{CString, c_char};
use std::sync::Mutex;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use ort::AsPointer;
use ort::session::Session;
use ort::sys::OrtValue;
use ort::value::{
    PrimitiveTensorElementType, TensorElementType, TensorRef, TensorRefMut, ValueType,
};

use super::EngineError;
use super::stats::Counters;
use crate::ort_env::{OrtRuntime, Provider};
use crate::package::Package;
use crate::qmatmul::{self, MatmulKernel};

/// A dimension of a tensor in a graph interface: the token dimension is dynamic, the rest fixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dim {
    Tokens,
    Fixed(usize),
}

#[derive(Debug, Clone)]
pub(crate) struct TensorSpec {
    pub name: String,
    pub elem: TensorElementType,
    pub dims: Vec<Dim>,
}

impl TensorSpec {
    pub fn f32(name: impl Into<String>, dims: Vec<Dim>) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            elem: TensorElementType::Float32,
            dims,
        }
    }
    pub fn i64(name: impl Into<String>, dims: Vec<Dim>) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            elem: TensorElementType::Int64,
            dims,
        }
    }
    /// `[T, width]` float32.
    pub fn rows(name: impl Into<String>, width: usize) -> TensorSpec {
        TensorSpec::f32(name, vec![Dim::Tokens, Dim::Fixed(width)])
    }
}

/// The interface FORMAT.md gives a graph kind.
#[derive(Debug, Clone)]
pub(crate) struct Interface {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

/// A session, the package-relative file it came from (used in every error) and its input and
/// output names, in the order of the interface it was checked against, ready for the C `Run`.
pub(crate) struct Graph {
    pub file: String,
    session: Session,
    input_names: Vec<CString>,
    output_names: Vec<CString>,
    /// Held around `Run` where the provider's kernels must not run concurrently; `None` on the CPU
    /// provider, whose runs of one session may overlap (see [`Graph::run`]).
    serial: Option<Mutex<()>>,
    /// Its attention runs moed's kernel, which attends several sequences in one run.
    pub segmented_attention: bool,
}

impl Graph {
    /// Creates the session for `rel` with `provider` and checks its interface.
    /// On the CPU provider with `matmul` active, the graph's quantized matmuls run moed's kernel.
    pub fn load(
        rt: &OrtRuntime,
        provider: Provider,
        matmul: MatmulKernel,
        pkg: &Package,
        rel: &str,
        iface: &Interface,
    ) -> Result<Graph, EngineError> {
        let load_err = |e: ort::Error| EngineError::Load {
            file: rel.to_string(),
            message: e.to_string(),
        };
        let builder = rt.session_builder(provider).map_err(load_err)?;
        let path = pkg.path(rel);
        if provider == Provider::Cpu {
            let edited = qmatmul::commit_with_moed_kernel(
                builder.clone(),
                &path,
                rt.intra_threads(),
                matmul.active(),
            )
            .map_err(|message| EngineError::Load {
                file: rel.to_string(),
                message,
            })?;
            if let Some(e) = edited {
                let mut graph = Graph::new(rel, e.session, provider, iface)?;
                graph.segmented_attention = e.segmented_attention;
                return Ok(graph);
            }
        }
        let mut builder = builder;
        let session = builder.commit_from_file(path).map_err(load_err)?;
        Graph::new(rel, session, provider, iface)
    }

    /// Creates a session from an in-memory model (the bench's overhead probe).
    pub fn from_memory(
        rt: &OrtRuntime,
        provider: Provider,
        name: &str,
        model: &[u8],
        iface: &Interface,
    ) -> Result<Graph, EngineError> {
        let load_err = |e: ort::Error| EngineError::Load {
            file: name.to_string(),
            message: e.to_string(),
        };
        let mut builder = rt.session_builder(provider).map_err(load_err)?;
        let session = builder.commit_from_memory(model).map_err(load_err)?;
        Graph::new(name, session, provider, iface)
    }

    fn new(
        rel: &str,
        session: Session,
        provider: Provider,
        iface: &Interface,
    ) -> Result<Graph, EngineError> {
        check_interface(rel, &session, iface)?;
        let c_names = |specs: &[TensorSpec]| {
            specs
                .iter()
                .map(|s| {
                    CString::new(s.name.as_str()).map_err(|_| EngineError::Interface {
                        file: rel.to_string(),
                        message: format!("the name `{}` contains a NUL byte", s.name),
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Graph {
            file: rel.to_string(),
            input_names: c_names(&iface.inputs)?,
            output_names: c_names(&iface.outputs)?,
            serial: (provider != Provider::Cpu).then(|| Mutex::new(())),
            segmented_attention: false,
            session,
        })
    }

    /// A borrowed input tensor of `shape` over `data`.
    pub fn input<'a, T>(
        &self,
        shape: &[i64],
        data: &'a [T],
    ) -> Result<TensorRef<'a, T>, EngineError>
    where
        T: PrimitiveTensorElementType + std::fmt::Debug + Clone + 'static,
    {
        TensorRef::from_array_view((shape.to_vec(), data)).map_err(|e| self.tensor_err(e))
    }

    /// An output tensor of `shape` that ONNX Runtime writes straight into `data`.
    pub fn output<'a>(
        &self,
        shape: &[i64],
        data: &'a mut [f32],
    ) -> Result<TensorRefMut<'a, f32>, EngineError> {
        TensorRefMut::from_array_view_mut((shape.to_vec(), data)).map_err(|e| self.tensor_err(e))
    }

    fn tensor_err(&self, e: ort::Error) -> EngineError {
        EngineError::Run {
            file: self.file.clone(),
            message: format!("could not build a tensor: {e}"),
        }
    }

    /// Runs the graph: `inputs` and `outputs` in the order of its interface, every output
    /// preallocated with the shape the run must produce (ONNX Runtime fails the run otherwise).
    /// Returns the wall time of the run in nanoseconds.
    pub fn run(
        &self,
        inputs: &[&dyn AsPointer<Sys = OrtValue>],
        outputs: &[&dyn AsPointer<Sys = OrtValue>],
        counters: &Counters,
    ) -> Result<u64, EngineError> {
        let nanos = self.run_uncounted(inputs, outputs)?;
        counters.ort_nanos.fetch_add(nanos, Relaxed);
        counters.ort_runs.fetch_add(1, Relaxed);
        Ok(nanos)
    }

    /// [`Graph::run`] without adding to the counters: for runs that overlap other runs, whose
    /// caller counts the wall time of them all once.
    pub fn run_uncounted(
        &self,
        inputs: &[&dyn AsPointer<Sys = OrtValue>],
        outputs: &[&dyn AsPointer<Sys = OrtValue>],
    ) -> Result<u64, EngineError> {
        if inputs.len() != self.input_names.len() || outputs.len() != self.output_names.len() {
            return Err(EngineError::Run {
                file: self.file.clone(),
                message: format!(
                    "{} inputs and {} outputs given, the graph has {} and {}",
                    inputs.len(),
                    outputs.len(),
                    self.input_names.len(),
                    self.output_names.len()
                ),
            });
        }
        let in_names: Vec<*const c_char> = self.input_names.iter().map(|n| n.as_ptr()).collect();
        let out_names: Vec<*const c_char> = self.output_names.iter().map(|n| n.as_ptr()).collect();
        let in_values: Vec<*const OrtValue> = inputs.iter().map(|v| v.ptr()).collect();
        let mut out_values: Vec<*mut OrtValue> =
            outputs.iter().map(|v| v.ptr().cast_mut()).collect();
        // A poisoned lock means a panic elsewhere mid-run; the session itself is still usable.
        let _serial = self
            .serial
            .as_ref()
            .map(|m| m.lock().unwrap_or_else(|p| p.into_inner()));
        let start = Instant::now();
        // SAFETY: every pointer is valid for the call: the session is owned by `self`; the names are
        // NUL-terminated strings owned by `self`, as many as the values (checked above); the input
        // and output values are live `OrtValue`s borrowed for the call, their data buffers borrowed
        // by the tensor views that own them (outputs mutably, so ONNX Runtime may write them).
        // Every output is preallocated, so `Run` replaces none of `out_values` and nothing leaks.
        // `Run` needs no exclusive access to the session: ONNX Runtime documents
        // `InferenceSession::Run` as safe to call from several threads at once, each call keeping
        // its state in its own execution frame. ort's `Session::run` takes `&mut self` because some
        // execution providers' kernels are not; for those `serial` is held (CPU kernels are).
        let status = unsafe {
            (ort::api().Run)(
                self.session.ptr().cast_mut(),
                std::ptr::null(),
                in_names.as_ptr(),
                in_values.as_ptr(),
                in_values.len(),
                out_names.as_ptr(),
                out_names.len(),
                out_values.as_mut_ptr(),
            )
        };
        // SAFETY: `status` is the status `Run` returned, owned by us from here.
        let result = unsafe { ort::Error::result_from_status(status) };
        let nanos = start.elapsed().as_nanos() as u64;
        result.map_err(|e| EngineError::Run {
            file: self.file.clone(),
            message: e.to_string(),
        })?;
        Ok(nanos)
    }
}

fn fmt_dims(dims: &[Dim]) -> String {
    let parts: Vec<String> = dims
        .iter()
        .map(|d| match d {
            Dim::Tokens => "T".to_string(),
            Dim::Fixed(n) => n.to_string(),
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

fn fmt_shape(shape: &[i64]) -> String {
    let parts: Vec<String> = shape
        .iter()
        .map(|&d| {
            if d < 0 {
                "?".to_string()
            } else {
                d.to_string()
            }
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

/// Compares a session's inputs and outputs with the interface FORMAT.md gives its graph kind.
pub(crate) fn check_interface(
    file: &str,
    session: &Session,
    iface: &Interface,
) -> Result<(), EngineError> {
    let err = |message: String| EngineError::Interface {
        file: file.to_string(),
        message,
    };
    for (kind, specs, outlets) in [
        ("input", &iface.inputs, session.inputs()),
        ("output", &iface.outputs, session.outputs()),
    ] {
        for outlet in outlets {
            if !specs.iter().any(|s| s.name == outlet.name()) {
                let expected: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
                return Err(err(format!(
                    "unexpected {kind} `{}` (this graph's {kind}s should be: {})",
                    outlet.name(),
                    expected.join(", ")
                )));
            }
        }
        for spec in specs {
            let Some(outlet) = outlets.iter().find(|o| o.name() == spec.name) else {
                return Err(err(format!("the graph has no {kind} `{}`", spec.name)));
            };
            let ValueType::Tensor { ty, shape, .. } = outlet.dtype() else {
                return Err(err(format!("{kind} `{}` is not a tensor", spec.name)));
            };
            if *ty != spec.elem {
                return Err(err(format!(
                    "{kind} `{}` has element type {ty:?}, expected {:?}",
                    spec.name, spec.elem
                )));
            }
            let mismatch = shape.len() != spec.dims.len()
                || shape.iter().zip(&spec.dims).any(|(&d, want)| match want {
                    // The token dimension must stay dynamic: a fixed one would fail on other lengths.
                    Dim::Tokens => d >= 0,
                    Dim::Fixed(n) => d >= 0 && d != *n as i64,
                });
            if mismatch {
                return Err(err(format!(
                    "shape mismatch: {kind} `{}` has shape {}, the manifest implies {}",
                    spec.name,
                    fmt_shape(shape),
                    fmt_dims(&spec.dims)
                )));
            }
        }
    }
    Ok(())
}
