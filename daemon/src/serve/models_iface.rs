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
    /// Loads (`switch`: and activates) `name`, its progress sent as `LoadProgress` signals,
    /// all of them out before this returns. `who`: the caller whose permissions a path is
    /// read with (`None`: root, or the daemon's own configuration). Returns the model's name.
    pub async fn load_model(
        daemon: &Arc<Daemon>,
        name: &str,
        who: Option<&Identity>,
        switch: bool,
    ) -> Result<String, MoedError> {
        let mut progress = None;
        let forwarder = daemon.connection().ok().map(|conn| {
            // The loader runs on a blocking thread; its progress reaches the bus from here.
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, usize)>();
            progress = Some(LoadProgress(Arc::new(move |done, total| {
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
        let service = &daemon.service;
        let result = if switch {
            service.switch(name, who, progress).await
        } else {
            service
                .load(name, who, progress)
                .await
                .map(|m| m.name.clone())
        };
        if let Some(forwarder) = forwarder {
            // The sender went with the options: every progress signal is out before the reply.
            let _ = forwarder.await;
        }
        result.map_err(wire_error)
    }

    /// `Load` or (`switch`) `Switch` for an authorized caller, `name` read with its permissions.
    async fn managed_load(
        &self,
        header: &Header<'_>,
        name: &str,
        switch: bool,
    ) -> Result<(), MoedError> {
        let caller = self.daemon.admin(header, Action::ManageModels).await?;
        let who = caller.identity();
        Self::load_model(&self.daemon, name, who.as_ref(), switch).await?;
        Ok(())
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
                .service
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
                .service
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
    ) -> Result<(), MoedError> {
        self.managed_load(&header, &name, false).await
    }

    /// Drops a loaded model once its running requests finish. Needs `org.moed.manage-models`.
    async fn unload(
        &self,
        name: String,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(), MoedError> {
        self.daemon.admin(&header, Action::ManageModels).await?;
        self.daemon.service.unload(&name).await.map_err(wire_error)
    }

    /// Makes a model (loading it if needed) the one requests use by default; remembered across
    /// restarts. Needs `org.moed.manage-models`.
    async fn switch(
        &self,
        name: String,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(), MoedError> {
        self.managed_load(&header, &name, true).await
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
        let service = self.daemon.service.clone();
        tokio::task::spawn_blocking(move || {
            let (name, stats) = service.expert_stats(name).map_err(wire_error)?;
            Ok(model_wire::statistics(&name, &stats).to_wire())
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
        let service = self.daemon.service.clone();
        tokio::task::spawn_blocking(move || service.reset_expert_stats(name).map_err(wire_error))
            .await
            .map_err(|e| MoedError::Failed(format!("resetting statistics: {e}")))?
    }

    /// The directories searched for packages (`models.dirs`).
    #[zbus(property)]
    fn model_directories(&self) -> Vec<String> {
        let dirs = self.daemon.service.registry.dirs();
        let dirs = dirs.iter().map(|d| d.display().to_string()).collect();
        wire::strings(dirs, limits::PATH)
    }

    /// Names of the models held in memory.
    #[zbus(property)]
    fn loaded_models(&self) -> Vec<String> {
        wire::strings(self.daemon.service.registry.loaded_names(), limits::NAME)
    }

    #[zbus(signal)]
    pub async fn model_loaded(emitter: &SignalEmitter<'_>, name: &WireStr) -> zbus::Result<()>;

    #[zbus(signal)]
    pub async fn model_unloaded(emitter: &SignalEmitter<'_>, name: &WireStr) -> zbus::Result<()>;

    /// While `name` (as the caller wrote it) loads: graphs loaded out of graphs to load.
    #[zbus(signal)]
    async fn load_progress(
        emitter: &SignalEmitter<'_>,
        name: &WireStr,
        done: u32,
        total: u32,
    ) -> zbus::Result<()>;
}
