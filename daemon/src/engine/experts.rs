//! Lazily loaded expert sessions with an optional byte budget and least-recently-used eviction.
//!
//! A session is created on an expert's first use. With `expert_memory_budget` set, loading one that
//! would exceed the budget first drops the least recently used sessions (their file bytes, as the
//! manifest lists them, are what the budget counts). A session in use by a running request stays
//! alive through its `Arc` until that request is done with it.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

use super::EngineError;
use super::graph::Graph;
use super::stats::Counters;

type Key = (usize, usize);

struct Entry {
    graph: Arc<Graph>,
    bytes: u64,
    tick: u64,
}

#[derive(Default)]
struct State {
    resident: HashMap<Key, Entry>,
    /// tick -> key, oldest first.
    lru: BTreeMap<u64, Key>,
    tick: u64,
    bytes: u64,
}

pub(crate) struct ExpertCache {
    budget: Option<u64>,
    state: Mutex<State>,
}

impl ExpertCache {
    pub fn new(budget: Option<u64>) -> ExpertCache {
        ExpertCache {
            budget,
            state: Mutex::new(State::default()),
        }
    }

    /// The session of `(layer, expert)`, created with `load` when not resident.
    ///
    /// Loading happens under the cache lock: two requests needing the same cold expert load it once,
    /// at the price of other requests' lookups waiting meanwhile.
    pub fn get(
        &self,
        key: Key,
        bytes: u64,
        counters: &Counters,
        load: impl FnOnce() -> Result<Graph, EngineError>,
    ) -> Result<Arc<Graph>, EngineError> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.tick += 1;
        let tick = st.tick;
        if let Some(entry) = st.resident.get_mut(&key) {
            let old = std::mem::replace(&mut entry.tick, tick);
            let graph = Arc::clone(&entry.graph);
            st.lru.remove(&old);
            st.lru.insert(tick, key);
            counters.hits.fetch_add(1, Relaxed);
            return Ok(graph);
        }
        counters.misses.fetch_add(1, Relaxed);
        if let Some(budget) = self.budget {
            while st.bytes + bytes > budget {
                let Some((_, victim)) = st.lru.pop_first() else {
                    break;
                };
                if let Some(e) = st.resident.remove(&victim) {
                    st.bytes -= e.bytes;
                    counters.evictions.fetch_add(1, Relaxed);
                    log::debug!(
                        "expert cache: evicted layer {} expert {}",
                        victim.0,
                        victim.1
                    );
                }
            }
            counters.resident_bytes.store(st.bytes, Relaxed);
            counters
                .resident_experts
                .store(st.resident.len() as u64, Relaxed);
        }
        let graph = Arc::new(load()?);
        st.resident.insert(
            key,
            Entry {
                graph: Arc::clone(&graph),
                bytes,
                tick,
            },
        );
        st.lru.insert(tick, key);
        st.bytes += bytes;
        counters.resident_bytes.store(st.bytes, Relaxed);
        counters
            .resident_experts
            .store(st.resident.len() as u64, Relaxed);
        Ok(graph)
    }

    /// Drops every resident session.
    pub fn clear(&self, counters: &Counters) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        *st = State::default();
        counters.resident_bytes.store(0, Relaxed);
        counters.resident_experts.store(0, Relaxed);
    }
}
