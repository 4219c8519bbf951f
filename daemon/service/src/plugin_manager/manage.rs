//! Changing an installed (or configured) plugin: enable, disable, reload, configure, remove, and
//! the configuration file's settings after SIGHUP. Every change is recorded (and flushed) before
//! the new set is published and the caller answered; a reload is complete before it is swapped in,
//! and requests in flight finish on what they started with.

use serde_json::{Map, Value};

use super::settings::{Effective, check_not_pinned, effective, json_object};
use super::{
    Entry, Inner, Origin, PluginDetails, PluginManager, load_error, not_found, state_error,
};
use crate::ServiceError;
use crate::config::PluginSettings;

impl PluginManager {
    fn entry_mut<'a>(inner: &'a mut Inner, name: &str) -> Result<&'a mut Entry, ServiceError> {
        inner.entries.get_mut(name).ok_or_else(|| not_found(name))
    }

    fn reply(&self, inner: &Inner, name: &str) -> Result<PluginDetails, ServiceError> {
        self.publish(inner);
        let e = Self::entry(inner, name)?;
        Ok(self.describe(inner, name, e))
    }

    /// Switches a plugin on or off. On also clears a disable after repeated failures; a plugin
    /// that could not be loaded is loaded again first.
    pub fn set_enabled(&self, name: &str, on: bool) -> Result<PluginDetails, ServiceError> {
        let mut inner = self.lock();
        let file = inner.settings.get(name).cloned();
        Self::entry(&inner, name)?;
        check_not_pinned(name, file.as_ref(), "enabled")?;
        let e = Self::entry_mut(&mut inner, name)?;
        match &mut e.origin {
            Origin::Installed(record) => {
                let mut changed = record.clone();
                changed.enabled = on;
                self.state
                    .put_plugin_record(&changed)
                    .map_err(state_error)?;
                *record = changed;
            }
            Origin::Configured { enabled, .. } => *enabled = on,
        }
        if e.plugin.is_none() && on {
            *e = self.load_entry(e.origin.clone(), file.as_ref());
            if let Some(err) = e.load_error.clone() {
                return Err(ServiceError::PluginFailed(format!(
                    "plugin '{name}' is enabled but cannot be loaded: {err}; fix it and call Reload"
                )));
            }
        }
        if let Some(eff) = &mut e.effective {
            eff.enabled = on;
        }
        if let Some(p) = &e.plugin {
            p.set_enabled(on);
        }
        log::info!(plugin = name; "plugin '{name}' {}", if on { "enabled" } else { "disabled" });
        self.reply(&inner, name)
    }

    /// Loads a plugin's files again with its settings and swaps the new code in (or loads it
    /// for the first time when it could not be loaded before). On failure the old code stays.
    pub fn reload(&self, name: &str) -> Result<PluginDetails, ServiceError> {
        let mut inner = self.lock();
        let file = inner.settings.get(name).cloned();
        let e = Self::entry_mut(&mut inner, name)?;
        self.reload_entry(name, e, file.as_ref(), None)?;
        log::info!(plugin = name; "plugin '{name}' reloaded");
        self.reply(&inner, name)
    }

    /// Reloads `e` with its settings, `config` replacing its recorded configuration when given.
    /// Returns the settings it now runs with.
    fn reload_entry(
        &self,
        name: &str,
        e: &mut Entry,
        file: Option<&PluginSettings>,
        config: Option<&Map<String, Value>>,
    ) -> Result<Effective, ServiceError> {
        let (manifest, wasm) = self.entry_files(e).map_err(load_error)?;
        let mut recorded = e.recorded(&manifest);
        if let Some(c) = config {
            recorded.config = c.clone();
        }
        let eff = effective(manifest.kind, &recorded, file);
        match &e.plugin {
            Some(plugin) => {
                if manifest.kind != plugin.kind() {
                    return Err(ServiceError::InvalidArgument(format!(
                        "plugin '{name}' is a {} plugin, its files on disk now say {}; install it again with option replace",
                        plugin.kind(),
                        manifest.kind
                    )));
                }
                self.host
                    .reload(plugin, &Self::spec(&manifest, &wasm, &eff))
                    .map_err(load_error)?;
                plugin.set_enabled(eff.enabled);
            }
            None => {
                let plugin = self.load_spec(&manifest, &wasm, &eff).map_err(load_error)?;
                e.plugin = Some(plugin);
                e.load_error = None;
            }
        }
        e.manifest = Some(manifest);
        e.effective = Some(eff.clone());
        Ok(eff)
    }

    /// Replaces an installed plugin's configuration (a JSON object, checked against its schema
    /// with the key named on error) and reloads it with it.
    pub fn configure(&self, name: &str, config_json: &str) -> Result<PluginDetails, ServiceError> {
        let mut inner = self.lock();
        let file = inner.settings.get(name).cloned();
        let e = Self::entry_mut(&mut inner, name)?;
        let Origin::Installed(record) = &e.origin else {
            return Err(ServiceError::InvalidArgument(format!(
                "plugin '{name}' comes from plugins.filters; set its configuration in [plugins.{name}.config] of the configuration file"
            )));
        };
        let mut record = record.clone();
        check_not_pinned(name, file.as_ref(), "config")?;
        let config = json_object("config_json", config_json)?;
        let manifest = e.manifest.as_ref().ok_or_else(|| {
            ServiceError::PluginFailed(format!(
                "plugin '{name}' cannot be loaded ({}); fix it and call Reload first",
                e.load_error
                    .as_deref()
                    .unwrap_or("its manifest is unreadable")
            ))
        })?;
        manifest
            .resolve_config(&config)
            .map_err(|err| ServiceError::InvalidArgument(err.to_string()))?;
        let previous = record.config.clone();
        self.reload_entry(name, e, file.as_ref(), Some(&config))?;
        record.config = config;
        if let Err(err) = self.state.put_plugin_record(&record) {
            // The store did not take it: back to the configuration it has recorded.
            let _ = self.reload_entry(name, e, file.as_ref(), Some(&previous));
            return Err(state_error(err));
        }
        e.origin = Origin::Installed(record);
        log::info!(plugin = name; "plugin '{name}' configured: {config_json}");
        self.reply(&inner, name)
    }

    /// Uninstalls a plugin: its record, files and key-value store. Requests in flight finish
    /// with it.
    pub fn remove(&self, name: &str) -> Result<(), ServiceError> {
        let mut inner = self.lock();
        match &Self::entry(&inner, name)?.origin {
            Origin::Configured { path, .. } => {
                return Err(ServiceError::InvalidArgument(format!(
                    "plugin '{name}' comes from plugins.filters ({}); remove it from the configuration and restart moed",
                    path.display()
                )));
            }
            Origin::Installed(_) => {}
        }
        self.state.remove_plugin_record(name).map_err(state_error)?;
        inner.entries.remove(name);
        self.publish(&inner);
        let dir = self.root.join(name);
        if let Err(e) = std::fs::remove_dir_all(&dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            log::warn!("plugin '{name}' removed, but {} stays: {e}", dir.display());
        }
        if let Err(e) = self.state.drop_plugin_kv(name) {
            log::warn!("plugin '{name}' removed, but its key-value store stays: {e}");
        }
        log::info!(plugin = name; "plugin '{name}' removed");
        Ok(())
    }

    /// Applies the configuration's `[plugins.NAME]` tables after SIGHUP: each plugin whose
    /// settings changed is reloaded with them (or keeps running as it was, with the error
    /// logged).
    pub fn apply_settings(&self, settings: &std::collections::BTreeMap<String, PluginSettings>) {
        let mut inner = self.lock();
        if inner.settings == *settings {
            return;
        }
        let old = std::mem::replace(&mut inner.settings, settings.clone());
        let names: Vec<String> = inner.entries.keys().cloned().collect();
        for name in names {
            let file = settings.get(&name);
            if old.get(&name) == file {
                continue;
            }
            let Some(e) = inner.entries.get_mut(&name) else {
                continue;
            };
            match self.reload_entry(&name, e, file, None) {
                Ok(_) => {
                    log::info!(plugin = name.as_str(); "plugin '{name}': settings of the configuration applied")
                }
                Err(err) => log::error!(
                    plugin = name.as_str();
                    "plugin '{name}': the configuration's settings are not applied: {err}"
                ),
            }
        }
        self.publish(&inner);
    }
}
