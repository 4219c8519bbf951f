//! What watches the daemon on behalf of the bus: cancelling the requests of clients that leave,
//! and telling clients when properties change (the one place that reaches into the object
//! server for the interfaces' property signals).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::StreamExt;
use moed_dbus::OBJECT_PATH;
use zbus::Connection;

use super::daemon::{Announce, Daemon};
use super::engine_iface::EngineIface;
use super::models_iface::ModelsIface;

/// Emits the Engine and Models properties that follow models, state and configuration.
pub struct PropertyAnnouncer {
    conn: Connection,
    /// Held while properties are read and announced, so the last announcement carries the
    /// latest values.
    lock: tokio::sync::Mutex<()>,
}

impl PropertyAnnouncer {
    pub fn new(conn: Connection) -> PropertyAnnouncer {
        PropertyAnnouncer {
            conn,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    async fn emit(&self) {
        let _guard = self.lock.lock().await;
        let server = self.conn.object_server();
        if let Ok(engine) = server.interface::<_, EngineIface>(OBJECT_PATH).await {
            let e = engine.signal_emitter();
            let iface = engine.get().await;
            let _ = iface.state_changed(e).await;
            let _ = iface.model_changed(e).await;
            let _ = iface.execution_provider_changed(e).await;
            let _ = iface.max_concurrent_changed(e).await;
            let _ = iface.queue_depth_changed(e).await;
        }
        if let Ok(models) = server.interface::<_, ModelsIface>(OBJECT_PATH).await {
            let m = models.signal_emitter();
            let iface = models.get().await;
            let _ = iface.loaded_models_changed(m).await;
            let _ = iface.model_directories_changed(m).await;
        }
    }
}

impl Announce for PropertyAnnouncer {
    fn announce(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(self.emit())
    }
}

/// Watches `NameOwnerChanged`: a unique name that loses its owner is a client that left.
pub fn spawn_owner_watch(daemon: Arc<Daemon>, conn: Connection) {
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
                let n = daemon.scheduler.cancel_owner(&name);
                if n > 0 {
                    log::info!(client = name.as_str(); "client {name} left the bus: cancelled {n} requests");
                }
            }
        }
    });
}

/// Emits `PropertiesChanged` for ActiveRequests and QueuedRequests as requests come and go.
pub fn spawn_load_notifier(daemon: Arc<Daemon>, conn: Connection) {
    tokio::spawn(async move {
        let Ok(engine) = conn
            .object_server()
            .interface::<_, EngineIface>(OBJECT_PATH)
            .await
        else {
            log::error!("load notifier: the Engine interface is not served");
            return;
        };
        let mut load = daemon.scheduler.subscribe();
        while load.changed().await.is_ok() {
            let e = engine.signal_emitter();
            let iface = engine.get().await;
            let _ = iface.active_requests_changed(e).await;
            let _ = iface.queued_requests_changed(e).await;
        }
    });
}
