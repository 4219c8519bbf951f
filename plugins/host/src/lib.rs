//! WASM plugin host for moed: loads plugins built against the `moed:plugin` WIT package
//! (plugins/wit), checks their imports against the administrator's grant (one capability module),
//! runs them under per-kind memory and time limits, applies each kind's failure policy (gate:
//! the caller routes natively; filter: fail closed; retrieval: fail open with an alert), disables
//! a plugin after repeated failures, reloads plugins atomically and caches compiled code.
//!
//! This crate does not depend on the daemon: gates work on plain slices, and the daemon adapts
//! its own types (see `moed::plugins`).

mod bindings;
mod bounds;
mod cache;
pub mod capability;
mod error;
pub mod events;
pub mod filter;
pub mod gate;
pub mod kv;
mod loaded;
pub mod manifest;
mod params;
mod plugin;
pub mod retrieval;
mod runtime;
pub mod sources;
mod state;
mod stderr;

pub use cache::Compiled;
pub use capability::{CapabilityError, Grant};
pub use error::{CallFailure, LoadError};
pub use events::{Alert, Failure, HostEvents, LogEvents, Severity};
pub use filter::{FilterError, FilterPlugin, InputOutcome, OutputFilter, Released};
pub use gate::{
    GateAnswer, GateCall, GatePlugin, GroupLimit, GroupScore, MaskedChoice, ModelRouting, Scoring,
};
pub use manifest::{Kind, Manifest, ManifestError};
pub use params::named_param;
pub use plugin::{Plugin, PluginHost, PluginSpec, PluginStatus};
pub use retrieval::{RetrievalPlugin, Retrieved};
pub use runtime::{HostOptions, KindLimits, Services};
pub use sources::{DataSource, Document, MemoryDocuments, SourceError, Sources};
