//! Loading, unloading and switching models as the service does them, remembered in the state
//! store and announced; expert statistics of loaded and past models.

use std::sync::Arc;

use super::{Service, ServiceEvent};
use crate::ServiceError;
use crate::client_files::Identity;
use crate::engine::LoadProgress;
use crate::models::LoadedModel;
use crate::state::{PersistedStats, StateError};

fn state_error(e: StateError) -> ServiceError {
    ServiceError::Failed(e.to_string())
}

fn joined(what: &'static str) -> impl Fn(tokio::task::JoinError) -> ServiceError {
    move |e| ServiceError::Failed(format!("{what}: {e}"))
}

impl Service {
    /// Loads `name` (a name in the model directories or an absolute path) with the current
    /// configuration; a no-op when loaded. `who`: the client whose permissions a path is read
    /// with (`None`: root, or the service's own configuration). `progress` hears (graphs
    /// loaded, graphs to load). Announces the change, then [`ServiceEvent::ModelLoaded`].
    pub async fn load(
        &self,
        name: &str,
        who: Option<&Identity>,
        progress: Option<LoadProgress>,
    ) -> Result<Arc<LoadedModel>, ServiceError> {
        let before = self.registry.loaded_names();
        let mut options = self.engine_options();
        options.progress = progress.clone();
        let config = self.config();
        let holds = options.expert_memory_budget.is_some()
            && config.engine.held_experts_percent > 0
            && !config.engine.preload_experts;
        let activations = if options.gpu_memory_budget.is_some() || holds {
            self.persisted_activations(name, who)
        } else {
            Vec::new()
        };
        if options.gpu_memory_budget.is_some() {
            options.activations = activations.clone();
        }
        let model = self.registry.load(name, who, options).await?;
        let fresh = !before.contains(&model.name);
        if fresh && config.engine.preload_experts {
            self.preload(&model, progress).await?;
        } else if fresh && holds && !activations.is_empty() {
            self.hold_hot(&model, activations, config.engine.held_experts_percent)
                .await?;
        }
        self.refresh_status();
        self.announce().await;
        if !before.contains(&model.name) {
            log::info!(
                model = model.name.as_str();
                "loaded model {} from {} on {}", model.name, model.dir.display(), model.engine.execution_provider()
            );
            self.events
                .publish_and_wait(ServiceEvent::ModelLoaded(model.name.clone()))
                .await;
        }
        Ok(model)
    }

