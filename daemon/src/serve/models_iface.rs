//! `org.moed.Moed1.Models`: listing, loading, unloading and switching models; expert statistics.

use std::sync::Arc;

use moed_dbus::wire::{self, ToWire, WireStr, limits};
use moed_dbus::{ExpertStatistics, ModelInfo, ModelSummary, MoedError, OBJECT_PATH};
use zbus::interface;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;

use moed_service::client_files::Identity;

use super::auth::Action;
use super::daemon::Daemon;
use super::error::wire_error;
use super::model_wire;
use crate::engine::LoadProgress;

pub struct ModelsIface {
    pub daemon: Arc<Daemon>,
}

impl ModelsIface {
    fn state_error(e: crate::state::StateError) -> MoedError {
        MoedError::Failed(e.to_string())
    }

    /// Loads `name` with the current configuration; logs and updates the Engine state.
    /// `who`: the caller whose permissions a path is read with (`None`: root, or the daemon's
    /// own configuration).
    pub async fn load_model(
        daemon: &Arc<Daemon>,
        name: &str,
        who: Option<&Identity>,
    ) -> Result<String, MoedError> {
        let before = daemon.registry.loaded_names();
        let mut options = daemon.engine_options();
        let forwarder = daemon.connection().ok().map(|conn| {
            // The loader runs on a blocking thread; its progress reaches the bus from here.
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, usize)>();
            options.progress = Some(LoadProgress(Arc::new(move |done, total| {
                let _ = tx.send((done, total));
            })));
            let conn = conn.clone();
            let name = WireStr::new(name, limits::PATH);
            tokio::spawn(async move {
                let Ok(emitter) = SignalEmitter::new(&conn, OBJECT_PATH) else {
                    return;
                };
                while let Some((done, total)) = rx.recv().await {
                    let (done, total) = (done as u32, total as u32);
                    let _ = ModelsIface::load_progress(&emitter, &name, done, total).await;
                }
            })
        });
        let result = daemon.registry.load(name, who, options).await;
        if let Some(forwarder) = forwarder {
            // The sender went with the options: every progress signal is out before the reply.
            let _ = forwarder.await;
        }
        let model = result.map_err(wire_error)?;
        if !before.contains(&model.name) {
            log::info!(
                model = model.name.as_str();
                "loaded model {} from {} on {}", model.name, model.dir.display(), model.engine.execution_provider()
            );
        }
        daemon.refresh_engine_state();
        Ok(model.name.clone())
    }
}

