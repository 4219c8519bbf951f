//! Plugins as the daemon holds them: what to load ([`PluginSpec`]), the host that loads them into
//! one engine ([`PluginHost`]), and the handle ([`Plugin`]) whose code a reload swaps atomically;
//! calls in flight hold the old code and finish on it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, RwLock};

use serde_json::{Map, Value};

use crate::cache::Compiled;
use crate::capability::Grant;
use crate::error::LoadError;
use crate::loaded::{Loaded, load};
use crate::manifest::{Kind, Manifest};
use crate::runtime::{HostOptions, Runtime, Services};

/// What to load: the manifest, the component, the administrator's grant and configuration.
#[derive(Debug, Clone)]
pub struct PluginSpec {
    pub manifest: Manifest,
    pub wasm: PathBuf,
    pub grant: Grant,
    pub config: Map<String, Value>,
}

impl PluginSpec {
    /// A plugin granted exactly what its manifest asks for, with default configuration (for
    /// vetted plugins; see [`Grant::as_requested`]).
    pub fn as_requested(manifest: Manifest, wasm: PathBuf) -> PluginSpec {
        PluginSpec {
            grant: Grant::as_requested(&manifest),
            manifest,
            wasm,
            config: Map::new(),
        }
    }
}

struct Slot {
    name: String,
    kind: Kind,
    rt: Arc<Runtime>,
    current: RwLock<Arc<Loaded>>,
    enabled: AtomicBool,
}

/// A loaded plugin; cheap to clone. Reloading swaps what it runs.
#[derive(Clone)]
pub struct Plugin(Arc<Slot>);

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.0.name)
            .field("kind", &self.0.kind)
            .finish_non_exhaustive()
    }
}

/// A plugin's state for `Plugins.List` and the logs.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PluginStatus {
    pub name: String,
    pub version: String,
    pub kind: Kind,
    /// `moed:plugin` version it was built against.
    pub interface: String,
    /// Whether the administrator has it enabled.
    pub enabled: bool,
    /// Why the host disabled it after repeated failures (cleared by reload or enable).
    pub disabled_reason: Option<String>,
    pub consecutive_failures: u32,
    pub calls: u64,
    pub failures: u64,
    pub mean_call_us: f64,
    /// Whether the compiled code came from the cache.
    pub compiled_from_cache: bool,
}

impl Plugin {
    pub fn name(&self) -> &str {
        &self.0.name
    }

    pub fn kind(&self) -> Kind {
        self.0.kind
    }

    /// Whether both handles are the same loaded plugin (a reload keeps the handle; installing
    /// again under the same name makes a new one).
    pub fn same(&self, other: &Plugin) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    pub(crate) fn current(&self) -> Arc<Loaded> {
        self.0
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn runtime(&self) -> &Runtime {
        &self.0.rt
    }

    /// The data source labels its grant names, and the registry they are looked up in.
    pub fn granted_sources(&self) -> (Vec<String>, Arc<crate::sources::Sources>) {
        let cur = self.current();
        (
            crate::capability::granted_sources(&cur.ctx.grant).to_vec(),
            self.0.rt.services.sources.clone(),
        )
    }

    pub fn is_enabled(&self) -> bool {
        self.0.enabled.load(Relaxed)
    }

    /// The administrator's switch. Enabling also clears a disable after repeated failures.
    pub fn set_enabled(&self, on: bool) {
        self.0.enabled.store(on, Relaxed);
        if on {
            let cur = self.current();
            *cur.health
                .disabled
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = None;
            cur.health.consecutive.store(0, Relaxed);
        }
    }

    pub fn status(&self) -> PluginStatus {
        let cur = self.current();
        let h = &cur.health;
        let calls = h.calls.load(Relaxed);
        PluginStatus {
            name: self.0.name.clone(),
            version: cur.manifest.version.clone(),
            kind: self.0.kind,
            interface: cur.interface_version.clone(),
            enabled: self.is_enabled(),
            disabled_reason: h.disabled(),
            consecutive_failures: h.consecutive.load(Relaxed),
            calls,
            failures: h.failures.load(Relaxed),
            mean_call_us: if calls == 0 {
                0.0
            } else {
                h.nanos.load(Relaxed) as f64 / calls as f64 / 1000.0
            },
            compiled_from_cache: cur.compiled == Compiled::Cached,
        }
    }
}

/// Loads plugins into one shared engine.
pub struct PluginHost {
    rt: Arc<Runtime>,
}

impl PluginHost {
    pub fn new(options: HostOptions, services: Services) -> Result<PluginHost, LoadError> {
        Ok(PluginHost {
            rt: Arc::new(Runtime::new(options, services).map_err(LoadError::Host)?),
        })
    }

    /// The services plugins reach (register data sources here).
    pub fn services(&self) -> &Services {
        &self.rt.services
    }

    /// Forgets the compiled code of the component `wasm` (after a refused installation; the next
    /// load of the same component compiles it again).
    pub fn discard_compiled(&self, wasm: &[u8]) {
        if let Some(cache) = &self.rt.cache {
            cache.discard(wasm);
        }
    }

    /// Loads a plugin: every check happens here, before any request reaches it.
    pub fn load(&self, spec: &PluginSpec) -> Result<Plugin, LoadError> {
        let loaded = load(&self.rt, spec)?;
        Ok(Plugin(Arc::new(Slot {
            name: spec.manifest.name.clone(),
            kind: spec.manifest.kind,
            rt: self.rt.clone(),
            current: RwLock::new(Arc::new(loaded)),
            enabled: AtomicBool::new(true),
        })))
    }

    /// Loads `spec` completely, then swaps it in; calls in flight finish on the old code. On any
    /// error the old code stays.
    pub fn reload(&self, plugin: &Plugin, spec: &PluginSpec) -> Result<(), LoadError> {
        if spec.manifest.name != plugin.0.name || spec.manifest.kind != plugin.0.kind {
            return Err(LoadError::Interface {
                plugin: plugin.0.name.clone(),
                message: format!(
                    "a reload must keep the name and kind ({} {}), got {} {}",
                    plugin.0.name, plugin.0.kind, spec.manifest.name, spec.manifest.kind
                ),
            });
        }
        let loaded = Arc::new(load(&self.rt, spec)?);
        *plugin.0.current.write().unwrap_or_else(|p| p.into_inner()) = loaded;
        Ok(())
    }
}
