//! Guest SDK for moed plugins: the WIT bindings of one world per kind (enable exactly one of the
//! features `gate`, `filter`, `retrieval`), small wrappers over the host imports, and helpers that
//! several plugins share (the native routing rule, the output hold-back window).
//!
//! A gate plugin is then one short file:
//!
//! ```ignore
//! use moed_plugin_sdk::gate::{Guest, ModelRouting, RouteRequest, Routing};
//! struct MyGate;
//! impl Guest for MyGate {
//!     fn init(model: ModelRouting) -> Result<(), String> { ... }
//!     fn route(request: RouteRequest) -> Result<Routing, String> { ... }
//! }
//! moed_plugin_sdk::export_gate!(MyGate);
//! ```

extern crate self as moed_plugin_sdk;

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

#[cfg(any(
    all(feature = "gate", feature = "filter"),
    all(feature = "gate", feature = "retrieval"),
    all(feature = "filter", feature = "retrieval"),
))]
compile_error!("enable exactly one of the features gate, filter, retrieval (one kind per plugin)");

#[cfg(not(any(feature = "gate", feature = "filter", feature = "retrieval")))]
compile_error!("enable one of the features gate, filter, retrieval");

/// The generated bindings of this plugin's world.
#[cfg(feature = "gate")]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit/v0.1",
        world: "gate",
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "moed_plugin_sdk::bindings",
        runtime_path: "moed_plugin_sdk::__wit_bindgen::rt",
    });
}

#[cfg(feature = "filter")]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit/v0.1",
        world: "filter",
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "moed_plugin_sdk::bindings",
        runtime_path: "moed_plugin_sdk::__wit_bindgen::rt",
    });
}

#[cfg(feature = "retrieval")]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit/v0.1",
        world: "retrieval",
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "moed_plugin_sdk::bindings",
        runtime_path: "moed_plugin_sdk::__wit_bindgen::rt",
    });
}

pub mod host;
pub use host::{alerts, config, kv, log, param, param_json};

#[cfg(feature = "gate")]
pub mod gate;
#[cfg(feature = "gate")]
pub mod routing;

#[cfg(feature = "filter")]
pub mod filter;

#[cfg(feature = "retrieval")]
pub mod retrieval;

/// Exports the type implementing this plugin's `Guest` trait (any kind).
#[macro_export]
macro_rules! export_plugin {
    ($ty:ident) => {
        $crate::bindings::export!($ty with_types_in $crate::bindings);
    };
}

/// Exports a gate plugin (`impl moed_plugin_sdk::gate::Guest`).
#[cfg(feature = "gate")]
#[macro_export]
macro_rules! export_gate {
    ($ty:ident) => {
        $crate::export_plugin!($ty);
    };
}

/// Exports a filter plugin (`impl moed_plugin_sdk::filter::Guest`).
#[cfg(feature = "filter")]
#[macro_export]
macro_rules! export_filter {
    ($ty:ident) => {
        $crate::export_plugin!($ty);
    };
}

/// Exports a retrieval plugin (`impl moed_plugin_sdk::retrieval::Guest`).
#[cfg(feature = "retrieval")]
#[macro_export]
macro_rules! export_retrieval {
    ($ty:ident) => {
        $crate::export_plugin!($ty);
    };
}
