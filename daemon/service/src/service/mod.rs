//! The service: configuration, state store, models, scheduler, data sources and knowledge held
//! together, with the operations every adapter (the D-Bus daemon, `moed generate`) drives the
//! same way, and the events it publishes for adapters to tell their clients.

mod events;
mod model_ops;
mod providers;
pub mod requests;

use std::sync::{Arc, RwLock};

use moed_plugins::{Alert, Failure, Sources};
use tokio::sync::mpsc::UnboundedReceiver;

pub use events::{ServiceEvent, ServiceEvents};
pub use requests::{
    Admitted, Client, Finished, GenerateParams, MAX_CHAT_MESSAGES, PROMPT_BYTES_PER_TOKEN,
    ScoreParams,
};

use crate::clock::unix_now;
use crate::config::{Config, KnowledgeConfig};
use crate::engine::EngineOptions;
use crate::knowledge::Knowledge;
use crate::models::Registry;
use crate::plugin_manager::PluginManager;
use crate::plugin_set::PluginSet;
use crate::scheduler::Scheduler;
use crate::state::{AlertEntry, StateStore};

/// Where the service stands, as clients see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceStatus {
    /// Starting up or loading a model.
    Loading,
    /// Serving with a model loaded.
    Ready,
    /// Serving, but no model is loaded: inference fails with `ModelNotLoaded`.
    NoModel,
    /// Stopping: finishing requests in flight, taking no new ones.
    Draining,
}

pub struct Service {
    config: RwLock<Config>,
    pub registry: Registry,
    pub scheduler: Arc<Scheduler>,
    pub state: StateStore,
    /// The data sources retrieval plugins may search, by label.
    pub sources: Arc<Sources>,
    pub knowledge: Arc<Knowledge>,
    /// Installed and configured plugins; requests take their enabled set.
    pub plugins: Arc<PluginManager>,
    engine_base: EngineOptions,
    status: RwLock<ServiceStatus>,
    events: events::Hub,
    /// Requests, tokens and time to first token since the start.
    pub metrics: crate::metrics::Metrics,
    /// [`Service::providers`], once ONNX Runtime is started.
    providers: std::sync::OnceLock<Vec<moed_engine::gpu_libs::ProviderCheck>>,
}

/// What a service is built from; its parts are opened by the caller, which knows where they
/// live (state directory, bus or command line).
pub struct Parts {
    pub config: Config,
    pub state: StateStore,
    pub sources: Arc<Sources>,
    pub knowledge: Arc<Knowledge>,
    pub plugins: Arc<PluginManager>,
    /// Plugin failures the plugin host reports, republished as [`ServiceEvent::PluginFailed`].
    pub plugin_failures: Option<UnboundedReceiver<Failure>>,
    /// Engine settings the configuration does not hold (threads, spinning, execution mode);
    /// the configuration's providers, expert budget and library go over them.
    pub engine_base: EngineOptions,
}

impl Service {
    /// Builds the service; with `plugin_failures`, must run inside a tokio runtime (a task
    /// republishes them).
    pub fn new(parts: Parts) -> Arc<Service> {
        let Parts {
            config,
            state,
            sources,
            knowledge,
            plugins,
            plugin_failures,
            engine_base,
        } = parts;
        let scheduler = Scheduler::new(config.service.max_concurrent, config.service.queue_depth);
        scheduler.set_per_user(config.service.requests_per_user());
        let service = Arc::new(Service {
            registry: Registry::new(config.models.dirs.clone()),
            events: events::Hub::new(scheduler.subscribe()),
            scheduler,
            config: RwLock::new(config),
            state,
            sources,
            knowledge,
            plugins,
            engine_base,
            status: RwLock::new(ServiceStatus::Loading),
            metrics: crate::metrics::Metrics::default(),
            providers: std::sync::OnceLock::new(),
        });
        if let Some(failures) = plugin_failures {
            service.events.forward_failures(failures);
        }
        service
    }

    pub fn config(&self) -> Config {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The plugins enabled now: take it once when a request is admitted and use it throughout.
    pub fn plugin_set(&self) -> Arc<PluginSet> {
        self.plugins.set()
    }

    /// Applies what can change while running (SIGHUP): knowledge sources, plugin settings,
    /// model directories, queue limits; returns the keys that need a restart. Announces the
    /// change before returning.
    pub async fn reload(self: &Arc<Self>, new: Config) -> Vec<&'static str> {
        let mut pending = Vec::new();
        {
            let old = self.config.read().unwrap_or_else(|p| p.into_inner());
            if old.engine.ort_library != new.engine.ort_library {
                pending.push("engine.ort_library");
            }
            if old.service.state_directory != new.service.state_directory {
                pending.push("service.state_directory");
            }
            if old.plugins.filters != new.plugins.filters {
                pending.push("plugins.filters");
            }
        }
        if let Err(e) = self.reload_knowledge(new.knowledge.clone()).await {
            log::error!("knowledge sources not reloaded, the previous ones stay: {e}");
        } else {
            log::info!("knowledge sources reloaded");
        }
        let (plugins, settings) = (self.plugins.clone(), new.plugins.settings.clone());
        if let Err(e) = tokio::task::spawn_blocking(move || plugins.apply_settings(&settings)).await
        {
            log::error!("applying the plugins' settings: {e}");
        }
        self.registry.set_dirs(new.models.dirs.clone());
        self.scheduler
            .set_limits(new.service.max_concurrent, new.service.queue_depth);
        self.scheduler.set_per_user(new.service.requests_per_user());
        for name in self.registry.loaded_names() {
            if let Some(model) = self.registry.get(&name) {
                model.engine.set_batch_limits(new.service.batch_limits());
            }
        }
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = new;
        self.announce().await;
        pending
    }

