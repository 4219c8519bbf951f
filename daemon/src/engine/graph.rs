//! One loaded ONNX graph: its session, the check of its inputs and outputs against the manifest,
//! and timed runs (the time inside ONNX Runtime feeds the bench's outside-ORT share).

use std::borrow::Cow;
use std::sync::Mutex;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, TensorElementType, ValueType};

use super::EngineError;
use super::stats::Counters;
use crate::ort_env::{OrtRuntime, Provider};
use crate::package::Package;

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

pub(crate) type Inputs<'v> = Vec<(Cow<'v, str>, SessionInputValue<'v>)>;

/// A session and the package-relative file it came from (used in every error).
pub(crate) struct Graph {
    pub file: String,
    session: Mutex<Session>,
    outputs: Vec<String>,
}

impl Graph {
    /// Creates the session for `rel` with `provider` and checks its interface.
    pub fn load(
        rt: &OrtRuntime,
        provider: Provider,
        pkg: &Package,
        rel: &str,
        iface: &Interface,
    ) -> Result<Graph, EngineError> {
        let load_err = |e: ort::Error| EngineError::Load {
            file: rel.to_string(),
            message: e.to_string(),
        };
        let mut builder = rt.session_builder(provider).map_err(load_err)?;
        let session = builder.commit_from_file(pkg.path(rel)).map_err(load_err)?;
        check_interface(rel, &session, iface)?;
        let outputs = session
            .outputs()
            .iter()
            .map(|o| o.name().to_string())
            .collect();
        Ok(Graph {
            file: rel.to_string(),
            session: Mutex::new(session),
            outputs,
        })
    }

    /// Runs the graph on named inputs. The outputs own their values, so the inputs' borrows end here.
    pub fn run(&self, inputs: Inputs<'_>, counters: &Counters) -> Result<Outputs<'_>, EngineError> {
        // A poisoned lock means a panic elsewhere mid-run; the session itself is still usable.
        let mut session = self.session.lock().unwrap_or_else(|p| p.into_inner());
        let start = Instant::now();
        let mut outputs = session.run(inputs).map_err(|e| EngineError::Run {
            file: self.file.clone(),
            message: e.to_string(),
        })?;
        let nanos = start.elapsed().as_nanos() as u64;
        counters.ort_nanos.fetch_add(nanos, Relaxed);
        counters.ort_runs.fetch_add(1, Relaxed);
        let values = self
            .outputs
            .iter()
            .map(|n| outputs.remove(n.as_str()))
            .collect();
        Ok(Outputs {
            graph: self,
            values,
            nanos,
        })
    }
}

/// A run's output values, in the order of the graph's outputs.
pub(crate) struct Outputs<'g> {
    graph: &'g Graph,
    values: Vec<Option<DynValue>>,
    /// Wall time of the `Session::run` call.
    pub nanos: u64,
}

impl Outputs<'_> {
    /// The f32 output `name` as a flat slice, checked to be `[rows, width]` (width = the product
    /// of the remaining dimensions).
    pub fn rows(&self, name: &str, rows: usize, width: usize) -> Result<&[f32], EngineError> {
        let out_err = |message: String| EngineError::Output {
            file: self.graph.file.clone(),
            output: name.to_string(),
            message,
        };
        let value = self
            .graph
            .outputs
            .iter()
            .position(|n| n == name)
            .and_then(|i| self.values[i].as_ref())
            .ok_or_else(|| out_err("is missing".into()))?;
        let (shape, data) = value
            .try_extract_tensor::<f32>()
            .map_err(|e| out_err(format!("is not a float32 tensor: {e}")))?;
        if shape.first().copied() != Some(rows as i64) || data.len() != rows * width {
            return Err(out_err(format!(
                "has shape {shape}, expected {rows} rows of {width} values"
            )));
        }
        Ok(data)
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
