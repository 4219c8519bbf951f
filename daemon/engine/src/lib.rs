//! moed-engine: model packages, the per-layer ONNX Runtime engine, text handling and generation.
//!
//! It knows no transport, async runtime, plugin host or database: the service and the command
//! line build on it, and a model can be run from any program that links only this crate.

pub mod bytesize;
pub mod engine;
pub mod generate;
pub mod gpu_libs;
pub mod ort_env;
pub mod package;
pub mod placement;
pub mod procmem;
pub mod qmatmul;
pub mod tensorrt_cache;
pub mod text;
