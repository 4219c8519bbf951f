//! The retrieval world's types, the trait a retrieval plugin implements, and the data sources.

pub use crate::bindings::exports::moed::plugin::retriever::Guest;
pub use crate::bindings::moed::plugin::sources::{SourceError, labels, search};
pub use crate::bindings::moed::plugin::types::Document;