#[interface(name = "org.moed.Moed1.Models")]
impl ModelsIface {
    /// Every package in the model directories, and models loaded from elsewhere.
    #[zbus(out_args("models"))]
    async fn list(
        &self,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<Vec<ModelSummary>, MoedError> {
        self.daemon.user(&header).await?;
        let daemon = self.daemon.clone();
        tokio::task::spawn_blocking(move || {
            daemon
                .registry
                .list()
                .into_iter()
                .map(model_wire::summary)
                .collect::<Vec<_>>()
                .to_wire()
        })
        .await
        .map_err(|e| MoedError::Failed(format!("listing models: {e}")))
    }

    /// What a package's manifest says and whether it is loaded (name or absolute path).
    #[zbus(out_args("info"))]
    async fn info(
        &self,
        name: String,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<ModelInfo, MoedError> {
        let who = self.daemon.user(&header).await?.identity();
        let daemon = self.daemon.clone();
        tokio::task::spawn_blocking(move || {
            daemon
                .registry
                .info(&name, who.as_ref())
                .map(|d| model_wire::info(d).to_wire())
                .map_err(wire_error)
        })
        .await
        .map_err(|e| MoedError::Failed(format!("reading model info: {e}")))?
    }

    /// Loads a package (a name in the model directories or an absolute path). The first model
    /// loaded becomes active. Needs `org.moed.manage-models`.
    async fn load(
        &self,
        name: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<(), MoedError> {
        let who = self
            .daemon
            .admin(&header, Action::ManageModels)
            .await?
            .identity();
        let loaded = Self::load_model(&self.daemon, &name, who.as_ref()).await?;
        self.daemon.announce().await;
        Self::model_loaded(&emitter, &WireStr::new(&loaded, limits::NAME)).await?;
        Ok(())
    }

    /// Drops a loaded model once its running requests finish. Needs `org.moed.manage-models`.
    async fn unload(
        &self,
        name: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<(), MoedError> {
        self.daemon.admin(&header, Action::ManageModels).await?;
        let model = self.daemon.registry.unload(&name).map_err(wire_error)?;
        let state = self.daemon.state.clone();
        let active = self.daemon.registry.active_name();
        tokio::task::spawn_blocking(move || -> Result<(), MoedError> {
            model.persist_stats(&state, 0).map_err(wire_error)?;
            state
                .set_active_model(active.as_deref())
                .map_err(Self::state_error)
        })
        .await
        .map_err(|e| MoedError::Failed(format!("unloading: {e}")))??;
        log::info!(model = name.as_str(); "unloaded model {name}");
        self.daemon.refresh_engine_state();
        self.daemon.announce().await;
        Self::model_unloaded(&emitter, &WireStr::from_string(name, limits::NAME)).await?;
        Ok(())
    }

    /// Makes a model (loading it if needed) the one requests use by default; remembered across
    /// restarts. Needs `org.moed.manage-models`.
    async fn switch(
        &self,
        name: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<(), MoedError> {
        let who = self
            .daemon
            .admin(&header, Action::ManageModels)
            .await?
            .identity();
        let was_loaded = self
            .daemon
            .registry
            .resolve(&name, who.as_ref())
            .ok()
            .and_then(|(n, _)| self.daemon.registry.get(&n))
            .is_some();
        let loaded = Self::load_model(&self.daemon, &name, who.as_ref()).await?;
        self.daemon
            .registry
            .set_active(&loaded)
            .map_err(wire_error)?;
        let state = self.daemon.state.clone();
        let persist = loaded.clone();
        tokio::task::spawn_blocking(move || state.set_active_model(Some(&persist)))
            .await
            .map_err(|e| MoedError::Failed(format!("switching: {e}")))?
            .map_err(Self::state_error)?;
        log::info!(model = loaded.as_str(); "switched to model {loaded}");
        self.daemon.refresh_engine_state();
        self.daemon.announce().await;
        if !was_loaded {
            Self::model_loaded(&emitter, &WireStr::from_string(loaded, limits::NAME)).await?;
        }
        Ok(())
    }

    /// Per-layer expert activations and expert cache counters of a model ("" = the active one),
    /// accumulated over this and earlier runs.
    #[zbus(out_args("stats"))]
    async fn expert_stats(
        &self,
        name: String,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<ExpertStatistics, MoedError> {
        self.daemon.user(&header).await?;
        let daemon = self.daemon.clone();
        tokio::task::spawn_blocking(move || -> Result<ExpertStatistics, MoedError> {
            let name = if name.is_empty() {
                daemon.registry.active_name().ok_or_else(|| {
                    MoedError::ModelNotLoaded("no model is loaded; name one".into())
                })?
            } else {
                name
            };
            if let Some(model) = daemon.registry.get(&name) {
                return Ok(model_wire::statistics(
                    &name,
                    &model.current_stats(&daemon.state).map_err(wire_error)?,
                )
                .to_wire());
            }
            match daemon
                .state
                .expert_stats(&name)
                .map_err(Self::state_error)?
            {
                Some(stats) => Ok(model_wire::statistics(&name, &stats).to_wire()),
                None => Err(MoedError::NotFound(format!(
                    "no expert statistics for model '{name}': it is not loaded and has not run"
                ))),
            }
        })
        .await
        .map_err(|e| MoedError::Failed(format!("reading statistics: {e}")))?
    }

    /// Forgets a model's expert statistics. Needs `org.moed.manage-models`.
    async fn reset_expert_stats(
        &self,
        name: String,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(), MoedError> {
        self.daemon.admin(&header, Action::ManageModels).await?;
        let daemon = self.daemon.clone();
        tokio::task::spawn_blocking(move || -> Result<(), MoedError> {
            let name = if name.is_empty() {
                daemon.registry.active_name().ok_or_else(|| {
                    MoedError::ModelNotLoaded("no model is loaded; name one".into())
                })?
            } else {
                name
            };
            match daemon.registry.get(&name) {
                Some(model) => model.reset_stats(&daemon.state).map_err(wire_error),
                None => match daemon.state.reset_expert_stats(&name) {
                    Ok(true) => Ok(()),
                    Ok(false) => Err(MoedError::NotFound(format!(
                        "model '{name}' is not loaded and has no recorded statistics; see Models.List"
                    ))),
                    Err(e) => Err(Self::state_error(e)),
                },
            }
        })
        .await
        .map_err(|e| MoedError::Failed(format!("resetting statistics: {e}")))?
    }

    /// The directories searched for packages (`models.dirs`).
    #[zbus(property)]
    fn model_directories(&self) -> Vec<String> {
        let dirs = self.daemon.registry.dirs();
        let dirs = dirs.iter().map(|d| d.display().to_string()).collect();
        wire::strings(dirs, limits::PATH)
    }

    /// Names of the models held in memory.
    #[zbus(property)]
    fn loaded_models(&self) -> Vec<String> {
        wire::strings(self.daemon.registry.loaded_names(), limits::NAME)
    }

    #[zbus(signal)]
    async fn model_loaded(emitter: &SignalEmitter<'_>, name: &WireStr) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn model_unloaded(emitter: &SignalEmitter<'_>, name: &WireStr) -> zbus::Result<()>;

    /// While `name` (as the caller wrote it) loads: graphs loaded out of graphs to load.
    #[zbus(signal)]
    async fn load_progress(
        emitter: &SignalEmitter<'_>,
        name: &WireStr,
        done: u32,
        total: u32,
    ) -> zbus::Result<()>;
}
