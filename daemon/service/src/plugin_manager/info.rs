//! What `Plugins.List` and `Plugins.Info` say about a plugin: its manifest, its settings, what
//! the configuration file fixes, and the host's view (status, failures, call statistics).

use moed_dbus::{MoedError, PluginInfo};
use moed_plugins::{Grant, Plugin};

use super::settings::{grant_words, pinned};
use super::{Entry, Inner, Origin, PluginManager, not_found};

impl PluginManager {
    /// Every plugin, by name.
    pub fn list(&self) -> Vec<PluginInfo> {
        let inner = self.lock();
        inner
            .entries
            .iter()
            .map(|(name, e)| self.describe(&inner, name, e))
            .collect()
    }

    pub fn info(&self, name: &str) -> Result<PluginInfo, MoedError> {
        let inner = self.lock();
        let e = Self::entry(&inner, name)?;
        Ok(self.describe(&inner, name, e))
    }

    pub(super) fn entry<'a>(inner: &'a Inner, name: &str) -> Result<&'a Entry, MoedError> {
        inner.entries.get(name).ok_or_else(|| not_found(name))
    }

    pub(super) fn describe(&self, inner: &Inner, name: &str, e: &Entry) -> PluginInfo {
        let file = inner.settings.get(name);
        let status = e.plugin.as_ref().map(Plugin::status);
        let eff = e.effective.as_ref();
        let (origin, path, source, installed_at) = match &e.origin {
            Origin::Installed(r) => (
                "installed",
                self.root.join(name).display().to_string(),
                r.source.clone(),
                r.installed_at,
            ),
            Origin::Configured { path, .. } => (
                "configuration",
                path.display().to_string(),
                path.display().to_string(),
                0.0,
            ),
        };
        let enabled = eff.is_some_and(|f| f.enabled);
        let disabled_reason = status.as_ref().and_then(|s| s.disabled_reason.clone());
        let state = if e.plugin.is_none() {
            "broken"
        } else if !enabled {
            "disabled"
        } else if disabled_reason.is_some() {
            "failing"
        } else {
            "active"
        };
        let m = e.manifest.as_ref();
        let config = match (m, eff) {
            (Some(m), Some(f)) => m
                .resolve_config(&f.config)
                .map(|c| serde_json::Value::Object(c).to_string())
                .unwrap_or_else(|_| serde_json::Value::Object(f.config.clone()).to_string()),
            _ => "{}".into(),
        };
        PluginInfo {
            name: name.to_string(),
            version: m.map(|m| m.version.clone()).unwrap_or_default(),
            kind: m.map(|m| m.kind.to_string()).unwrap_or_default(),
            description: m.map(|m| m.description.clone()).unwrap_or_default(),
            enabled,
            always: eff.is_some_and(|f| f.always),
            status: state.to_string(),
            disabled_reason,
            load_error: e.load_error.clone(),
            origin: origin.to_string(),
            path,
            source,
            installed_at,
            granted: eff.map(|f| grant_words(&f.grant)).unwrap_or_default(),
            requested: m
                .map(|m| grant_words(&Grant::as_requested(m)))
                .unwrap_or_default(),
            config,
            config_schema: m
                .and_then(|m| serde_json::to_string(&m.config).ok())
                .unwrap_or_else(|| "{}".into()),
            pinned: pinned(file),
            interface: status
                .as_ref()
                .map(|s| s.interface.clone())
                .unwrap_or_default(),
            consecutive_failures: status.as_ref().map_or(0, |s| s.consecutive_failures),
            calls: status.as_ref().map_or(0, |s| s.calls),
            failures: status.as_ref().map_or(0, |s| s.failures),
            mean_call_us: status.as_ref().map_or(0.0, |s| s.mean_call_us),
            compiled_from_cache: status.as_ref().is_some_and(|s| s.compiled_from_cache),
        }
    }
}
