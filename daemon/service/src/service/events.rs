//! The service's event stream: what changed, for adapters to tell their clients (the D-Bus
//! daemon turns each into a signal or `PropertiesChanged`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use moed_plugins::Failure;
use tokio::sync::{broadcast, mpsc, watch};

use crate::scheduler::Load;

/// One thing adapters may tell their clients about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceEvent {
    /// The status, the loaded or active models, or the configuration changed: whatever shows
    /// them is stale.
    Changed,
    /// Requests running and queued.
    Load(Load),
    /// A model was loaded (by name).
    ModelLoaded(String),
    /// A model was unloaded (by name).
    ModelUnloaded(String),
    /// A plugin call failed.
    PluginFailed(Failure),
}

/// How many events a slow subscriber may fall behind before it misses some (it is then told
/// [`ServiceEvent::Changed`], which makes it read everything afresh).
const CAPACITY: usize = 256;

/// How long [`Hub::announce`] waits for subscribers: a stuck adapter must not stall the service.
const ANNOUNCE_WAIT: Duration = Duration::from_secs(2);

pub(super) struct Hub {
    sender: broadcast::Sender<(u64, ServiceEvent)>,
    /// The last sequence number given; shared with the task republishing plugin failures.
    seq: Arc<AtomicU64>,
    /// The highest sequence number a subscriber has handled.
    handled: watch::Sender<u64>,
    load: watch::Receiver<Load>,
}

impl Hub {
    pub(super) fn new(load: watch::Receiver<Load>) -> Hub {
        Hub {
            sender: broadcast::channel(CAPACITY).0,
            seq: Arc::new(AtomicU64::new(0)),
            handled: watch::channel(0).0,
            load,
        }
    }

    pub(super) fn publish(&self, event: ServiceEvent) -> u64 {
        send(&self.sender, &self.seq, event)
    }

    /// Publishes `Changed` and waits until a subscriber has handled it (or [`ANNOUNCE_WAIT`]).
    pub(super) async fn announce(&self) {
        self.publish_and_wait(ServiceEvent::Changed).await;
    }

    pub(super) async fn publish_and_wait(&self, event: ServiceEvent) {
        let seq = self.publish(event);
        if self.sender.receiver_count() == 0 {
            return;
        }
        let mut handled = self.handled.subscribe();
        let waited =
            tokio::time::timeout(ANNOUNCE_WAIT, handled.wait_for(|done| *done >= seq)).await;
        if waited.is_err() {
            log::warn!("no adapter handled service event {seq} within {ANNOUNCE_WAIT:?}");
        }
    }

    pub(super) fn subscribe(&self) -> ServiceEvents {
        ServiceEvents {
            events: self.sender.subscribe(),
            load: self.load.clone(),
            handled: self.handled.clone(),
            seq: self.seq.clone(),
            pending: None,
            load_open: true,
        }
    }

    /// Republishes the plugin host's failure reports until it stops sending them.
    pub(super) fn forward_failures(&self, mut failures: mpsc::UnboundedReceiver<Failure>) {
        let (sender, seq) = (self.sender.clone(), self.seq.clone());
        tokio::spawn(async move {
            while let Some(failure) = failures.recv().await {
                send(&sender, &seq, ServiceEvent::PluginFailed(failure));
            }
        });
    }
}

fn send(
    sender: &broadcast::Sender<(u64, ServiceEvent)>,
    seq: &AtomicU64,
    event: ServiceEvent,
) -> u64 {
    let n = seq.fetch_add(1, Ordering::SeqCst) + 1;
    // No subscriber is not an error: nobody needs telling.
    let _ = sender.send((n, event));
    n
}

/// A subscription to the service's events. An event counts as handled when the subscriber
/// asks for the next one.
pub struct ServiceEvents {
    events: broadcast::Receiver<(u64, ServiceEvent)>,
    load: watch::Receiver<Load>,
    handled: watch::Sender<u64>,
    seq: Arc<AtomicU64>,
    /// The sequence number of the event returned last, handled once `next` is called again.
    pending: Option<u64>,
    load_open: bool,
}

