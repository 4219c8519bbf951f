//! What the plugin host reports besides a call's result: failed calls go to a channel an adapter
//! drains (the D-Bus one sends them as the `PluginFailed` signal; the host calls from plugin
//! threads), and every event is logged. Alerts reach the audit log through the request path
//! (`Daemon::record_alerts`, with the request id and the caller), except a gate's: the routing
//! hook has no request to return them to, so they are logged here, without a request id.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use moed_plugins::{Alert, Failure, HostEvents, Kind, LogEvents};
use tokio::sync::mpsc::UnboundedSender;

use crate::plugin_set::PluginSet;
use crate::state::{AlertEntry, StateStore};

/// A failure that does not disable the plugin is signalled at most this often per plugin; the
/// one that disables it always is.
const SIGNAL_INTERVAL: Duration = Duration::from_secs(1);

pub struct DaemonEvents {
    state: StateStore,
    current: Arc<RwLock<Arc<PluginSet>>>,
    failures: UnboundedSender<Failure>,
    last_signal: Mutex<HashMap<String, Instant>>,
}

impl DaemonEvents {
    pub fn new(
        state: StateStore,
        current: Arc<RwLock<Arc<PluginSet>>>,
        failures: UnboundedSender<Failure>,
    ) -> DaemonEvents {
        DaemonEvents {
            state,
            current,
            failures,
            last_signal: Mutex::new(HashMap::new()),
        }
    }

    fn is_gate(&self, plugin: &str) -> bool {
        let set = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        set.get(plugin)
            .is_some_and(|p| p.plugin.kind() == Kind::Gate)
    }
}

impl HostEvents for DaemonEvents {
    fn alert(&self, alert: &Alert) {
        LogEvents.alert(alert);
        if !self.is_gate(&alert.plugin) {
            return;
        }
        let entry = AlertEntry {
            seq: 0,
            time: crate::clock::unix_now(),
            request_id: None,
            plugin: alert.plugin.clone(),
            severity: alert.severity.as_str().to_string(),
            code: alert.code.clone(),
            message: alert.message.clone(),
            uid: None,
        };
        if let Err(err) = self.state.append_alerts(&[entry]) {
            log::error!(
                "the alert audit log lost an alert of gate {}: {err}",
                alert.plugin
            );
        }
    }

    fn failure(&self, failure: &Failure) {
        LogEvents.failure(failure);
        if !failure.disabled {
            let mut last = self.last_signal.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            if last
                .get(&failure.plugin)
                .is_some_and(|t| now.duration_since(*t) < SIGNAL_INTERVAL)
            {
                return;
            }
            last.insert(failure.plugin.clone(), now);
        }
        // The receiver lives as long as the serving task; after it, nobody is left to tell.
        let _ = self.failures.send(failure.clone());
    }
}
