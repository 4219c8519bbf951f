//! `moed serve`: the D-Bus service. Objects are served before the name is requested; blocking
//! engine work runs on tokio's blocking pool; SIGTERM drains, SIGHUP reloads the configuration.

mod auth;
mod daemon;
mod engine_iface;
mod error;
mod knowledge_iface;
mod logging;
mod model_wire;
mod models_iface;
mod notify;
mod peer;
mod plugin_wire;
pub use moed_service::plugin_set;
mod plugins_iface;
mod request_wire;
mod watch;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use moed_dbus::{BUS_NAME, MoedError, OBJECT_PATH};
use moed_service::Service;
use moed_service::plugin_manager;
use moed_service::service::{Parts, ServiceStatus};
use zbus::connection::Builder;

pub use auth::{
    AccessPolicy, Action, Authorizer, Caller, GroupAuthorizer, PolkitAuthorizer, SubjectMode,
};
use daemon::Daemon;
use engine_iface::EngineIface;
use knowledge_iface::KnowledgeIface;
use models_iface::ModelsIface;
use plugins_iface::PluginsIface;

use crate::config::{Config, ConfigError};
use crate::state::{StateError, StateStore, state_dir};

/// Which bus to serve on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bus {
    System,
    Session,
    Address(String),
}

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub bus: Bus,
    /// A model to load at start instead of the remembered or configured one.
    pub model: Option<String>,
    pub config: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("no state directory: set service.state_directory or $STATE_DIRECTORY")]
    NoStateDir,
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("D-Bus ({bus}): {message}")]
    Bus { bus: String, message: String },
    #[error(transparent)]
    Knowledge(#[from] crate::knowledge::KnowledgeError),
    #[error("loading the configured plugins at start: {0}")]
    Plugins(#[from] plugin_manager::ManagerError),
    #[error("loading model '{model}' at start: {message}")]
    Model { model: String, message: String },
}

/// Runs the daemon until SIGTERM or SIGINT, then drains and returns.
pub fn run(opts: ServeOptions) -> Result<(), ServeError> {
    let config = Config::load(opts.config.as_deref())?;
    logging::init(&config.log.level);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("moed-io")
        .build()
        .map_err(ServeError::Runtime)?;
    runtime.block_on(serve(opts, config))
}

fn bus_label(bus: &Bus) -> String {
    match bus {
        Bus::System => "system bus".into(),
        Bus::Session => "session bus".into(),
        Bus::Address(a) => a.clone(),
    }
}

async fn serve(opts: ServeOptions, config: Config) -> Result<(), ServeError> {
    for source in &config.sources {
        log::info!("configuration: read {}", source.display());
    }
    let access = AccessPolicy::new(
        &config.access,
        SubjectMode::for_bus(opts.bus == Bus::System),
    )?;
    let dir = state_dir(
        config.service.state_directory.as_deref(),
        opts.bus == Bus::Session,
    )
    .ok_or(ServeError::NoStateDir)?;
    let state = StateStore::open(&dir)?;
    log::info!("state directory: {}", dir.display());
    let sources = Arc::new(moed_plugins::Sources::default());
    let knowledge = crate::knowledge::Knowledge::start(&config.knowledge, &state, sources.clone())?;
    let (plugins, plugin_failures) = plugin_manager::PluginManager::open(
        &state,
        &config.plugins,
        sources.clone(),
        plugin_manager::cache_dir(&dir),
    )?;
    let plugins = Arc::new(plugins);
    let service = Service::new(Parts {
        config: config.clone(),
        state,
        sources,
        knowledge,
        plugins,
        plugin_failures: Some(plugin_failures),
        engine_base: crate::engine::EngineOptions::default(),
    });
    let daemon = Daemon::new(service.clone(), access);

    notify::status("connecting to the bus");
    let label = bus_label(&opts.bus);
    let bus_error = |e: zbus::Error| ServeError::Bus {
        bus: label.clone(),
        message: match &e {
            zbus::Error::NameTaken => {
                format!("{BUS_NAME} is already owned: another moed runs on this bus")
            }
            other => other.to_string(),
        },
    };
    let builder = match &opts.bus {
        Bus::System => Builder::system(),
        Bus::Session => Builder::session(),
        Bus::Address(address) => Builder::address(address.as_str()),
    };
    let conn = builder
        .serve_at(
            OBJECT_PATH,
            EngineIface {
                daemon: daemon.clone(),
            },
        )
        .serve_at(
            OBJECT_PATH,
            ModelsIface {
                daemon: daemon.clone(),
            },
        )
        .serve_at(
            OBJECT_PATH,
            PluginsIface {
                daemon: daemon.clone(),
            },
        )
        .serve_at(OBJECT_PATH, KnowledgeIface::new(daemon.clone()))
        .name(BUS_NAME)
        .build()
        .await
        .map_err(bus_error)?;
    daemon.set_connection(conn.clone());
    log::info!("serving {BUS_NAME} on the {label}");
    watch::spawn_event_watcher(&service, conn.clone());
    watch::spawn_owner_watch(&service, conn.clone());

    // The model: --model, else the one last chosen with Switch, else models.default.
    let remembered = service.state.active_model().unwrap_or_else(|e| {
        log::warn!("{e}");
        None
    });
    let start_model = opts
        .model
        .clone()
        .or(remembered.clone())
        .or(config.models.default.clone());
    if let Some(name) = start_model {
        notify::status(&format!("loading model {name}"));
        service.set_status(ServiceStatus::Loading).await;
        match ModelsIface::load_model(&daemon, &name, None, false).await {
            Ok(_) => {}
            Err(err) if opts.model.is_none() && remembered.as_deref() == Some(name.as_str()) => {
                // The remembered model may have been removed since; fall back to the default.
                log::warn!(
                    "the model last switched to, {name}, cannot be loaded: {}",
                    err.message()
                );
                if let Some(default) = config.models.default.clone() {
                    ModelsIface::load_model(&daemon, &default, None, false)
                        .await
                        .map_err(|e| model_error(&default, e))?;
                }
            }
            Err(err) => return Err(model_error(&name, err)),
        }
    }
    service.refresh_status();
    service.announce().await;
    let status = match service.registry.active_name() {
        Some(model) => format!("serving {model}"),
        None => "serving, no model loaded".to_string(),
    };
    notify::ready(&status);
    notify::spawn_watchdog();
    log::info!("{status}");

    let stop = wait_for_signals(&daemon, &conn, opts.config.clone()).await;

    let timeout = Duration::from_secs(service.config().service.drain_timeout_secs);
    let load = service.scheduler.load();
    notify::stopping(&format!(
        "draining {} running and {} queued requests",
        load.running, load.queued
    ));
    log::info!(
        "stopping: draining {} running and {} queued requests",
        load.running,
        load.queued
    );
    service.drain(timeout).await;
    // The drained requests' last signals (Finished) are sent by their own tasks, after the
    // service is done with them: exiting before would lose them.
    if !daemon.streams_sent(STREAMS_SENT_WAIT).await {
        log::warn!("stopping without the last signals of some streaming requests");
    }
    log::info!("stopped");
    match stop {
        Stop::Signal => Ok(()),
        // A non-zero exit, so that systemd's Restart=on-failure brings moed back on the bus.
        Stop::BusLost => Err(ServeError::Bus {
            bus: label,
            message: "the connection to the bus was lost".into(),
        }),
    }
}

/// How long the daemon waits, after the drain, for streaming requests to send their last signals.
const STREAMS_SENT_WAIT: Duration = Duration::from_secs(5);

/// Why the daemon stops serving.
enum Stop {
    Signal,
    BusLost,
}

fn model_error(model: &str, err: MoedError) -> ServeError {
    ServeError::Model {
        model: model.to_string(),
        message: err.message(),
    }
}

/// Returns on SIGTERM or SIGINT, or when the bus connection ends (a daemon nobody can reach must
/// not linger); reloads the configuration on SIGHUP.
async fn wait_for_signals(
    daemon: &Arc<Daemon>,
    conn: &zbus::Connection,
    config_file: Option<PathBuf>,
) -> Stop {
    use futures_util::StreamExt;
    use tokio::signal::unix::{SignalKind, signal};
    let mut messages = zbus::MessageStream::from(conn);
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        log::error!("cannot install signal handlers; serving until killed or disconnected");
        while messages.next().await.is_some() {}
        log::error!("the connection to the bus ended");
        return Stop::BusLost;
    };
    loop {
        tokio::select! {
            _ = term.recv() => return Stop::Signal,
            _ = int.recv() => return Stop::Signal,
            _ = hup.recv() => reload(daemon, config_file.as_deref()).await,
            message = messages.next() => {
                if message.is_none() {
                    log::error!("the connection to the bus ended");
                    return Stop::BusLost;
                }
            }
        }
    }
}

async fn reload(daemon: &Arc<Daemon>, config_file: Option<&std::path::Path>) {
    notify::status("reloading configuration");
    let subject = daemon.access_subject();
    let result = Config::load(config_file).and_then(|config| {
        let access = AccessPolicy::new(&config.access, subject)?;
        Ok((config, access))
    });
    match result {
        Ok((config, access)) => {
            log::set_max_level(config.log.level.parse().unwrap_or(log::LevelFilter::Info));
            daemon.set_access(access);
            let pending = daemon.service.reload(config).await;
            if pending.is_empty() {
                log::info!("configuration reloaded");
            } else {
                log::warn!(
                    "configuration reloaded; these keys take effect after a restart: {}",
                    pending.join(", ")
                );
            }
        }
        Err(err) => log::error!("configuration not reloaded, the previous one stays: {err}"),
    }
    let status = match daemon.service.registry.active_name() {
        Some(model) => format!("serving {model}"),
        None => "serving, no model loaded".to_string(),
    };
    notify::status(&status);
}
