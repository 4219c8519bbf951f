//! What the manager says about a plugin (for listing and inspecting it): its manifest, its
//! settings, what the configuration file fixes, and the host's view (status, failures, call
//! statistics).

use std::path::PathBuf;

use moed_plugins::{Grant, Manifest, Plugin, PluginStatus};
use serde_json::{Map, Value};

use super::settings::pinned;
use super::{Entry, Inner, Origin, PluginManager, not_found};
use crate::ServiceError;

/// Where a plugin comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum PluginOrigin {
    /// Installed by an administrator: from `source` (a path, or `fd`), at `installed_at`
    /// (seconds since the Unix epoch).
    Installed { source: String, installed_at: f64 },
    /// A path of `plugins.filters` in the configuration.
    Configuration,
}

/// What a plugin is doing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginState {
    /// Enabled and loaded.
    Active,
    /// Switched off by the administrator.
    Disabled,
    /// Disabled by the host after repeated failures (the host's status says why).
    Failing,
    /// Could not be loaded (`load_error` says why).
    Broken,
}

/// One plugin as the manager describes it.
#[derive(Debug, Clone)]
pub struct PluginDetails {
    pub name: String,
    /// Its manifest; `None` when it could not be read.
    pub manifest: Option<Manifest>,
    pub origin: PluginOrigin,
    /// Where its files are now.
    pub path: PathBuf,
    pub state: PluginState,
    pub load_error: Option<String>,
    pub enabled: bool,
    /// Applied to every request without being named by it.
    pub always: bool,
    /// What it runs with (or would, once loaded); `None` when its manifest could not be read.
    pub granted: Option<Grant>,
    /// Its effective configuration, defaults filled in; `None` when its manifest could not be
    /// read.
    pub config: Option<Map<String, Value>>,
    /// Settings the configuration file fixes (`enabled`, `always`, `grant`, `config`).
    pub pinned: Vec<String>,
    /// The host's view of the loaded plugin; `None` when it is not loaded.
    pub host: Option<PluginStatus>,
}

impl PluginDetails {
    /// What its manifest asks for; `None` when the manifest could not be read.
    pub fn requested(&self) -> Option<Grant> {
        self.manifest.as_ref().map(Grant::as_requested)
    }
}

impl PluginManager {
    /// Every plugin, by name.
    pub fn list(&self) -> Vec<PluginDetails> {
        let inner = self.lock();
        inner
            .entries
            .iter()
            .map(|(name, e)| self.describe(&inner, name, e))
            .collect()
    }

    pub fn info(&self, name: &str) -> Result<PluginDetails, ServiceError> {
        let inner = self.lock();
        let e = Self::entry(&inner, name)?;
        Ok(self.describe(&inner, name, e))
    }

    pub(super) fn entry<'a>(inner: &'a Inner, name: &str) -> Result<&'a Entry, ServiceError> {
        inner.entries.get(name).ok_or_else(|| not_found(name))
    }

    pub(super) fn describe(&self, inner: &Inner, name: &str, e: &Entry) -> PluginDetails {
        let host = e.plugin.as_ref().map(Plugin::status);
        let eff = e.effective.as_ref();
        let (origin, path) = match &e.origin {
            Origin::Installed(r) => (
                PluginOrigin::Installed {
                    source: r.source.clone(),
                    installed_at: r.installed_at,
                },
                self.root.join(name),
            ),
            Origin::Configured { path, .. } => (PluginOrigin::Configuration, path.clone()),
        };
        let enabled = eff.is_some_and(|f| f.enabled);
        let state = if e.plugin.is_none() {
            PluginState::Broken
        } else if !enabled {
            PluginState::Disabled
        } else if host.as_ref().is_some_and(|s| s.disabled_reason.is_some()) {
            PluginState::Failing
        } else {
            PluginState::Active
        };
        // Shown as recorded when it no longer fits the schema (the manifest changed on disk).
        let config = match (&e.manifest, eff) {
            (Some(m), Some(f)) => Some(m.resolve_config(&f.config).unwrap_or(f.config.clone())),
            _ => None,
        };
        PluginDetails {
            name: name.to_string(),
            manifest: e.manifest.clone(),
            origin,
            path,
            state,
            load_error: e.load_error.clone(),
            enabled,
            always: eff.is_some_and(|f| f.always),
            granted: eff.map(|f| f.grant.clone()),
            config,
            pinned: pinned(inner.settings.get(name)),
            host,
        }
    }
}
