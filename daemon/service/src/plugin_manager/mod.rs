//! The daemon's plugins: one [`PluginHost`] whose services are the state store's key-value
//! trees, the daemon's data sources and [`DaemonEvents`]; the plugins of `[plugins] filters`
//! (loaded at start, fatal when they cannot be) and those an administrator installed (files
//! under `$STATE/plugins/NAME/`, registry in the state store; one that cannot be loaded at start
//! is logged and listed as broken); and the [`PluginSet`] requests take, rebuilt and swapped on
//! every change. Managing operations are blocking (files, compilation, flushes): call them on
//! the blocking pool. One lock serializes them. Answers are [`PluginDetails`]; an adapter puts
//! them into its own shape.

mod events;
mod info;
mod install;
mod manage;
pub mod settings;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use moed_plugins::{
    Failure, Grant, HostOptions, Kind, LoadError, Manifest, Plugin, PluginHost, PluginSpec,
    Services, Sources,
};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

pub use events::DaemonEvents;
pub use info::{PluginDetails, PluginOrigin, PluginState};
pub use install::{InstallOptions, Package};
use settings::{Effective, Recorded, effective};

use crate::ServiceError;
use crate::config::{PluginSettings, PluginsConfig};
use crate::plugin_set::{ActivePlugin, PluginSet};
use crate::plugins::MANIFEST_FILE;
use crate::state::{PluginRecord, StateError, StateStore};

/// Where an installed plugin's component lives inside its directory (next to [`MANIFEST_FILE`]).
const COMPONENT_FILE: &str = "plugin.wasm";

#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error("plugin host: {0}")]
    Host(String),
    /// A plugin of `plugins.filters` cannot be loaded: the daemon does not start without it.
    #[error("plugin filter {path}: {message}")]
    Configured { path: String, message: String },
    #[error("plugin directory {}: {message}", dir.display())]
    Dir { dir: PathBuf, message: String },
    #[error(transparent)]
    State(#[from] StateError),
}

#[derive(Clone)]
pub(crate) enum Origin {
    /// Installed by an administrator; its record as stored (boxed: with serde_json's
    /// `preserve_order`, which llguidance turns on, its config map makes it the largest variant).
    Installed(Box<PluginRecord>),
    /// `plugins.filters[rank]`; `enabled` is the administrator's switch until the next start.
    Configured {
        path: PathBuf,
        rank: u32,
        enabled: bool,
    },
}

pub(crate) struct Entry {
    origin: Origin,
    manifest: Option<Manifest>,
    plugin: Option<Plugin>,
    load_error: Option<String>,
    /// The settings it runs with (or would, once loaded).
    effective: Option<Effective>,
}

struct Inner {
    entries: BTreeMap<String, Entry>,
    /// `[plugins.NAME]` tables of the configuration.
    settings: BTreeMap<String, PluginSettings>,
}

pub struct PluginManager {
    host: PluginHost,
    state: StateStore,
    /// `$STATE/plugins`.
    root: PathBuf,
    current: Arc<RwLock<Arc<PluginSet>>>,
    inner: Mutex<Inner>,
}

/// What a failed load means for a client: the plugin's fault (its files, its grant) is
/// `InvalidArgument`, the host's is `Failed`, start-up code that failed is `PluginFailed`.
pub(crate) fn load_error(err: LoadError) -> ServiceError {
    match err {
        LoadError::Read { .. } | LoadError::Host(_) => ServiceError::Failed(err.to_string()),
        LoadError::Start { .. } => ServiceError::PluginFailed(err.to_string()),
        _ => ServiceError::InvalidArgument(err.to_string()),
    }
}

fn state_error(e: StateError) -> ServiceError {
    ServiceError::Failed(format!("the state store: {e}"))
}

