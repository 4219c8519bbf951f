//! The state every D-Bus object of the daemon shares: configuration, models, scheduler, state
//! store and access policy. It names no interface type: the interfaces hold it, and telling
//! clients about changed properties goes through [`Announce`], implemented in `watch.rs`.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock, RwLock};

use moed_dbus::{EngineState, MoedError};
use moed_plugins::{Alert, Sources};
use zbus::Connection;
use zbus::message::Header;

use moed_service::clock::unix_now;
use moed_service::models::Registry;
use moed_service::plugin_manager::PluginManager;
use moed_service::plugin_set::PluginSet;
use moed_service::scheduler::Scheduler;

use super::auth::{AccessPolicy, Action, Caller, SubjectMode};
use crate::config::Config;
use crate::engine::EngineOptions;
use crate::state::{AlertEntry, StateStore};

/// Tells clients that the properties following models, state and configuration changed.
pub trait Announce: Send + Sync {
    /// Emits the `PropertiesChanged` signals; done when they are sent.
    fn announce(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

pub struct Daemon {
    config: RwLock<Config>,
    pub registry: Registry,
    pub scheduler: Arc<Scheduler>,
    pub state: StateStore,
    /// Installed and configured plugins; their enabled set is [`Daemon::plugin_set`].
    pub plugins: PluginManager,
    /// The data sources retrieval plugins may search, by label (the knowledge store and the
    /// configured databases register here; plugin hosts are built over this registry).
    pub sources: Arc<Sources>,
    access: RwLock<Arc<AccessPolicy>>,
    engine_state: RwLock<EngineState>,
    conn: OnceLock<Connection>,
    announcer: OnceLock<Arc<dyn Announce>>,
}

impl Daemon {
    pub fn new(
        config: Config,
        state: StateStore,
        access: AccessPolicy,
        plugins: PluginManager,
        sources: Arc<Sources>,
    ) -> Arc<Daemon> {
        let scheduler = Scheduler::new(config.service.max_concurrent, config.service.queue_depth);
        scheduler.set_per_user(config.service.requests_per_user());
        Arc::new(Daemon {
            registry: Registry::new(config.models.dirs.clone()),
            scheduler,
            config: RwLock::new(config),
            state,
            plugins,
            sources,
            access: RwLock::new(Arc::new(access)),
            engine_state: RwLock::new(EngineState::Loading),
            conn: OnceLock::new(),
            announcer: OnceLock::new(),
        })
    }

    pub fn config(&self) -> Config {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Applies what can change while running (SIGHUP); returns the keys that need a restart.
    pub fn reload(&self, new: Config, access: AccessPolicy) -> Vec<&'static str> {
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
        self.registry.set_dirs(new.models.dirs.clone());
        self.scheduler
            .set_limits(new.service.max_concurrent, new.service.queue_depth);
        self.scheduler.set_per_user(new.service.requests_per_user());
        *self.access.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(access);
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = new;
        pending
    }

    /// Options for loading an engine under the current configuration.
    pub fn engine_options(&self) -> EngineOptions {
        let config = self.config();
        EngineOptions {
            providers: config.providers(),
            expert_memory_budget: config.engine.expert_memory_budget,
            ort_library: config.engine.ort_library.clone(),
            ..EngineOptions::default()
        }
    }

    /// The plugins enabled now: take it once when a request is admitted and use it throughout.
    pub fn plugin_set(&self) -> Arc<PluginSet> {
        self.plugins.set()
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

    /// [`Daemon::record_alerts`] for one alert.
    pub fn record_alert(&self, request_id: Option<&str>, uid: Option<u32>, alert: &Alert) {
        self.record_alerts(request_id, uid, std::slice::from_ref(alert));
    }

    pub fn set_connection(&self, conn: Connection) {
        let _ = self.conn.set(conn);
    }

    pub fn connection(&self) -> Result<&Connection, MoedError> {
        self.conn
            .get()
            .ok_or_else(|| MoedError::Failed("the daemon is not connected to a bus yet".into()))
    }

    pub fn engine_state(&self) -> EngineState {
        *self.engine_state.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_engine_state(&self, state: EngineState) {
        *self.engine_state.write().unwrap_or_else(|p| p.into_inner()) = state;
    }

    /// `Ready` or `NoModel` from what is loaded, unless draining.
    pub fn refresh_engine_state(&self) {
        if self.engine_state() == EngineState::Draining {
            return;
        }
        let state = if self.registry.active_name().is_some() {
            EngineState::Ready
        } else {
            EngineState::NoModel
        };
        self.set_engine_state(state);
    }

    /// Where [`Daemon::announce`] goes; set once, when the interfaces are served.
    pub fn set_announcer(&self, announcer: Arc<dyn Announce>) {
        let _ = self.announcer.set(announcer);
    }

    /// Emits `PropertiesChanged` for the Engine and Models properties that follow models,
    /// state and configuration. Managing methods call it before replying, so a client's cached
    /// properties are current when it reads the reply (signals and replies travel in order).
    pub async fn announce(&self) {
        if let Some(announcer) = self.announcer.get() {
            announcer.announce().await;
        }
    }

    /// How the policy in force tells polkit who calls (kept across reloads).
    pub fn access_subject(&self) -> SubjectMode {
        self.access().subject()
    }

    fn access(&self) -> Arc<AccessPolicy> {
        self.access
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The caller of an inference or read method, if allowed to use moed.
    pub async fn user(&self, header: &Header<'_>) -> Result<Caller, MoedError> {
        let caller = Caller::from_header(self.connection()?, header).await?;
        self.access().check_use(&caller)?;
        Ok(caller)
    }

    /// The caller of a managing method, if authorized for `action`.
    pub async fn admin(&self, header: &Header<'_>, action: Action) -> Result<Caller, MoedError> {
        let caller = self.user(header).await?;
        if let Some(authorizer) = self.access().authorizer(&caller) {
            authorizer.authorize(&caller, header, action).await?;
        }
        log::info!(
            caller = caller.unique_name.as_str(), uid = caller.uid, action = action.id();
            "authorized {} for uid {}", action.id(), caller.uid
        );
        Ok(caller)
    }
}