    /// Holds the hottest experts of a model just loaded under an expert budget (`percent` of it),
    /// ranked by its persisted `activations`. A failure unloads the model again: creating those
    /// sessions is what its first requests would do, and they would fail the same way.
    async fn hold_hot(
        &self,
        model: &Arc<LoadedModel>,
        activations: Vec<Vec<u64>>,
        percent: u8,
    ) -> Result<(), ServiceError> {
        let started = std::time::Instant::now();
        let engine_model = model.clone();
        let held = tokio::task::spawn_blocking(move || {
            engine_model
                .engine
                .hold_hot_experts(&activations, f64::from(percent) / 100.0)
        })
        .await
        .map_err(joined("holding the hottest experts"));
        let held = match held {
            Ok(Ok(held)) => held,
            Ok(Err(e)) => {
                let _ = self.registry.unload(&model.name);
                return Err(ServiceError::Failed(format!(
                    "holding the hottest experts of model '{}' (engine.held_experts_percent): {e}",
                    model.name
                )));
            }
            Err(e) => {
                let _ = self.registry.unload(&model.name);
                return Err(e);
            }
        };
        log::info!(
            model = model.name.as_str();
            "holding the {} most activated experts of {} ({:.1} MB, {percent}% of engine.expert_memory_budget at most) from its persisted statistics; created in {:.1} s",
            held.experts, model.name, held.bytes as f64 / 1e6, started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// The stored activation counts of the model `name` resolves to, which rank its experts
    /// for the GPU and for holding under a budget; none when there are none (or the store cannot
    /// say: logged).
    fn persisted_activations(&self, name: &str, who: Option<&Identity>) -> Vec<Vec<u64>> {
        let Ok((resolved, _)) = self.registry.resolve(name, who) else {
            return Vec::new();
        };
        match self.state.expert_stats(&resolved) {
            Ok(stats) => stats.map(|s| s.activations).unwrap_or_default(),
            Err(e) => {
                log::warn!("placing {resolved} without its expert statistics: {e}");
                Vec::new()
            }
        }
    }

    /// Creates every expert session of a model just loaded; `progress` hears (experts loaded,
    /// experts to load). A failure unloads the model again: it would fail its first requests.
    async fn preload(
        &self,
        model: &Arc<LoadedModel>,
        progress: Option<LoadProgress>,
    ) -> Result<(), ServiceError> {
        let started = std::time::Instant::now();
        let engine_model = model.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            engine_model.engine.preload_experts_with(progress.as_ref())
        })
        .await
        .map_err(joined("preloading experts"));
        let failed = match loaded {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(ServiceError::Failed(format!(
                "preloading the experts of model '{}' (engine.preload_experts): {e}",
                model.name
            ))),
            Err(e) => Some(e),
        };
        if let Some(err) = failed {
            let _ = self.registry.unload(&model.name);
            return Err(err);
        }
        log::info!(
            model = model.name.as_str();
            "preloaded the experts of {} in {:.1} s", model.name, started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// Drops a loaded model once its running requests finish; its statistics are persisted
    /// and the active model remembered.
    pub async fn unload(&self, name: &str) -> Result<(), ServiceError> {
        let model = self.registry.unload(name)?;
        let state = self.state.clone();
        let active = self.remembered_active();
        tokio::task::spawn_blocking(move || -> Result<(), ServiceError> {
            model.persist_stats(&state, 0)?;
            state
                .set_active_model(active.as_deref())
                .map_err(state_error)
        })
        .await
        .map_err(joined("unloading"))??;
        log::info!(model = name; "unloaded model {name}");
        self.refresh_status();
        self.announce().await;
        self.events
            .publish_and_wait(ServiceEvent::ModelUnloaded(name.to_string()))
            .await;
        Ok(())
    }

    /// Makes a model (loading it if needed) the one requests use by default, remembered
    /// across restarts.
    pub async fn switch(
        &self,
        name: &str,
        who: Option<&Identity>,
        progress: Option<LoadProgress>,
    ) -> Result<String, ServiceError> {
        let loaded = self.load(name, who, progress).await?.name.clone();
        self.registry.set_active(&loaded)?;
        let state = self.state.clone();
        let persist = self.remembered_active().unwrap_or_else(|| loaded.clone());
        tokio::task::spawn_blocking(move || state.set_active_model(Some(&persist)))
            .await
            .map_err(joined("switching"))?
            .map_err(state_error)?;
        log::info!(model = loaded.as_str(); "switched to model {loaded}");
        self.refresh_status();
        self.announce().await;
        Ok(loaded)
    }

    /// What loads the active model again at the next start: its name when the model
    /// directories hold it under that name, else the absolute path it was loaded from, unless
    /// that path was read with a client's permissions (the service, reading it as itself at the
    /// next start, would be a confused deputy: the name is kept, and the start falls back to
    /// `models.default` when the directories do not hold it).
    fn remembered_active(&self) -> Option<String> {
        let model = self.registry.get(&self.registry.active_name()?)?;
        let in_dirs = self
            .registry
            .dirs()
            .iter()
            .any(|dir| dir.join(&model.name) == model.dir);
        Some(if in_dirs || model.path_of_client {
            model.name.clone()
        } else {
            model.dir.to_string_lossy().into_owned()
        })
    }

    /// The model `name` names, or the active one for "".
    fn stats_model(&self, name: String) -> Result<String, ServiceError> {
        if !name.is_empty() {
            return Ok(name);
        }
        self.registry
            .active_name()
            .ok_or_else(|| ServiceError::ModelNotLoaded("no model is loaded; name one".into()))
    }

    /// Per-layer expert activations and cache counters of a model ("" = the active one),
    /// accumulated over this and earlier runs, with the model's name. Blocking.
    pub fn expert_stats(&self, name: String) -> Result<(String, PersistedStats), ServiceError> {
        let name = self.stats_model(name)?;
        if let Some(model) = self.registry.get(&name) {
            let stats = model.current_stats(&self.state)?;
            return Ok((name, stats));
        }
        match self.state.expert_stats(&name).map_err(state_error)? {
            Some(stats) => Ok((name, stats)),
            None => Err(ServiceError::NotFound(format!(
                "no expert statistics for model '{name}': it is not loaded and has not run"
            ))),
        }
    }

    /// Forgets a model's expert statistics ("" = the active one). Blocking.
    pub fn reset_expert_stats(&self, name: String) -> Result<(), ServiceError> {
        let name = self.stats_model(name)?;
        match self.registry.get(&name) {
            Some(model) => model.reset_stats(&self.state),
            None => match self.state.reset_expert_stats(&name) {
                Ok(true) => Ok(()),
                Ok(false) => Err(ServiceError::NotFound(format!(
                    "model '{name}' is not loaded and has no recorded statistics"
                ))),
                Err(e) => Err(state_error(e)),
            },
        }
    }
}
