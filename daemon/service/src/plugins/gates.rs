//! Gate plugins bound to one loaded model, kept across requests: a binding initializes the
//! plugin's instances for the model once, and each request gets a [`WasmGate`] over that binding
//! with its own parameters (and its own fallback count).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use moed_plugins::Plugin;

use super::{PluginsError, WasmGate};
use crate::package;

/// Per plugin name: the plugin handle the binding was made for, and the binding.
#[derive(Default)]
pub struct GateBindings {
    bound: Mutex<HashMap<String, (Plugin, Arc<WasmGate>)>>,
}

impl GateBindings {
    /// A gate for one request: `plugin` bound to the model `manifest` describes (reusing the
    /// binding when the same plugin was bound before), carrying `params`.
    pub fn gate(
        &self,
        plugin: &Plugin,
        manifest: &package::Manifest,
        params: Vec<(String, String)>,
    ) -> Result<WasmGate, PluginsError> {
        let mut bound = self.bound.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((held, gate)) = bound.get(plugin.name())
            && held.same(plugin)
        {
            return Ok(gate.with_params(params));
        }
        // A new plugin, or one installed again under the same name: bind afresh.
        let gate = Arc::new(WasmGate::new(plugin, manifest, Vec::new())?);
        let out = gate.with_params(params);
        bound.insert(plugin.name().to_owned(), (plugin.clone(), gate));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    /// One bound for every gate: the plugin host checks WASM answers against the engine's number.
    #[test]
    fn the_host_bounds_gate_weights_as_the_engine_does() {
        assert_eq!(crate::engine::MAX_WEIGHT, moed_plugins::gate::MAX_WEIGHT);
    }
}