impl ServiceEvents {
    /// The next event; `None` once the service is gone.
    pub async fn next(&mut self) -> Option<ServiceEvent> {
        if let Some(seq) = self.pending.take() {
            self.handled.send_if_modified(|done| {
                let newer = seq > *done;
                if newer {
                    *done = seq;
                }
                newer
            });
        }
        loop {
            tokio::select! {
                event = self.events.recv() => match event {
                    Ok((seq, event)) => {
                        self.pending = Some(seq);
                        return Some(event);
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        log::warn!("an adapter fell {missed} service events behind; it refreshes everything");
                        // Refreshing covers every event sent so far, the missed ones included.
                        self.pending = Some(self.seq.load(Ordering::SeqCst));
                        return Some(ServiceEvent::Changed);
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                changed = self.load.changed(), if self.load_open => match changed {
                    Ok(()) => return Some(ServiceEvent::Load(*self.load.borrow_and_update())),
                    // The scheduler is gone with the service; the event channel ends too.
                    Err(_) => self.load_open = false,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub() -> (Hub, watch::Sender<Load>) {
        let (load_tx, load_rx) = watch::channel(Load::default());
        (Hub::new(load_rx), load_tx)
    }

    #[tokio::test]
    async fn announce_without_subscribers_returns_at_once() {
        let (hub, _load) = hub();
        tokio::time::timeout(Duration::from_millis(500), hub.announce())
            .await
            .expect("nobody to wait for");
    }

    #[tokio::test]
    async fn announce_returns_once_the_subscriber_asks_for_the_next_event() {
        let (hub, _load) = hub();
        let hub = Arc::new(hub);
        let mut events = hub.subscribe();
        let announcing = tokio::spawn({
            let hub = hub.clone();
            async move { hub.announce().await }
        });
        assert_eq!(events.next().await, Some(ServiceEvent::Changed));
        // Handled only when the subscriber comes back for more.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !announcing.is_finished(),
            "announce returned before it was handled"
        );
        let next = tokio::spawn(async move {
            let _ = events.next().await;
        });
        tokio::time::timeout(Duration::from_secs(1), announcing)
            .await
            .expect("announce returns once handled")
            .expect("task");
        next.abort();
    }

    #[tokio::test]
    async fn load_changes_and_published_events_arrive_in_one_stream() {
        let (hub, load) = hub();
        let mut events = hub.subscribe();
        hub.publish(ServiceEvent::ModelLoaded("m".into()));
        assert_eq!(
            events.next().await,
            Some(ServiceEvent::ModelLoaded("m".into()))
        );
        let busy = Load {
            running: 1,
            queued: 2,
        };
        load.send_replace(busy);
        assert_eq!(events.next().await, Some(ServiceEvent::Load(busy)));
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_is_told_to_refresh() {
        let (hub, _load) = hub();
        let mut events = hub.subscribe();
        for i in 0..CAPACITY + 10 {
            hub.publish(ServiceEvent::ModelUnloaded(format!("m{i}")));
        }
        assert_eq!(events.next().await, Some(ServiceEvent::Changed));
        // Then it goes on with what is still there.
        assert!(matches!(
            events.next().await,
            Some(ServiceEvent::ModelUnloaded(_))
        ));
    }

    #[tokio::test]
    async fn plugin_failures_are_republished() {
        let (hub, _load) = hub();
        let mut events = hub.subscribe();
        let (tx, rx) = mpsc::unbounded_channel();
        hub.forward_failures(rx);
        let failure = Failure {
            plugin: "p".into(),
            kind: "trap".into(),
            message: "m".into(),
            consecutive: 1,
            disabled: false,
        };
        tx.send(failure.clone()).expect("send");
        assert_eq!(
            events.next().await,
            Some(ServiceEvent::PluginFailed(failure))
        );
    }
}
