//! moed: runs Mixture-of-Experts models split per layer on ONNX Runtime, computing only routed experts.

// The engine floor lives in its own crate; these names keep `moed::engine` and friends stable.
pub use moed_engine::{bytesize, engine, generate, ort_env, package, procmem, qmatmul, text};

// The transport-neutral core, likewise under its old names.
pub use moed_service::{config, knowledge, plugins, request, state};

pub mod bench;
pub mod cli;
pub mod serve;
