//! systemd readiness: `READY=1` once the model is loaded and the name owned, `STATUS=` updates,
//! `STOPPING=1`, and watchdog pings when `WatchdogSec=` is set. Without `$NOTIFY_SOCKET` all of it
//! does nothing.

use sd_notify::NotifyState;

fn send(states: &[NotifyState<'_>]) {
    if let Err(err) = sd_notify::notify(states) {
        log::warn!("sd_notify: {err}");
    }
}

pub fn status(text: &str) {
    send(&[NotifyState::Status(text)]);
}

pub fn ready(text: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(text)]);
}

pub fn stopping(text: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(text)]);
}

/// Pings the watchdog at half its interval, for as long as the runtime runs.
pub fn spawn_watchdog() {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    log::info!("watchdog enabled: pinging every {:?}", interval / 2);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval / 2);
        loop {
            ticker.tick().await;
            send(&[NotifyState::Watchdog]);
        }
    });
}
