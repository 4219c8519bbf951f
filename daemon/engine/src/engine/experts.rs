//! Lazily loaded expert sessions with an optional byte budget and least-recently-used eviction.
//!
//! A session is created on an expert's first use. With `expert_memory_budget` set, loading one that
//! would exceed the budget first drops the least recently used sessions (their file bytes, as the
//! manifest lists them, are what the budget counts). A session in use by a running request stays
//! alive through its `Arc` until that request is done with it.
//!
//! Sessions on a GPU provider are pinned: placement chose them for the GPU's memory, so they count
//! neither against nor toward the budget (of host memory) and are never evicted; a revisit of the
//! placement drops them with [`ExpertCache::remove`]. The hottest experts on the CPU can be held
//! too ([`ExpertCache::hold`]): they count against the budget but are never evicted.
//!
//! Sessions are created outside the cache lock: creating one is CPU-bound (ONNX Runtime parses the
//! graph and prepacks its weights), so several threads can create different experts at once
//! ([`run_parallel`]); a thread asking for an expert another thread is creating waits for it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::EngineError;
use super::graph::Graph;
use super::stats::Counters;

type Key = (usize, usize);

struct Entry {
    graph: Arc<Graph>,
    bytes: u64,
    tick: u64,
    /// Outside the LRU order: never evicted.
    pinned: bool,
    /// Counted in the budget's bytes (every session on the CPU).
    counted: bool,
}

#[derive(Default)]
struct State {
    resident: HashMap<Key, Entry>,
    /// tick -> key, oldest first.
    lru: BTreeMap<u64, Key>,
    /// Experts whose session a thread is creating; their bytes are already counted.
    loading: HashSet<Key>,
    tick: u64,
    /// Bytes of the counted sessions, resident or being created.
    bytes: u64,
    /// Of those, the bytes and number of the held ones.
    held_bytes: u64,
    held: u64,
}

pub(crate) struct ExpertCache {
    budget: Option<u64>,
    state: Mutex<State>,
    loaded: Condvar,
    /// File bytes of the sessions created since [`ExpertCache::take_fresh`] last said so.
    fresh: AtomicU64,
}

impl ExpertCache {
    pub fn new(budget: Option<u64>) -> ExpertCache {
        ExpertCache {
            budget,
            state: Mutex::new(State::default()),
            loaded: Condvar::new(),
            fresh: AtomicU64::new(0),
        }
    }

    pub fn budget(&self) -> Option<u64> {
        self.budget
    }

