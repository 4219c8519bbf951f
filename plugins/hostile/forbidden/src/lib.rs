//! Hostile fixture: a gate that tries to reach the network, read the clock and keep state in the
//! key-value store, none of which it is granted; the host must refuse it at load.

use moed_plugin_sdk::gate::{Guest, ModelRouting, RouteRequest, Routing};
use moed_plugin_sdk::kv;

struct Forbidden;

impl Guest for Forbidden {
    fn init(_: ModelRouting) -> Result<(), String> {
        let now = std::time::SystemTime::now();
        let _ = kv::set("started", format!("{now:?}").as_bytes());
        std::net::TcpStream::connect("203.0.113.1:443").map_err(|e| e.to_string())?;
        Ok(())
    }

    fn route(_: RouteRequest) -> Result<Routing, String> {
        Err("unreachable".into())
    }
}

moed_plugin_sdk::export_gate!(Forbidden);
