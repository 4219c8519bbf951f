//! The gate world's types and the trait a gate plugin implements.

pub use crate::bindings::exports::moed::plugin::gating::{
    GroupLimit, GroupScore, Guest, MaskedChoice, ModelRouting, RouteRequest, Routing, Scoring,
};
