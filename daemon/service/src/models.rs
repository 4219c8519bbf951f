//! The models the daemon knows: packages found in the model directories, the engines loaded from
//! them, the active one, and their expert statistics merged into the state store.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use crate::ServiceError;
use crate::client_files::Identity;
use crate::engine::{Engine, EngineOptions, EngineStats};
use crate::model_access::{self, caller_may_read};
use crate::package::Package;
use crate::state::{PersistedStats, StateStore};
use crate::text::model::TextModel;

/// An engine in memory, shared by the requests that use it.
pub struct LoadedModel {
    pub name: String,
    pub dir: PathBuf,
    /// Loaded by path for a client other than root, its files checked with that client's
    /// permissions: the service must not load that path again as itself (at the next start).
    pub path_of_client: bool,
    pub engine: Engine,
    /// Tokenizer, chat template and generation defaults of the same package.
    pub text: TextModel,
    /// The engine's counters at the last merge into the state store.
    merged: Mutex<EngineStats>,
    /// Gate plugins bound to this model for per-request routing.
    pub gates: crate::plugins::GateBindings,
}

impl LoadedModel {
    /// Adds the counters since the last merge (and `requests` finished requests) to the store,
    /// flushed: once this returns the numbers survive a crash. Then, between requests, the
    /// engine's GPU placement follows the new totals (a bounded number of experts move).
    pub fn persist_stats(
        &self,
        state: &StateStore,
        requests: u64,
    ) -> Result<PersistedStats, ServiceError> {
        let mut merged = self.merged.lock().unwrap_or_else(|p| p.into_inner());
        let now = self.engine.stats();
        let delta = now.since(&merged);
        let total = state
            .add_expert_stats(&self.name, &to_persisted(&delta, requests))
            .map_err(|e| ServiceError::Failed(e.to_string()))?;
        *merged = now;
        self.engine.revisit_placement(&total.activations);
        Ok(total)
    }

    /// Stored statistics plus what the engine counted since the last merge.
    pub fn current_stats(&self, state: &StateStore) -> Result<PersistedStats, ServiceError> {
        let merged = self.merged.lock().unwrap_or_else(|p| p.into_inner());
        let mut total = state
            .expert_stats(&self.name)
            .map_err(|e| ServiceError::Failed(e.to_string()))?
            .unwrap_or_default();
        total.add(&to_persisted(&self.engine.stats().since(&merged), 0));
        Ok(total)
    }

    /// Forgets stored statistics and starts counting from now.
    pub fn reset_stats(&self, state: &StateStore) -> Result<(), ServiceError> {
        let mut merged = self.merged.lock().unwrap_or_else(|p| p.into_inner());
        state
            .reset_expert_stats(&self.name)
            .map_err(|e| ServiceError::Failed(e.to_string()))?;
        *merged = self.engine.stats();
        Ok(())
    }
}

fn to_persisted(stats: &EngineStats, requests: u64) -> PersistedStats {
    PersistedStats {
        activations: stats.activations.clone(),
        cache_hits: stats.cache_hits,
        cache_misses: stats.cache_misses,
        cache_evictions: stats.cache_evictions,
        requests,
        tokens: stats.forward_tokens,
        expert_load_bytes: stats.expert_load_bytes,
        expert_load_nanos: stats.expert_load_nanos,
        storage_read_bytes: stats.storage_read_bytes,
        prefetch_guessed: stats.prefetch_guessed,
        prefetch_guessed_right: stats.prefetch_guessed_right,
        prefetch_chosen: stats.prefetch_chosen,
    }
}

/// A package found in the model directories, or loaded from a path: what `list` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelEntry {
    /// The package's directory name (what `load` takes).
    pub name: String,
    pub path: PathBuf,
    /// `manifest.json`'s architecture; empty when the manifest could not be read.
    pub architecture: String,
    pub loaded: bool,
    pub active: bool,
    /// Why the package cannot be used, when its manifest is unreadable.
    pub error: Option<String>,
}

/// One package and its state in the service: what `info` reports.
pub struct ModelDetails {
    pub name: String,
    pub dir: PathBuf,
    pub package: Package,
    pub loaded: bool,
    pub active: bool,
    /// Set while loaded: the ONNX Runtime execution provider in use.
    pub execution_provider: Option<String>,
}

pub struct Registry {
    dirs: RwLock<Vec<PathBuf>>,
    loaded: RwLock<BTreeMap<String, Arc<LoadedModel>>>,
    active: RwLock<Option<String>>,
    /// Loads run one at a time: two engines loading at once would double peak memory.
    load_lock: tokio::sync::Mutex<()>,
}