    /// Whether at least `threshold` file bytes of sessions were created since it last said so
    /// (the counter then starts again).
    pub fn take_fresh(&self, threshold: u64) -> bool {
        let taken = self
            .fresh
            .fetch_update(Relaxed, Relaxed, |b| (b >= threshold).then_some(0));
        taken.is_ok()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `key` has a session (or one is being created).
    pub fn has(&self, key: Key) -> bool {
        let st = self.lock();
        st.resident.contains_key(&key) || st.loading.contains(&key)
    }

    /// The session of `(layer, expert)`, created with `load` when not resident. `gpu`: placement
    /// puts it on a GPU provider, so nothing is evicted for it; `load` says whether the session
    /// it created is pinned (false when it had to fall back to the CPU).
    ///
    /// Two requests needing the same cold expert load it once: the second waits for the first.
    pub fn get(
        &self,
        key: Key,
        bytes: u64,
        gpu: bool,
        counters: &Counters,
        load: impl FnOnce() -> Result<(Graph, bool), EngineError>,
    ) -> Result<Arc<Graph>, EngineError> {
        let mut st = self.lock();
        loop {
            st.tick += 1;
            let tick = st.tick;
            if let Some(entry) = st.resident.get_mut(&key) {
                let graph = Arc::clone(&entry.graph);
                if !entry.pinned {
                    let old = std::mem::replace(&mut entry.tick, tick);
                    st.lru.remove(&old);
                    st.lru.insert(tick, key);
                }
                counters.hits.fetch_add(1, Relaxed);
                return Ok(graph);
            }
            if !st.loading.contains(&key) {
                break;
            }
            // Another thread creates it; if that fails, this one tries itself.
            st = self.loaded.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        counters.misses.fetch_add(1, Relaxed);
        let counted = if gpu { 0 } else { bytes };
        if let Some(budget) = self.budget {
            while st.bytes + counted > budget {
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
        }
        st.loading.insert(key);
        st.bytes += counted;
        publish(&st, counters);
        drop(st);

        let started = std::time::Instant::now();
        let result = load();
        if result.is_ok() {
            let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
            counters.load_bytes.fetch_add(bytes, Relaxed);
            counters.load_nanos.fetch_add(nanos, Relaxed);
        }

        let mut st = self.lock();
        st.loading.remove(&key);
        let out = match result {
            Ok((graph, pinned)) => {
                self.fresh.fetch_add(bytes, Relaxed);
                let graph = Arc::new(graph);
                st.tick += 1;
                let tick = st.tick;
                st.resident.insert(
                    key,
                    Entry {
                        graph: Arc::clone(&graph),
                        bytes,
                        tick,
                        pinned,
                        counted: !pinned,
                    },
                );
                st.bytes -= counted;
                if !pinned {
                    // A GPU expert that fell back to the CPU counts from now on; the budget is
                    // met again at the next expert created.
                    st.bytes += bytes;
                    st.lru.insert(tick, key);
                }
                Ok(graph)
            }
            Err(e) => {
                st.bytes -= counted;
                Err(e)
            }
        };
        publish(&st, counters);
        drop(st);
        self.loaded.notify_all();
        out
    }

    /// Drops the session of `key` if resident (a request running it keeps it until done), so that
    /// the next use creates it again, on the provider placement gives it then.
    pub fn remove(&self, key: Key, counters: &Counters) {
        let mut st = self.lock();
        if let Some(e) = st.resident.remove(&key) {
            forget(&mut st, &e);
            publish(&st, counters);
        }
    }

    /// Takes the resident session of `key` out of the LRU order so that it is never evicted; it
    /// still counts against the budget. False when it is not resident (or on a GPU provider).
    pub fn hold(&self, key: Key, counters: &Counters) -> bool {
        let mut st = self.lock();
        let Some(e) = st.resident.get_mut(&key) else {
            return false;
        };
        if !e.counted {
            return false;
        }
        if e.pinned {
            return true;
        }
        e.pinned = true;
        let (tick, bytes) = (e.tick, e.bytes);
        st.lru.remove(&tick);
        st.held_bytes += bytes;
        st.held += 1;
        publish(&st, counters);
        true
    }

    /// Drops every resident session (those being created stay counted until they are in).
    pub fn clear(&self, counters: &Counters) {
        let mut st = self.lock();
        for (_, e) in std::mem::take(&mut st.resident) {
            forget(&mut st, &e);
        }
        publish(&st, counters);
    }
}

/// Takes a session dropped from `resident` out of the order and the byte counts.
fn forget(st: &mut State, e: &Entry) {
    if e.counted {
        st.bytes = st.bytes.saturating_sub(e.bytes);
        if e.pinned {
            st.held_bytes = st.held_bytes.saturating_sub(e.bytes);
            st.held = st.held.saturating_sub(1);
        } else {
            st.lru.remove(&e.tick);
        }
    }
}

fn publish(st: &State, counters: &Counters) {
    counters.resident_bytes.store(st.bytes, Relaxed);
    counters
        .resident_experts
        .store(st.resident.len() as u64, Relaxed);
    counters.held_bytes.store(st.held_bytes, Relaxed);
    counters.held_experts.store(st.held, Relaxed);
}

/// Asks the kernel to start reading each graph file and its `.data` weights into the page cache
/// (`POSIX_FADV_WILLNEED`: the call queues the reads and returns); returns the bytes asked for.
/// A file that cannot be opened is skipped: the load that follows reports it.
pub(crate) fn read_ahead(graphs: impl Iterator<Item = std::path::PathBuf>) -> u64 {
    use std::os::fd::AsRawFd;
    files_of(graphs, |file| {
        // SAFETY: the descriptor is open for the call; the advice reads nothing into our
        // memory and cannot fail in a way that matters (the load reads the file anyway).
        let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_WILLNEED) };
        if rc == 0 {
            file.metadata().map_or(0, |m| m.len())
        } else {
            0
        }
    })
}

/// Opens each graph file and its `.data` weights (skipping those that cannot be opened: the load
/// that follows reports them) and sums what `each` says of them.
fn files_of(
    graphs: impl Iterator<Item = std::path::PathBuf>,
    mut each: impl FnMut(&mut std::fs::File) -> u64,
) -> u64 {
    let mut bytes = 0;
    for graph in graphs {
        let mut data = graph.clone().into_os_string();
        data.push(".data");
        for path in [graph, data.into()] {
            if let Ok(mut file) = std::fs::File::open(&path) {
                bytes += each(&mut file);
            }
        }
    }
    bytes
}

/// Reads each graph file and its `.data` weights through once, so that they are in the page cache
/// when the session (which maps them) first runs; returns the bytes read. A file that cannot be
/// read is skipped: the session's run reports it.
pub(crate) fn read_in(graphs: impl Iterator<Item = std::path::PathBuf>) -> u64 {
    use std::io::Read;
    let mut buf = vec![0u8; 1 << 20];
    files_of(graphs, |file| {
        let mut bytes = 0;
        while let Ok(n) = file.read(&mut buf) {
            if n == 0 {
                break;
            }
            bytes += n as u64;
        }
        bytes
    })
}

/// Runs `run(i)` for every `i` in `0..n` on up to `threads` threads (the calling one included, the
/// others created for the call), and returns the error of the lowest failing index, as a
/// sequential loop would. Used to create many expert sessions at once.
pub(crate) fn run_parallel<F>(n: usize, threads: usize, run: F) -> Result<(), EngineError>
where
    F: Fn(usize) -> Result<(), EngineError> + Sync,
{
    run_parallel_on(None, n, threads, run)
}

/// [`run_parallel`] with the threads besides the calling one taken from `pool` when given (kept
/// threads: a step's routed experts run side by side, `side_by_side`), else created for the call.
pub(crate) fn run_parallel_on<F>(
    pool: Option<&rayon_core::ThreadPool>,
    n: usize,
    threads: usize,
    run: F,
) -> Result<(), EngineError>
where
    F: Fn(usize) -> Result<(), EngineError> + Sync,
{
    let threads = threads.clamp(1, n.max(1));
    if threads == 1 {
        return (0..n).try_for_each(&run);
    }
    let next = AtomicUsize::new(0);
    let failed = Mutex::new(None);
    let work = || {
        loop {
            let i = next.fetch_add(1, Relaxed);
            if i >= n {
                break;
            }
            if let Err(e) = run(i) {
                // Stop handing out work. Every lower index was handed out before this one and
                // finishes, so keeping the lowest failure makes the error the sequential one.
                next.store(n, Relaxed);
                let mut first = failed.lock().unwrap_or_else(|p| p.into_inner());
                if first.as_ref().is_none_or(|(j, _)| i < *j) {
                    *first = Some((i, e));
                }
                break;
            }
        }
    };
    match pool {
        // Jobs that start after the others took every index find nothing left and return.
        Some(pool) => pool.in_place_scope(|scope| {
            for _ in 1..threads {
                scope.spawn(|_| work());
            }
            work();
        }),
        None => std::thread::scope(|scope| {
            for _ in 1..threads {
                scope.spawn(work);
            }
            work();
        }),
    }
    match failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some((_, e)) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_ahead_asks_for_the_graph_and_its_weights_and_skips_what_is_missing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let graph = dir.path().join("layer.0.expert.1.onnx");
        std::fs::write(&graph, [0u8; 100]).expect("write");
        std::fs::write(dir.path().join("layer.0.expert.1.onnx.data"), [0u8; 4000]).expect("write");
        let lone = dir.path().join("layer.0.expert.2.onnx");
        std::fs::write(&lone, [0u8; 7]).expect("write");
        let gone = dir.path().join("layer.0.expert.3.onnx");
        assert_eq!(
            read_ahead([graph.clone(), lone.clone(), gone.clone()].into_iter()),
            4107
        );
        assert_eq!(read_in([graph, lone, gone].into_iter()), 4107);
    }