/// Where compiled plugins are cached: `$CACHE_DIRECTORY/plugins` under systemd
/// (`CacheDirectory=moed`), else `STATE/cache/plugins`.
pub fn cache_dir(state_dir: &Path) -> PathBuf {
    std::env::var_os("CACHE_DIRECTORY")
        .and_then(|dirs| {
            dirs.to_string_lossy()
                .split(':')
                .find(|d| !d.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| state_dir.join("cache"))
        .join("plugins")
}

impl PluginManager {
    /// Starts the host and loads every plugin; returns the manager and the failures the host
    /// reports (for the `PluginFailed` signal).
    pub fn open(
        state: &StateStore,
        config: &PluginsConfig,
        sources: Arc<Sources>,
        cache_dir: PathBuf,
    ) -> Result<(PluginManager, UnboundedReceiver<Failure>), ManagerError> {
        let root = state.dir().join("plugins");
        install::prepare_root(&root)?;
        let current = Arc::new(RwLock::new(Arc::new(PluginSet::default())));
        let (tx, rx) = unbounded_channel();
        let events = Arc::new(DaemonEvents::new(state.clone(), current.clone(), tx));
        let options = HostOptions {
            cache_dir: Some(cache_dir),
            ..HostOptions::default()
        };
        let services = Services {
            kv: Some(Arc::new(state.plugin_kv())),
            sources,
            events,
        };
        let host =
            PluginHost::new(options, services).map_err(|e| ManagerError::Host(e.to_string()))?;
        let manager = PluginManager {
            host,
            state: state.clone(),
            root,
            current,
            inner: Mutex::new(Inner {
                entries: BTreeMap::new(),
                settings: config.settings.clone(),
            }),
        };
        {
            let mut inner = manager.lock();
            manager.load_configured(&mut inner, &config.filters)?;
            manager.load_installed(&mut inner)?;
            for name in inner.settings.keys() {
                if !inner.entries.contains_key(name) {
                    log::info!(
                        "configuration: [plugins.{name}] applies once plugin '{name}' is installed"
                    );
                }
            }
            manager.publish(&inner);
        }
        Ok((manager, rx))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The plugins enabled now.
    pub fn set(&self) -> Arc<PluginSet> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn load_configured(&self, inner: &mut Inner, paths: &[PathBuf]) -> Result<(), ManagerError> {
        for (rank, path) in paths.iter().enumerate() {
            let fail = |message: String| ManagerError::Configured {
                path: path.display().to_string(),
                message,
            };
            let spec = crate::plugins::spec_from_path(path).map_err(|e| fail(e.to_string()))?;
            let name = spec.manifest.name.clone();
            if spec.manifest.kind != Kind::Filter {
                return Err(fail(format!("plugin '{name}' is not a filter plugin")));
            }
            if let Some(Entry {
                origin: Origin::Configured { path: other, .. },
                ..
            }) = inner.entries.get(&name)
            {
                return Err(fail(format!(
                    "plugin '{name}' is also listed as {}",
                    other.display()
                )));
            }
            let recorded = Recorded {
                enabled: true,
                always: Some(true),
                grant: spec.grant.clone(),
                config: Default::default(),
            };
            let eff = effective(spec.manifest.kind, &recorded, inner.settings.get(&name));
            let plugin = self
                .load_spec(&spec.manifest, &spec.wasm, &eff)
                .map_err(|e| fail(e.to_string()))?;
            log::info!("filter plugin '{name}' loaded from {}", path.display());
            inner.entries.insert(
                name,
                Entry {
                    origin: Origin::Configured {
                        path: path.clone(),
                        rank: rank as u32,
                        enabled: true,
                    },
                    manifest: Some(spec.manifest),
                    plugin: Some(plugin),
                    load_error: None,
                    effective: Some(eff),
                },
            );
        }
        Ok(())
    }

    fn load_installed(&self, inner: &mut Inner) -> Result<(), ManagerError> {
        for (name, record) in self.state.plugin_records()? {
            let record = match record {
                Ok(r) => r,
                Err(e) => {
                    log::error!("installed plugin '{name}' is not loaded: {e}");
                    continue;
                }
            };
            if inner.entries.contains_key(&name) {
                log::error!(
                    "installed plugin '{name}' is not loaded: plugins.filters names a plugin of the same name (remove one of them)"
                );
                continue;
            }
            let entry = self.load_entry(
                Origin::Installed(Box::new(record)),
                inner.settings.get(&name),
            );
            match &entry.load_error {
                Some(e) => log::error!("installed plugin '{name}' is not loaded: {e}"),
                None => log::info!(
                    "plugin '{name}' loaded from {}",
                    self.root.join(&name).display()
                ),
            }
            inner.entries.insert(name, entry);
        }
        Ok(())
    }

    /// Reads an installed plugin's files and loads it with its effective settings; a failure is
    /// kept in the entry.
    fn load_entry(&self, origin: Origin, file: Option<&PluginSettings>) -> Entry {
        let mut entry = Entry {
            origin,
            manifest: None,
            plugin: None,
            load_error: None,
            effective: None,
        };
        match self.entry_files(&entry) {
            Err(e) => entry.load_error = Some(e.to_string()),
            Ok((manifest, wasm)) => {
                let eff = effective(manifest.kind, &entry.recorded(&manifest), file);
                match self.load_spec(&manifest, &wasm, &eff) {
                    Ok(p) => entry.plugin = Some(p),
                    Err(e) => entry.load_error = Some(e.to_string()),
                }
                entry.manifest = Some(manifest);
                entry.effective = Some(eff);
            }
        }
        entry
    }

    /// The manifest (read now) and component path of an entry.
    fn entry_files(&self, entry: &Entry) -> Result<(Manifest, PathBuf), LoadError> {
        match &entry.origin {
            Origin::Installed(r) => {
                let dir = self.root.join(&r.name);
                let manifest = Manifest::from_file(&dir.join(MANIFEST_FILE))?;
                if manifest.name != r.name {
                    return Err(LoadError::Host(format!(
                        "{} names plugin '{}', but it is installed as '{}'",
                        dir.join(MANIFEST_FILE).display(),
                        manifest.name,
                        r.name
                    )));
                }
                Ok((manifest, dir.join(COMPONENT_FILE)))
            }
            Origin::Configured { path, .. } => {
                let spec = crate::plugins::spec_from_path(path)?;
                Ok((spec.manifest, spec.wasm))
            }
        }
    }

    fn spec(manifest: &Manifest, wasm: &Path, eff: &Effective) -> PluginSpec {
        PluginSpec {
            manifest: manifest.clone(),
            wasm: wasm.to_owned(),
            grant: eff.grant.clone(),
            config: eff.config.clone(),
        }
    }

    fn load_spec(
        &self,
        manifest: &Manifest,
        wasm: &Path,
        eff: &Effective,
    ) -> Result<Plugin, LoadError> {
        let plugin = self.host.load(&Self::spec(manifest, wasm, eff))?;
        plugin.set_enabled(eff.enabled);
        Ok(plugin)
    }

    /// Builds the set from the entries and swaps it in.
    fn publish(&self, inner: &Inner) {
        let configured = inner
            .entries
            .values()
            .filter(|e| matches!(e.origin, Origin::Configured { .. }))
            .count() as u32;
        let mut set = PluginSet::default();
        let mut next_installed = configured;
        for (name, e) in &inner.entries {
            let rank = match e.origin {
                Origin::Configured { rank, .. } => rank,
                Origin::Installed(_) => {
                    next_installed += 1;
                    next_installed - 1
                }
            };
            let (Some(plugin), Some(eff)) = (&e.plugin, &e.effective) else {
                continue;
            };
            if !eff.enabled {
                continue;
            }
            set.plugins.insert(
                name.clone(),
                ActivePlugin {
                    plugin: plugin.clone(),
                    always: eff.always,
                    rank,
                },
            );
        }
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(set);
    }
}

impl Entry {
    /// What was recorded for it: the registry's record, or a `plugins.filters` entry's defaults.
    fn recorded(&self, manifest: &Manifest) -> Recorded {
        match &self.origin {
            Origin::Installed(r) => Recorded {
                enabled: r.enabled,
                always: r.always,
                grant: r.grant.clone(),
                config: r.config.clone(),
            },
            Origin::Configured { enabled, .. } => Recorded {
                enabled: *enabled,
                always: Some(true),
                grant: Grant::as_requested(manifest),
                config: Default::default(),
            },
        }
    }
}

pub(crate) fn not_found(name: &str) -> ServiceError {
    ServiceError::NotFound(format!(
        "no plugin named '{name}' is installed or configured"
    ))
}
