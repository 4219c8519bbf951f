//! The plugins enabled now, as one immutable snapshot a request takes at admission: those
//! installed through the plugin manager and those of `[plugins] filters`, each with whether it
//! applies to every request. The plugin manager builds a new snapshot on every change (install,
//! enable, disable, remove, reload, configure) and swaps it in whole, so a request sees one
//! consistent set from start to end; a reload inside a plugin's handle keeps calls in flight on
//! the old code (the host does that).

use std::collections::BTreeMap;

use moed_plugins::{FilterPlugin, Kind, Plugin};

/// The enabled plugins by name.
#[derive(Default)]
pub struct PluginSet {
    pub plugins: BTreeMap<String, ActivePlugin>,
}

pub struct ActivePlugin {
    pub plugin: Plugin,
    /// Applied to every request without being named (filters and retrieval by default; a gate
    /// only when the administrator made it the default).
    pub always: bool,
    /// Order among the plugins of one kind that a request goes through (filters run in this
    /// order): `[plugins] filters` first, as configured, then installed plugins by name.
    pub rank: u32,
}

impl PluginSet {
    pub fn get(&self, name: &str) -> Option<&ActivePlugin> {
        self.plugins.get(name)
    }

    /// The plugins of `kind` applied to every request, in [`ActivePlugin::rank`] order.
    pub fn always(&self, kind: Kind) -> Vec<&ActivePlugin> {
        let mut out: Vec<&ActivePlugin> = self
            .plugins
            .values()
            .filter(|p| p.always && p.plugin.kind() == kind)
            .collect();
        out.sort_by_key(|p| p.rank);
        out
    }

    /// The filters applied to every request, in order.
    pub fn always_filters(&self) -> Vec<FilterPlugin> {
        self.always(Kind::Filter)
            .into_iter()
            .filter_map(|p| FilterPlugin::new(&p.plugin))
            .collect()
    }

    /// The plugins of `kind` named in `names` plus those applied always, in rank order, each
    /// once; a name that is not enabled, or of another kind, is skipped (the caller checks names
    /// first with [`PluginSet::get`]).
    pub fn for_request(&self, kind: Kind, names: &[String]) -> Vec<&ActivePlugin> {
        let mut out: Vec<&ActivePlugin> = self
            .plugins
            .iter()
            .filter(|(name, p)| {
                p.plugin.kind() == kind && (p.always || names.iter().any(|n| n == *name))
            })
            .map(|(_, p)| p)
            .collect();
        out.sort_by_key(|p| p.rank);
        out
    }
}
