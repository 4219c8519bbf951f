//! Host bindings generated from the WIT package, one module per `moed:plugin` minor version this
//! host links (plugins/wit/README.md). The import interfaces are generated once (`host-imports`)
//! and shared by the three worlds.

pub(crate) mod v0_1 {
    pub mod imports {
        wasmtime::component::bindgen!({
            path: "../wit/v0.1",
            world: "host-imports",
        });
    }

    /// One world's bindings, its imports taken from `imports` (plus the `extra` interfaces).
    macro_rules! world {
        ($name:ident, $world:tt $(, $extra:tt: $($path:ident)::+)*) => {
            mod $name {
                wasmtime::component::bindgen!({
                    path: "../wit/v0.1",
                    world: $world,
                    with: {
                        "moed:plugin/log": super::imports::moed::plugin::log,
                        "moed:plugin/config": super::imports::moed::plugin::config,
                        "moed:plugin/kv": super::imports::moed::plugin::kv,
                        "moed:plugin/alerts": super::imports::moed::plugin::alerts,
                        "moed:plugin/types": super::imports::moed::plugin::types,
                        $($extra: $($path)::+,)*
                    },
                });
            }
        };
    }

    world!(gate, "gate");
    world!(filter, "filter");
    world!(
        retrieval,
        "retrieval",
        "moed:plugin/sources": super::imports::moed::plugin::sources
    );

    pub use filter::exports::moed::plugin::filtering;
    pub use filter::{Filter, FilterPre};
    pub use gate::exports::moed::plugin::gating;
    pub use gate::{Gate, GatePre};
    pub use imports::moed::plugin::{alerts, config, kv, log, sources, types};
    pub use retrieval::{Retrieval, RetrievalPre};
}
