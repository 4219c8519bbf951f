//! Text handling: tokenizer, chat template, sampling, streaming detokenization, stop strings, thinking.

pub mod detok;
pub mod model;
pub mod pyjson;
pub mod sampler;
pub mod stop;
pub mod template;
pub mod thinking;
pub mod tokenizer;
