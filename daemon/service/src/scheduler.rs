//! Admission and concurrency: at most `max_concurrent` requests execute, at most `queue_depth`
//! wait; past that a caller gets `Busy`. Waiting requests start in the order they were admitted
//! (a cancelled one gives up its turn). Every request has a cancel flag, found by id or by the
//! bus name of the client that made it (cancelled when that client leaves the bus). One user id
//! holds at most `per_user` of the places (running and queued), so a single user's burst cannot
//! take every slot and make everyone else wait or get `Busy`.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::ServiceError;

/// Counts published for the `ActiveRequests` / `QueuedRequests` properties.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Load {
    pub running: u32,
    pub queued: u32,
}

struct Entry {
    owner: String,
    uid: u32,
    cancel: Arc<AtomicBool>,
}

struct Inner {
    max_concurrent: u32,
    queue_depth: u32,
    /// Places (running and queued) one user id may hold.
    per_user: u32,
    /// Places held per user id; a uid with none has no entry.
    held: HashMap<u32, u32>,
    running: u32,
    queued: u32,
    draining: bool,
    requests: HashMap<u64, Entry>,
    /// Ids of the requests waiting for a slot; ids grow with admission, so the first is the oldest.
    waiting: BTreeSet<u64>,
    next_id: u64,
}

impl Inner {
    /// The oldest waiting request that is not cancelled.
    fn next_in_line(&self) -> Option<u64> {
        self.waiting.iter().copied().find(|id| {
            self.requests
                .get(id)
                .is_some_and(|e| !e.cancel.load(Ordering::SeqCst))
        })
    }
}

pub struct Scheduler {
    inner: Mutex<Inner>,
    changed: Notify,
    load_tx: watch::Sender<Load>,
}

/// An admitted request, waiting or running; dropping it frees its place.
pub struct Ticket {
    scheduler: Arc<Scheduler>,
    id: u64,
    cancel: Arc<AtomicBool>,
    running: bool,
}

