//! What every D-Bus object of the daemon shares: the [`Service`] it adapts, the access policy
//! and the connection. It names no interface type: the interfaces hold it, and the one watcher
//! (`watch.rs`) tells clients what changed.

use std::sync::{Arc, OnceLock, RwLock};

use moed_dbus::options::OptionDict;
use moed_dbus::{EngineState, MoedError};
use zbus::Connection;
use zbus::message::Header;

use moed_service::Service;
use moed_service::service::ServiceStatus;

use super::auth::{AccessPolicy, Action, Caller, SubjectMode};
use super::peer;

pub struct Daemon {
    pub service: Arc<Service>,
    access: RwLock<Arc<AccessPolicy>>,
    conn: OnceLock<Connection>,
    /// Streaming requests whose signals are still being sent. The service's drain ends when the
    /// last request has run, before its `Finished` signal is out: the daemon waits for this to
    /// reach 0 before it exits, so a drained request's client always gets its `Finished`.
    streams: tokio::sync::watch::Sender<usize>,
}

/// Counts one streaming request until dropped (see [`Daemon::stream_started`]).
pub struct StreamGuard(tokio::sync::watch::Sender<usize>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl Daemon {
    pub fn new(service: Arc<Service>, access: AccessPolicy) -> Arc<Daemon> {
        Arc::new(Daemon {
            service,
            access: RwLock::new(Arc::new(access)),
            conn: OnceLock::new(),
            streams: tokio::sync::watch::Sender::new(0),
        })
    }

    /// A streaming request starts sending signals; it is counted until the guard is dropped.
    pub fn stream_started(&self) -> StreamGuard {
        self.streams.send_modify(|n| *n += 1);
        StreamGuard(self.streams.clone())
    }

    /// Waits until no streaming request is still sending, at most `timeout`; false if some were.
    pub async fn streams_sent(&self, timeout: std::time::Duration) -> bool {
        let mut rx = self.streams.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|n| *n == 0))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The policy in force after a reload.
    pub fn set_access(&self, access: AccessPolicy) {
        *self.access.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(access);
    }

    pub fn set_connection(&self, conn: Connection) {
        let _ = self.conn.set(conn);
    }

    pub fn connection(&self) -> Result<&Connection, MoedError> {
        self.conn
            .get()
            .ok_or_else(|| MoedError::Failed("the daemon is not connected to a bus yet".into()))
    }

    /// The `State` property's value for the service's status.
    pub fn engine_state(&self) -> EngineState {
        match self.service.status() {
            ServiceStatus::Loading => EngineState::Loading,
            ServiceStatus::Ready => EngineState::Ready,
            ServiceStatus::NoModel => EngineState::NoModel,
            ServiceStatus::Draining => EngineState::Draining,
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

    /// The caller of an inference method, which may be the peer of a socket a bridge passed
    /// (option `client_socket`, serve/peer.rs): the bridge must be trusted to pass sockets, and
    /// the peer must be allowed to use moed.
    pub async fn user_for(
        &self,
        header: &Header<'_>,
        options: &OptionDict,
    ) -> Result<Caller, MoedError> {
        let Some(socket) = peer::client_socket(options)? else {
            return self.user(header).await;
        };
        let access = self.access();
        let bridge = Caller::from_header(self.connection()?, header).await?;
        access.check_bridge(&bridge)?;
        let caller = peer::delegated(&bridge, socket)?;
        access.check_use(&caller)?;
        log::debug!(
            "{} speaks for uid {} (pid {:?})",
            bridge.unique_name,
            caller.uid,
            caller.pid
        );
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