    async fn reload_knowledge(&self, config: KnowledgeConfig) -> Result<(), String> {
        let knowledge = self.knowledge.clone();
        tokio::task::spawn_blocking(move || knowledge.apply(&config))
            .await
            .map_err(|e| format!("the reload thread failed: {e}"))?
            .map_err(|e| e.to_string())
    }

    /// Options for loading an engine under the current configuration.
    pub fn engine_options(&self) -> EngineOptions {
        let config = self.config();
        EngineOptions {
            providers: config.providers(),
            expert_memory_budget: config.engine.expert_memory_budget,
            ort_library: config.engine.ort_library.clone(),
            quantized_matmul: config.engine.quantized_matmul,
            gpu_memory_budget: config.engine.gpu_memory_budget,
            tensorrt_cache_dir: config.engine.tensorrt_cache_dir.clone(),
            experts_side_by_side: config.engine.experts_side_by_side,
            batch: config.service.batch_limits(),
            prefetch_next_layer: config.engine.prefetch_next_layer,
            ..self.engine_base.clone()
        }
    }

    /// Appends a request's plugin alerts to the alert audit log and flushes it. Blocking (a
    /// disk flush): call it on the request's blocking thread. A failure is logged, not returned:
    /// the request itself is not at fault.
    pub fn record_alerts(&self, request_id: Option<&str>, uid: Option<u32>, alerts: &[Alert]) {
        if alerts.is_empty() {
            return;
        }
        let time = unix_now();
        let entries: Vec<AlertEntry> = alerts
            .iter()
            .map(|a| AlertEntry {
                seq: 0,
                time,
                request_id: request_id.map(str::to_string),
                plugin: a.plugin.clone(),
                severity: a.severity.as_str().to_string(),
                code: a.code.clone(),
                message: a.message.clone(),
                uid,
            })
            .collect();
        if let Err(err) = self.state.append_alerts(&entries) {
            log::error!("the alert audit log lost {} alerts: {err}", entries.len());
        }
    }

    pub fn status(&self) -> ServiceStatus {
        *self.status.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the status and tells the adapters (returns once they have).
    pub async fn set_status(&self, status: ServiceStatus) {
        *self.status.write().unwrap_or_else(|p| p.into_inner()) = status;
        self.announce().await;
    }

    /// `Ready` or `NoModel` from what is loaded, unless draining.
    pub fn refresh_status(&self) {
        let mut current = self.status.write().unwrap_or_else(|p| p.into_inner());
        if *current == ServiceStatus::Draining {
            return;
        }
        *current = if self.registry.active_name().is_some() {
            ServiceStatus::Ready
        } else {
            ServiceStatus::NoModel
        };
    }

    /// Stops taking requests and waits for those in flight (cancelling what is left after
    /// `timeout`), then persists every loaded model's statistics.
    pub async fn drain(&self, timeout: std::time::Duration) {
        // Before the status says draining, so that no client sees it and still gets a request in.
        self.scheduler.stop_admitting();
        self.set_status(ServiceStatus::Draining).await;
        let left = self.scheduler.drain(timeout).await;
        if left > 0 {
            log::warn!("drain timeout: cancelled {left} requests");
            self.scheduler
                .drain(std::time::Duration::from_secs(10))
                .await;
        }
        for name in self.registry.loaded_names() {
            if let Some(model) = self.registry.get(&name) {
                let state = self.state.clone();
                let _ = tokio::task::spawn_blocking(move || model.persist_stats(&state, 0)).await;
            }
        }
    }

    /// Subscribes to the service's events (see [`ServiceEvent`]).
    pub fn subscribe(&self) -> ServiceEvents {
        self.events.subscribe()
    }

    /// Publishes [`ServiceEvent::Changed`]: models, status or configuration changed. Returns
    /// once every subscriber has handled it (bounded), so an adapter that replies after this
    /// has told its clients first.
    pub async fn announce(&self) {
        self.events.announce().await;
    }
}