impl Registry {
    pub fn new(dirs: Vec<PathBuf>) -> Registry {
        Registry {
            dirs: RwLock::new(dirs),
            loaded: RwLock::new(BTreeMap::new()),
            active: RwLock::new(None),
            load_lock: tokio::sync::Mutex::new(()),
        }
    }

    pub fn set_dirs(&self, dirs: Vec<PathBuf>) {
        *self.dirs.write().unwrap_or_else(|p| p.into_inner()) = dirs;
    }

    pub fn dirs(&self) -> Vec<PathBuf> {
        self.dirs.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn loaded_names(&self) -> Vec<String> {
        self.loaded
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    pub fn active_name(&self) -> Option<String> {
        self.active
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn get(&self, name: &str) -> Option<Arc<LoadedModel>> {
        self.loaded
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// The model a request uses: the one it names (must be loaded), else the active one.
    pub fn for_request(&self, name: Option<&str>) -> Result<Arc<LoadedModel>, ServiceError> {
        match name {
            Some(name) => self.get(name).ok_or_else(|| {
                ServiceError::ModelNotLoaded(format!(
                    "model '{name}' is not loaded; load it first, or name none to use the active model"
                ))
            }),
            None => self
                .active_name()
                .and_then(|n| self.get(&n))
                .ok_or_else(|| {
                    ServiceError::ModelNotLoaded(
                        "no model is loaded; load one, or set models.default to load one at start"
                            .into(),
                    )
                }),
        }
    }

    /// The name of the package at `path`, named by path: the name it is loaded under if it
    /// is; its folder's when the folder lies in a model directory (the name `models list`
    /// shows); else its manifest's `name` when no other package answers to that name (in the
    /// model directories, or loaded from elsewhere); else its folder's.
    fn name_by_path(&self, path: &Path, manifest: Option<String>, folder: String) -> String {
        let loaded = self.loaded.read().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = loaded.values().find(|m| m.dir == path) {
            return m.name.clone();
        }
        let dirs = self.dirs();
        if dirs.iter().any(|d| d.join(&folder) == path) {
            return folder;
        }
        let Some(name) = manifest else {
            return folder;
        };
        let in_dirs = dirs
            .iter()
            .any(|d| d.join(&name).join("manifest.json").is_file());
        if in_dirs || loaded.contains_key(&name) {
            folder
        } else {
            name
        }
    }

    /// Finds a package: an absolute path, or a directory name inside a model directory. A path
    /// from a caller other than root (`who`) must lead, with the caller's permissions, to a
    /// package whose files the caller may read (see [`caller_may_read`]).
    pub fn resolve(
        &self,
        name: &str,
        who: Option<&Identity>,
    ) -> Result<(String, PathBuf), ServiceError> {
        if name.is_empty() {
            return Err(ServiceError::InvalidArgument(
                "a model name must not be empty".into(),
            ));
        }
        if name.contains('/') {
            let path = Path::new(name);
            if !path.is_absolute() {
                return Err(ServiceError::InvalidArgument(format!(
                    "'{name}': a model path must be absolute"
                )));
            }
            let manifest_name = if let Some(id) = who {
                caller_may_read(id, path).map_err(|e| {
                    ServiceError::NotFound(format!(
                        "no model package readable by the caller at {}: {e}",
                        moed_wire::quote(name)
                    ))
                })?
            } else if !path.join("manifest.json").is_file() {
                return Err(ServiceError::NotFound(format!(
                    "{name}: no model package there (no manifest.json)"
                )));
            } else {
                model_access::manifest_name(path)
            };
            let base = path
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .filter(|n| !n.is_empty())
                .ok_or_else(|| {
                    ServiceError::InvalidArgument(format!("'{name}': no directory name"))
                })?;
            return Ok((
                self.name_by_path(path, manifest_name, base),
                path.to_path_buf(),
            ));
        }
        if name == "." || name == ".." {
            return Err(ServiceError::InvalidArgument(format!(
                "'{name}' is not a model name"
            )));
        }
        let dirs = self.dirs();
        for dir in &dirs {
            let candidate = dir.join(name);
            if candidate.join("manifest.json").is_file() {
                return Ok((name.to_string(), candidate));
            }
        }
        // A loaded model stays reachable by name even when it came from a path.
        if let Some(m) = self.get(name) {
            return Ok((m.name.clone(), m.dir.clone()));
        }
        Err(ServiceError::NotFound(format!(
            "no model package '{name}' in the model directories ({})",
            dirs.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }

    /// Every package directory in the model directories (first directory wins on equal names).
    pub fn list(&self) -> Vec<ModelEntry> {
        let loaded = self.loaded_names();
        let active = self.active_name();
        let mut seen = BTreeMap::new();
        for dir in self.dirs() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut paths: Vec<PathBuf> =
                entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
            paths.sort();
            for path in paths {
                if !path.join("manifest.json").is_file() {
                    continue;
                }
                let name = match path.file_name() {
                    Some(n) => n.to_string_lossy().to_string(),
                    None => continue,
                };
                if seen.contains_key(&name) {
                    continue;
                }
                let (architecture, error) = match Package::open(&path) {
                    Ok(p) => (p.manifest().architecture.clone(), None),
                    Err(e) => (String::new(), Some(e.to_string())),
                };
                seen.insert(
                    name.clone(),
                    ModelEntry {
                        loaded: loaded.contains(&name),
                        active: active.as_deref() == Some(name.as_str()),
                        name,
                        path,
                        architecture,
                        error,
                    },
                );
            }
        }
        // Models loaded from a path outside the directories are listed too.
        for name in loaded {
            if seen.contains_key(&name) {
                continue;
            }
            if let Some(m) = self.get(&name) {
                seen.insert(
                    name.clone(),
                    ModelEntry {
                        active: active.as_deref() == Some(name.as_str()),
                        name,
                        path: m.dir.clone(),
                        architecture: m.engine.package().manifest().architecture.clone(),
                        loaded: true,
                        error: None,
                    },
                );
            }
        }
        seen.into_values().collect()
    }

    pub fn info(&self, name: &str, who: Option<&Identity>) -> Result<ModelDetails, ServiceError> {
        let (name, dir) = self.resolve(name, who)?;
        let loaded = self.get(&name);
        let package = match &loaded {
            Some(m) => m.engine.package().clone(),
            None => Package::open(&dir).map_err(|e| ServiceError::Failed(e.to_string()))?,
        };
        Ok(ModelDetails {
            active: self.active_name().as_deref() == Some(name.as_str()),
            name,
            dir,
            package,
            loaded: loaded.is_some(),
            execution_provider: loaded.map(|l| l.engine.execution_provider().to_string()),
        })
    }

    /// Loads a package (no-op when loaded); the first model loaded becomes active.
    pub async fn load(
        &self,
        name: &str,
        who: Option<&Identity>,
        opts: EngineOptions,
    ) -> Result<Arc<LoadedModel>, ServiceError> {
        let name_is_path = name.contains('/');
        let (name, dir) = self.resolve(name, who)?;
        let _guard = self.load_lock.lock().await;
        if let Some(m) = self.get(&name) {
            if m.dir != dir {
                return Err(ServiceError::InvalidArgument(format!(
                    "a different model named '{name}' is loaded from {}; unload it first",
                    m.dir.display()
                )));
            }
            return Ok(m);
        }
        let load_dir = dir.clone();
        let (engine, text) = tokio::task::spawn_blocking(move || -> Result<_, String> {
            let engine = Engine::load(&load_dir, opts).map_err(|e| e.to_string())?;
            let text = TextModel::load(engine.package()).map_err(|e| e.to_string())?;
            Ok((engine, text))
        })
        .await
        .map_err(|e| {
            ServiceError::Failed(format!("loading {name}: the loader thread failed: {e}"))
        })?
        .map_err(|e| ServiceError::Failed(format!("loading model '{name}': {e}")))?;
        let merged = Mutex::new(engine.stats());
        let model = Arc::new(LoadedModel {
            name: name.clone(),
            path_of_client: who.is_some() && name_is_path,
            dir,
            engine,
            text,
            merged,
            gates: Default::default(),
        });
        self.loaded
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.clone(), model.clone());
        let mut active = self.active.write().unwrap_or_else(|p| p.into_inner());
        if active.is_none() {
            *active = Some(name);
        }
        Ok(model)
    }

    /// Drops a model; requests still using it finish first (they hold their own reference).
    pub fn unload(&self, name: &str) -> Result<Arc<LoadedModel>, ServiceError> {
        let model = self
            .loaded
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name)
            .ok_or_else(|| ServiceError::NotFound(format!("model '{name}' is not loaded")))?;
        let mut active = self.active.write().unwrap_or_else(|p| p.into_inner());
        if active.as_deref() == Some(name) {
            *active = self
                .loaded
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .keys()
                .next()
                .cloned();
        }
        Ok(model)
    }

    /// Makes a loaded model the active one.
    pub fn set_active(&self, name: &str) -> Result<(), ServiceError> {
        if self.get(name).is_none() {
            return Err(ServiceError::ModelNotLoaded(format!(
                "model '{name}' is not loaded"
            )));
        }
        *self.active.write().unwrap_or_else(|p| p.into_inner()) = Some(name.to_string());
        Ok(())
    }
}

#[cfg(test)]
#[path = "models_tests.rs"]
mod tests;
