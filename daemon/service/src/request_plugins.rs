//! The plugins one request goes through, chosen when it is admitted from the daemon's plugin set
//! (a snapshot kept until the request ends) and its options: `plugins` names plugins to add, a
//! gate among them routes the request, filters named run after those applied to every request,
//! retrieval plugins named replace those applied to every request; `plugin_params` go to all.

use std::sync::Arc;

use moed_plugins::{FilterPlugin, Kind, RetrievalPlugin};

use crate::ServiceError;
use crate::engine::Gate;
use crate::models::LoadedModel;
use crate::plugin_set::PluginSet;
use crate::plugins::WasmGate;

/// What a request asks of plugins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// Complete, Chat, Generate, GenerateChat: every kind.
    Generate { retrieval: bool },
    /// Score: a gate only.
    Score,
}

/// The plugins of one request.
#[derive(Default)]
pub struct RequestPlugins {
    pub gate: Option<Arc<WasmGate>>,
    pub filters: Vec<FilterPlugin>,
    pub retrieval: Vec<RetrievalPlugin>,
    /// `plugin_params`, given to every plugin of the request.
    pub params: Vec<(String, String)>,
    /// The snapshot they came from: plugins removed meanwhile stay loaded until the request ends.
    _set: Option<Arc<PluginSet>>,
}

impl RequestPlugins {
    /// The gate as the engine takes it.
    pub fn engine_gate(&self) -> Option<Arc<dyn Gate>> {
        self.gate.clone().map(|g| g as Arc<dyn Gate>)
    }
}

fn not_found(name: &str) -> ServiceError {
    ServiceError::NotFound(format!(
        "option 'plugins': no enabled plugin named '{name}'; `moectl plugins list` shows the installed plugins and whether each is enabled"
    ))
}

/// Chooses the request's plugins from `set`: every name in `names` must be an installed,
/// enabled plugin (`NotFound` otherwise); at most one gate (`InvalidArgument`).
pub fn resolve(
    set: Arc<PluginSet>,
    names: &[String],
    params: Vec<(String, String)>,
    model: &LoadedModel,
    usage: Use,
) -> Result<RequestPlugins, ServiceError> {
    let mut named_gate = None;
    let mut named_filters = Vec::new();
    let mut named_retrieval = Vec::new();
    for name in names {
        let active = set
            .get(name)
            .filter(|p| p.plugin.is_enabled())
            .ok_or_else(|| not_found(name))?;
        let plugin = &active.plugin;
        match (plugin.kind(), usage) {
            (Kind::Gate, _) => {
                if let Some(first) = named_gate.replace(plugin.clone()) {
                    return Err(ServiceError::InvalidArgument(format!(
                        "option 'plugins': at most one gate plugin routes a request; '{}' and '{name}' are both gates",
                        first.name()
                    )));
                }
            }
            (kind, Use::Score) => {
                return Err(ServiceError::InvalidArgument(format!(
                    "option 'plugins': Score uses gate plugins only; '{name}' is a {kind} plugin"
                )));
            }
            (Kind::Filter, _) => named_filters.push(plugin.clone()),
            (Kind::Retrieval, _) => named_retrieval.push(plugin.clone()),
        }
    }
    // A gate named routes the request; else the administrator's default gate, if any.
    let manifest = model.engine.package().manifest();
    let gate = match named_gate {
        Some(plugin) => {
            let gate = model
                .gates
                .gate(&plugin, manifest, params.clone())
                .map_err(|e| {
                    ServiceError::InvalidArgument(format!(
                        "option 'plugins': gate plugin '{}' cannot route model '{}': {e}",
                        plugin.name(),
                        model.name
                    ))
                })?;
            Some(Arc::new(gate))
        }
        None => set
            .always(Kind::Gate)
            .into_iter()
            .map(|p| p.plugin.clone())
            .find(|p| p.is_enabled())
            .and_then(|plugin| {
                // A default gate that cannot route this model (one without MoE layers) leaves
                // its requests to the model's own rule rather than failing them.
                match model.gates.gate(&plugin, manifest, params.clone()) {
                    Ok(gate) => Some(Arc::new(gate)),
                    Err(e) => {
                        log::warn!(
                            "default gate plugin '{}' does not route model '{}': {e}",
                            plugin.name(),
                            model.name
                        );
                        None
                    }
                }
            }),
    };
    let mut out = RequestPlugins {
        gate,
        params,
        ..RequestPlugins::default()
    };
    if let Use::Generate { retrieval } = usage {
        out.filters = set.always_filters();
        for p in &named_filters {
            if !out.filters.iter().any(|f| f.plugin().same(p))
                && let Some(f) = FilterPlugin::new(p)
            {
                out.filters.push(f);
            }
        }
        if retrieval {
            let chosen: Vec<_> = if named_retrieval.is_empty() {
                set.always(Kind::Retrieval)
                    .into_iter()
                    .map(|p| p.plugin.clone())
                    .collect()
            } else {
                named_retrieval
            };
            out.retrieval = chosen.iter().filter_map(RetrievalPlugin::new).collect();
        }
    }
    out._set = Some(set);
    Ok(out)
}