impl Scheduler {
    pub fn new(max_concurrent: u32, queue_depth: u32) -> Arc<Scheduler> {
        let (load_tx, _) = watch::channel(Load::default());
        Arc::new(Scheduler {
            inner: Mutex::new(Inner {
                max_concurrent: max_concurrent.max(1),
                queue_depth,
                per_user: u32::MAX,
                held: HashMap::new(),
                running: 0,
                queued: 0,
                draining: false,
                requests: HashMap::new(),
                waiting: BTreeSet::new(),
                next_id: 1,
            }),
            changed: Notify::new(),
            load_tx,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves plain counters behind; keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish(&self, inner: &Inner) {
        self.load_tx.send_replace(Load {
            running: inner.running,
            queued: inner.queued,
        });
    }

    pub fn subscribe(&self) -> watch::Receiver<Load> {
        self.load_tx.subscribe()
    }

    pub fn load(&self) -> Load {
        let inner = self.lock();
        Load {
            running: inner.running,
            queued: inner.queued,
        }
    }

    pub fn limits(&self) -> (u32, u32) {
        let inner = self.lock();
        (inner.max_concurrent, inner.queue_depth)
    }

    /// New limits (SIGHUP); running requests are not touched, waiting ones may start.
    pub fn set_limits(&self, max_concurrent: u32, queue_depth: u32) {
        let mut inner = self.lock();
        inner.max_concurrent = max_concurrent.max(1);
        inner.queue_depth = queue_depth;
        drop(inner);
        self.changed.notify_waiters();
    }

    /// The places one user id may hold (`service.max_requests_per_user`); those already held
    /// above a lowered limit finish normally.
    pub fn set_per_user(&self, per_user: u32) {
        self.lock().per_user = per_user.max(1);
    }

    /// Takes a place in the queue for a request of `owner` (a unique bus name) of user `uid`.
    pub fn admit(self: &Arc<Self>, owner: &str, uid: u32) -> Result<Ticket, ServiceError> {
        let mut inner = self.lock();
        if inner.draining {
            return Err(ServiceError::ShuttingDown(
                "moed is shutting down and takes no new requests; retry once it is back".into(),
            ));
        }
        let capacity = inner.max_concurrent as u64 + inner.queue_depth as u64;
        if (inner.running + inner.queued) as u64 >= capacity {
            return Err(ServiceError::Busy(format!(
                "all {} execution slots and {} queue places are taken; retry later (service.max_concurrent, service.queue_depth)",
                inner.max_concurrent, inner.queue_depth
            )));
        }
        let held = inner.held.get(&uid).copied().unwrap_or(0);
        if held >= inner.per_user {
            return Err(ServiceError::Busy(format!(
                "user {uid} already has {held} requests running or queued, at most {} per user; retry when one finishes (service.max_requests_per_user)",
                inner.per_user
            )));
        }
        *inner.held.entry(uid).or_insert(0) += 1;
        let id = inner.next_id;
        inner.next_id += 1;
        inner.queued += 1;
        inner.waiting.insert(id);
        let cancel = Arc::new(AtomicBool::new(false));
        inner.requests.insert(
            id,
            Entry {
                owner: owner.to_string(),
                uid,
                cancel: cancel.clone(),
            },
        );
        self.publish(&inner);
        Ok(Ticket {
            scheduler: self.clone(),
            id,
            cancel,
            running: false,
        })
    }

    /// Sets the cancel flag of request `id`; false when there is no such request.
    pub fn cancel(&self, id: u64) -> bool {
        let inner = self.lock();
        let found = inner
            .requests
            .get(&id)
            .map(|e| e.cancel.store(true, Ordering::SeqCst));
        drop(inner);
        self.changed.notify_waiters();
        found.is_some()
    }

    /// Cancels every request of a client; returns how many.
    pub fn cancel_owner(&self, owner: &str) -> usize {
        let inner = self.lock();
        let mut n = 0;
        for entry in inner.requests.values().filter(|e| e.owner == owner) {
            entry.cancel.store(true, Ordering::SeqCst);
            n += 1;
        }
        drop(inner);
        self.changed.notify_waiters();
        n
    }

    /// Refuses new requests with `ShuttingDown` from now on.
    pub fn stop_admitting(&self) {
        self.lock().draining = true;
    }

    /// Stops admitting; returns once no request is queued or running, or after `timeout`
    /// (then the rest are cancelled and awaited a little longer). Returns those left.
    pub async fn drain(&self, timeout: Duration) -> usize {
        self.lock().draining = true;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let left = {
                let inner = self.lock();
                (inner.running + inner.queued) as usize
            };
            if left == 0 {
                return 0;
            }
            if tokio::time::Instant::now() >= deadline {
                let inner = self.lock();
                for entry in inner.requests.values() {
                    entry.cancel.store(true, Ordering::SeqCst);
                }
                return left;
            }
            let _ = tokio::time::timeout_at(deadline, notified).await;
        }
    }
}

impl Ticket {
    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        self.cancel.clone()
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }

    /// Waits for an execution slot, in admission order; `Cancelled` when the request is cancelled
    /// meanwhile.
    pub async fn run_slot(&mut self) -> Result<(), ServiceError> {
        loop {
            let notified = self.scheduler.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_cancelled() {
                return Err(ServiceError::Cancelled(
                    "the request was cancelled while queued".into(),
                ));
            }
            {
                let mut inner = self.scheduler.lock();
                if inner.running < inner.max_concurrent && inner.next_in_line() == Some(self.id) {
                    inner.running += 1;
                    inner.queued -= 1;
                    inner.waiting.remove(&self.id);
                    self.running = true;
                    self.scheduler.publish(&inner);
                    return Ok(());
                }
            }
            notified.await;
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut inner = self.scheduler.lock();
        if self.running {
            inner.running -= 1;
        } else {
            inner.queued -= 1;
            inner.waiting.remove(&self.id);
        }
        if let Some(entry) = inner.requests.remove(&self.id)
            && let Some(n) = inner.held.get_mut(&entry.uid)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                inner.held.remove(&entry.uid);
            }
        }
        self.scheduler.publish(&inner);
        drop(inner);
        self.scheduler.changed.notify_waiters();
    }
}

#[cfg(test)]
#[path = "scheduler_tests.rs"]
mod tests;