    #[test]
    fn fresh_bytes_are_taken_once_past_the_threshold() {
        let cache = ExpertCache::new(None);
        cache.fresh.fetch_add(40, Relaxed);
        assert!(!cache.take_fresh(64));
        cache.fresh.fetch_add(30, Relaxed);
        assert!(cache.take_fresh(64));
        assert!(!cache.take_fresh(64), "the counter starts again");
    }

    #[test]
    fn parallel_runs_run_every_index_once() {
        let seen: Vec<AtomicU64> = (0..50).map(|_| AtomicU64::new(0)).collect();
        run_parallel(seen.len(), 4, |i| {
            seen[i].fetch_add(1, Relaxed);
            Ok(())
        })
        .expect("no index fails");
        assert!(seen.iter().all(|s| s.load(Relaxed) == 1));
    }

    #[test]
    fn parallel_runs_report_the_lowest_failure_like_a_loop() {
        for _ in 0..20 {
            let err = run_parallel(40, 4, |i| {
                if i >= 5 {
                    Err(EngineError::Options(format!("index {i} failed")))
                } else {
                    Ok(())
                }
            })
            .expect_err("indices from 5 fail");
            assert!(err.to_string().contains("index 5 failed"), "{err}");
        }
    }

    #[test]
    fn parallel_runs_report_a_failure() {
        let err = run_parallel(20, 3, |i| {
            if i == 7 {
                Err(EngineError::Options(format!("index {i} failed")))
            } else {
                Ok(())
            }
        })
        .expect_err("index 7 fails");
        assert!(err.to_string().contains("index 7 failed"), "{err}");
    }

    #[test]
    fn parallel_runs_on_kept_threads_run_every_index_once_and_report_the_lowest_failure() {
        let pool = rayon_core::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .expect("a thread");
        for _ in 0..20 {
            let seen: Vec<AtomicU64> = (0..30).map(|_| AtomicU64::new(0)).collect();
            run_parallel_on(Some(&pool), seen.len(), 2, |i| {
                seen[i].fetch_add(1, Relaxed);
                Ok(())
            })
            .expect("no index fails");
            assert!(seen.iter().all(|s| s.load(Relaxed) == 1));
            let err = run_parallel_on(Some(&pool), 30, 2, |i| {
                if i >= 4 {
                    Err(EngineError::Options(format!("index {i} failed")))
                } else {
                    Ok(())
                }
            })
            .expect_err("indices from 4 fail");
            assert!(err.to_string().contains("index 4 failed"), "{err}");
        }
    }
}
