//! Text handling: tokenizer, chat template, sampling, output constraints, streaming detokenization, stop strings, thinking.

pub mod constraint;
pub mod detok;
pub mod model;
pub mod pyjson;
mod regex_size;
pub mod sampler;
pub mod stop;
pub mod template;
pub mod thinking;
mod token_trie;
pub mod tokenizer;
pub mod tools;
