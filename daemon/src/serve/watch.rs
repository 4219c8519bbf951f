//! The daemon's two watchers: the one that turns the service's events into D-Bus signals and
//! `PropertiesChanged` (the one place that reaches into the object server for them), and the
//! one that cancels the requests of clients that leave the bus.

use futures_util::StreamExt;
use moed_dbus::OBJECT_PATH;
use moed_dbus::wire::{self, WireStr, limits};
use moed_plugins::Failure;
use moed_service::{Service, ServiceEvent, ServiceEvents};
use zbus::Connection;
use zbus::object_server::{InterfaceRef, SignalEmitter};

use super::engine_iface::EngineIface;
use super::models_iface::ModelsIface;
use super::plugins_iface::PluginsIface;

/// Subscribes now (so nothing published from here on is missed) and tells the bus about every
/// service event until the service is gone. Call once the interfaces are served.
pub fn spawn_event_watcher(service: &Service, conn: Connection) {
    let events = service.subscribe();
    tokio::spawn(async move {
        let server = conn.object_server();
        let (Ok(engine), Ok(models)) = (
            server.interface::<_, EngineIface>(OBJECT_PATH).await,
            server.interface::<_, ModelsIface>(OBJECT_PATH).await,
        ) else {
            log::error!("event watcher: the Engine and Models interfaces are not served");
            return;
        };
        watch_events(events, &conn, engine, models).await;
    });
}

async fn watch_events(
    mut events: ServiceEvents,
    conn: &Connection,
    engine: InterfaceRef<EngineIface>,
    models: InterfaceRef<ModelsIface>,
) {
    while let Some(event) = events.next().await {
        let sent = match event {
            ServiceEvent::Changed => properties_changed(&engine, &models).await,
            ServiceEvent::Load(_) => {
                let e = engine.signal_emitter();
                let iface = engine.get().await;
                let running = iface.active_requests_changed(e).await;
                running.and(iface.queued_requests_changed(e).await)
            }
            ServiceEvent::ModelLoaded(name) => {
                let name = WireStr::from_string(name, limits::NAME);
                ModelsIface::model_loaded(models.signal_emitter(), &name).await
            }
            ServiceEvent::ModelUnloaded(name) => {
                let name = WireStr::from_string(name, limits::NAME);
                ModelsIface::model_unloaded(models.signal_emitter(), &name).await
            }
            ServiceEvent::PluginFailed(failure) => plugin_failed(conn, &failure).await,
        };
        if let Err(err) = sent {
            log::debug!("a service event was not sent on the bus: {err}");
        }
    }
}

/// The Engine and Models properties that follow models, status and configuration; each is
/// tried even when one before it could not be sent.
async fn properties_changed(
    engine: &InterfaceRef<EngineIface>,
    models: &InterfaceRef<ModelsIface>,
) -> zbus::Result<()> {
    let e = engine.signal_emitter();
    let iface = engine.get().await;
    let sent = [
        iface.state_changed(e).await,
        iface.model_changed(e).await,
        iface.execution_provider_changed(e).await,
        iface.max_concurrent_changed(e).await,
        iface.queue_depth_changed(e).await,
    ];
    let m = models.signal_emitter();
    let iface = models.get().await;
    let models_sent = [
        iface.loaded_models_changed(m).await,
        iface.model_directories_changed(m).await,
    ];
    sent.into_iter().chain(models_sent).collect()
}

async fn plugin_failed(conn: &Connection, f: &Failure) -> zbus::Result<()> {
    let emitter = SignalEmitter::new(conn, OBJECT_PATH)?;
    let name = WireStr::new(&f.plugin, limits::NAME);
    let sent = PluginsIface::plugin_failed(
        &emitter,
        &name,
        &WireStr::new(&f.kind, limits::NAME),
        &WireStr::new(&f.message, limits::ALERT_MESSAGE),
        f.disabled,
    )
    .await;
    if let Err(e) = &sent {
        log::warn!(
            "PluginFailed for {} not sent: {e}",
            wire::log_line(&name, limits::NAME)
        );
    }
    sent
}

/// Watches `NameOwnerChanged`: a unique name that loses its owner is a client that left.
pub fn spawn_owner_watch(service: &Service, conn: Connection) {
    let scheduler = service.scheduler.clone();
    tokio::spawn(async move {
        let proxy = match zbus::fdo::DBusProxy::new(&conn).await {
            Ok(p) => p,
            Err(err) => {
                log::error!("cannot watch clients leaving the bus: {err}");
                return;
            }
        };
        let mut changes = match proxy.receive_name_owner_changed().await {
            Ok(s) => s,
            Err(err) => {
                log::error!("cannot watch clients leaving the bus: {err}");
                return;
            }
        };
        while let Some(signal) = changes.next().await {
            let Ok(args) = signal.args() else { continue };
            let name = args.name().to_string();
            if name.starts_with(':') && args.new_owner().is_none() {
                let n = scheduler.cancel_owner(&name);
                if n > 0 {
                    log::info!(client = name.as_str(); "client {name} left the bus: cancelled {n} requests");
                }
            }
        }
    });
}
