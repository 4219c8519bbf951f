//! moed-service: the daemon's transport-neutral core — configuration, persistent state, models,
//! scheduler, knowledge sources, the daemon's side of WASM plugins, and the [`Service`] that
//! runs requests through them.
//!
//! Nothing here knows D-Bus: errors are this crate's own, and strings sent later are bounded with
//! moed-wire. The `moed` binary's `serve/` adapts this core to the bus.

pub use error::ServiceError;
pub use service::{Service, ServiceEvent, ServiceEvents, ServiceStatus};

// The engine floor under the names the modules use (`crate::engine`, `crate::package`…).
use moed_engine::{bytesize, engine, generate, ort_env, package, text};

pub mod client_files;
pub mod clock;
pub mod config;
pub mod error;
pub mod knowledge;
pub mod metrics;
mod model_access;
pub mod models;
pub mod plugin_manager;
pub mod plugin_set;
pub mod plugins;
pub mod request;
pub mod request_plugins;
pub mod retrieval;
pub mod runner;
pub mod scheduler;
pub mod service;
pub mod state;
