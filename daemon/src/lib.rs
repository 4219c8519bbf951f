//! moed: runs Mixture-of-Experts models split per layer on ONNX Runtime, computing only routed experts.

pub mod bench;
pub mod cli;
pub mod config;
pub mod engine;
pub mod generate;
pub mod knowledge;
pub mod ort_env;
pub mod package;
pub mod plugins;
pub mod procmem;
pub mod serve;
pub mod state;
pub mod text;
