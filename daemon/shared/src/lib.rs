//! Code that moed's host side and its plugin SDK share. The SDK builds it for wasm32-wasip2, so it
//! has no dependencies and no I/O.

pub mod merge;
pub mod routing;
