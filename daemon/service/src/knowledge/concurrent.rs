//! What the plugin host sees of a configured source: searches started ahead (every source of a
//! retrieval call at once, so a hung database costs only itself), a wait bounded by the share of
//! the retrieval plugin's time limit a source may use, and rows made safe for the bus (NUL bytes
//! replaced, fields clipped) as they are read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use moed_plugins::{DataSource, Document, HostOptions, RetrievalPlugin, SourceError};
use moed_wire as wire;

/// Part of the retrieval plugin's base time limit that one source may take (the rest is the
/// plugin's own work). Sources run concurrently, so this bounds the wait for all of them.
pub fn source_budget() -> Duration {
    HostOptions::default().retrieval.time.mul_f64(0.75)
}

/// Time a database source needs besides its statement timeout (connecting, round trips).
pub const CONNECT_MARGIN: Duration = Duration::from_millis(500);

/// The largest `timeout_ms` that fits in [`source_budget`] with [`CONNECT_MARGIN`].
pub fn max_timeout_ms() -> u64 {
    source_budget().saturating_sub(CONNECT_MARGIN).as_millis() as u64
}

type Outcome = Result<Vec<Document>, SourceError>;

/// The result of a started search, once it is there.
#[derive(Default)]
struct Slot {
    done: Mutex<Option<Outcome>>,
    ready: Condvar,
}

struct Pending {
    id: u64,
    query: String,
    limit: usize,
    slot: Arc<Slot>,
}

#[derive(Default)]
struct Started {
    next: AtomicU64,
    pending: Mutex<Vec<Pending>>,
}

/// Forgets a started search when the retrieval call is over.
struct Guard {
    id: u64,
    started: Arc<Started>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.started
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|p| p.id != self.id);
    }
}

/// A source as registered in the plugin host.
pub struct Routed {
    label: String,
    inner: Arc<dyn DataSource>,
    /// Databases are started ahead; the embedded store answers from memory at once.
    ahead: bool,
    started: Arc<Started>,
    times: Option<Arc<super::SearchTimes>>,
}

impl Routed {
    pub fn new(label: &str, inner: Arc<dyn DataSource>, ahead: bool) -> Routed {
        Routed {
            label: label.to_string(),
            inner,
            ahead,
            started: Arc::default(),
            times: None,
        }
    }

    /// Records each search's wait and outcome in `times`.
    pub fn timed(mut self, times: Arc<super::SearchTimes>) -> Routed {
        self.times = Some(times);
        self
    }

    fn late(&self) -> SourceError {
        SourceError::Unavailable(format!(
            "data source '{}' did not answer within {} ms (its share of the retrieval plugin's \
             time limit); the server may be down or overloaded",
            self.label,
            source_budget().as_millis()
        ))
    }

    /// The started search of `query` for at most `limit` documents, if any.
    fn find(&self, query: &str, limit: usize) -> Option<Arc<Slot>> {
        self.started
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|p| p.query == query && p.limit >= limit)
            .map(|p| p.slot.clone())
    }

    fn wait(&self, slot: &Slot, since: Instant) -> Outcome {
        let deadline = since + source_budget();
        let mut done = slot.done.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(r) = done.as_ref() {
                return r.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.late());
            }
            done = slot
                .ready
                .wait_timeout(done, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// The search, from a search started ahead when there is one.
    fn search_now(&self, query: &str, limit: usize) -> Outcome {
        let docs = match self.find(query, limit) {
            Some(slot) => {
                let mut docs = self.wait(&slot, Instant::now())?;
                docs.truncate(limit);
                docs
            }
            None if self.ahead => {
                // Not started ahead (a plugin asking again, or for more): still bounded.
                let slot = Arc::new(Slot::default());
                spawn(self.inner.clone(), query, limit, slot.clone())?;
                self.wait(&slot, Instant::now())?
            }
            None => self.inner.search(query, limit)?,
        };
        Ok(docs.into_iter().map(safe_document).collect())
    }
}

/// A row made safe to store, log and send: NUL replaced, fields clipped with a marker.
pub fn safe_document(d: Document) -> Document {
    Document {
        id: wire::owned(d.id, wire::limits::DOCUMENT_ID),
        source: wire::owned(d.source, wire::limits::DOCUMENT_TITLE),
        text: wire::owned(d.text, wire::limits::DOCUMENT_TEXT),
        score: if d.score.is_finite() { d.score } else { 0.0 },
    }
}

impl DataSource for Routed {
    fn search(&self, query: &str, limit: usize) -> Outcome {
        let since = Instant::now();
        let result = self.search_now(query, limit);
        if let Some(times) = &self.times {
            times.record(&self.label, since.elapsed(), result.is_ok());
        }
        result
    }

