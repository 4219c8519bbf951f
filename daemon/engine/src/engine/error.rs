//! Errors of the engine: loading graphs, checking their interfaces, running a forward pass.

use crate::ort_env::OrtEnvError;
use crate::package::PackageError;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Package(#[from] PackageError),
    #[error(transparent)]
    Runtime(#[from] OrtEnvError),
    #[error(transparent)]
    MemoryLimit(#[from] super::memlimit::TooLarge),
    #[error("{file}: ONNX Runtime could not load the graph: {message}")]
    Load { file: String, message: String },
    #[error("{file}: {message}")]
    Interface { file: String, message: String },
    #[error("{file}: running the graph failed: {message}")]
    Run { file: String, message: String },
    #[error("{file}: output {output} {message}")]
    Output {
        file: String,
        output: String,
        message: String,
    },
    #[error(
        "context overflow: {cached} cached tokens + {new} new tokens = {} exceeds the model's context length of {context_length}",
        .cached + .new
    )]
    ContextOverflow {
        cached: usize,
        new: usize,
        context_length: usize,
    },
    #[error("forward called with no tokens")]
    NoTokens,
    #[error("token id {token} is outside the vocabulary (vocab_size {vocab})")]
    TokenOutOfRange { token: u32, vocab: usize },
    #[error("layer {layer}: gate error: {message}")]
    Gate { layer: usize, message: String },
    #[error("layer {layer}: the gate's answer is invalid: {message}")]
    InvalidRouting { layer: usize, message: String },
    #[error("this sequence was made by an engine with a different cache layout")]
    ForeignSequence,
    #[error("a batched step this request shared failed: {0}")]
    SharedStep(String),
    #[error("invalid engine option: {0}")]
    Options(String),
}