    fn start(&self, query: &str, limit: usize) -> Option<Box<dyn std::any::Any + Send>> {
        if !self.ahead {
            return None;
        }
        let slot = Arc::new(Slot::default());
        if let Err(e) = spawn(self.inner.clone(), query, limit, slot.clone()) {
            *slot.done.lock().unwrap_or_else(|p| p.into_inner()) = Some(Err(e));
        }
        let id = self.started.next.fetch_add(1, Ordering::Relaxed);
        self.started
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Pending {
                id,
                query: query.to_string(),
                limit,
                slot,
            });
        Some(Box::new(Guard {
            id,
            started: self.started.clone(),
        }))
    }
}

/// Starts the search of every data source the plugins may ask (their granted labels, those in
/// `wanted` when given), so that the sources run concurrently while the plugins ask for them one
/// after the other: a hung source then costs the call only its own share of the plugin's time
/// limit. The searches are forgotten when the guards are dropped (after the plugins ran).
pub fn start_ahead(
    plugins: &[RetrievalPlugin],
    query: &str,
    limit: usize,
    wanted: Option<&[String]>,
) -> Vec<Box<dyn std::any::Any + Send>> {
    let mut started: Vec<String> = Vec::new();
    let mut guards = Vec::new();
    for p in plugins {
        let (granted, registry) = p.plugin().granted_sources();
        for label in granted {
            let asked = wanted.is_none_or(|w| w.contains(&label));
            if !asked || started.contains(&label) {
                continue;
            }
            if let Some(g) = registry.get(&label).and_then(|s| s.start(query, limit)) {
                guards.push(g);
            }
            started.push(label);
        }
    }
    guards
}

/// Runs one search on a thread of its own; the caller waits on `slot` with its deadline, and a
/// hung search ends on the source's own deadline (the database's statement timeout and wait).
fn spawn(
    source: Arc<dyn DataSource>,
    query: &str,
    limit: usize,
    slot: Arc<Slot>,
) -> Result<(), SourceError> {
    let query = query.to_string();
    std::thread::Builder::new()
        .name("moed-source".into())
        .spawn(move || {
            let r = source.search(&query, limit);
            *slot.done.lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
            slot.ready.notify_all();
        })
        .map(|_| ())
        .map_err(|e| SourceError::Unavailable(format!("cannot start a search: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Slow(Duration, &'static str);

    impl DataSource for Slow {
        fn search(&self, _q: &str, limit: usize) -> Outcome {
            std::thread::sleep(self.0);
            Ok((0..limit)
                .map(|i| Document {
                    id: format!("{}{i}", self.1),
                    source: "s\0rc".into(),
                    text: "t".repeat(wire::limits::DOCUMENT_TEXT * 2),
                    score: f32::NAN,
                })
                .collect())
        }
    }

    #[test]
    fn a_hung_source_gives_up_within_its_budget_and_others_answer() {
        let times = Arc::new(super::super::SearchTimes::default());
        let hung = Routed::new("hung", Arc::new(Slow(Duration::from_secs(30), "h")), true)
            .timed(times.clone());
        let fine =
            Routed::new("fine", Arc::new(Slow(Duration::ZERO, "f\0")), true).timed(times.clone());
        let _g1 = hung.start("q", 3);
        let _g2 = fine.start("q", 3);
        // It sleeps 30 s: the error is the wait ending at the budget.
        let e = hung.search("q", 2).expect_err("hung");
        assert!(e.to_string().contains("'hung' did not answer"), "{e}");
        let docs = fine.search("q", 2).expect("fine answers");
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].id, "f\u{FFFD}0");
        assert_eq!(docs[0].source, "s\u{FFFD}rc");
        assert!(docs[0].text.len() < wire::limits::DOCUMENT_TEXT + 64);
        assert_eq!(docs[0].score, 0.0);
        // Each search's wait and outcome, per source.
        let t = times.of(&["hung".into(), "fine".into()]);
        assert_eq!((t[0].1.searches, t[0].1.failures), (1, 1));
        assert!(
            t[0].1.seconds >= source_budget().as_secs_f64() * 0.99,
            "{t:?}"
        );
        assert_eq!((t[1].1.searches, t[1].1.failures), (1, 0));
        assert!(t[1].1.seconds < t[0].1.seconds, "{t:?}");
    }

    #[test]
    fn a_dropped_guard_forgets_the_started_search() {
        let s = Routed::new("s", Arc::new(Slow(Duration::ZERO, "a")), true);
        let g = s.start("q", 2);
        assert!(s.find("q", 2).is_some());
        assert!(s.find("q", 3).is_none());
        assert!(s.find("other", 1).is_none());
        drop(g);
        assert!(s.find("q", 2).is_none());
        // Without a started search it still answers, bounded.
        assert_eq!(s.search("q", 1).expect("answers").len(), 1);
    }
}
