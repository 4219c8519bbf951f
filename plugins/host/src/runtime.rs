//! The shared part of the plugin host: one wasmtime engine (epoch interruption on), the linker of
//! each world, the epoch ticker thread, per-kind limits, and the services plugins reach through
//! their imports (key-value stores, data sources, alert and failure events).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine};

use crate::bindings::v0_1;
use crate::cache::CompiledCache;
use crate::events::{HostEvents, LogEvents};
use crate::kv::KvBackend;
use crate::manifest::Kind;
use crate::sources::Sources;
use crate::state::HostState;

/// Memory and time for one call of a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindLimits {
    /// Largest linear memory of an instance, bytes.
    pub memory_bytes: usize,
    /// Time allowed for a call, plus `time_per_unit` for each unit of work (a token for a gate, a
    /// KiB of text for a filter, a requested document for retrieval).
    pub time: Duration,
    pub time_per_unit: Duration,
}

impl KindLimits {
    pub fn deadline(&self, units: usize) -> Duration {
        self.time
            + self
                .time_per_unit
                .saturating_mul(units.min(u32::MAX as usize) as u32)
    }
}

#[derive(Debug, Clone)]
pub struct HostOptions {
    /// Gates sit on the decode hot path: small memory, milliseconds.
    pub gate: KindLimits,
    pub filter: KindLimits,
    pub retrieval: KindLimits,
    /// Time for instantiation plus a gate's `init`.
    pub start_time: Duration,
    /// Epoch tick: the resolution of every time limit.
    pub tick: Duration,
    /// Consecutive failed calls after which a plugin is disabled.
    pub max_consecutive_failures: u32,
    /// Idle instances kept per plugin (more are created under concurrency, then dropped).
    pub pool_size: usize,
    /// Compiled components are cached here (keyed by the component's hash and the engine's
    /// configuration); `None` compiles on every load.
    pub cache_dir: Option<std::path::PathBuf>,
}

impl Default for HostOptions {
    fn default() -> Self {
        HostOptions {
            gate: KindLimits {
                memory_bytes: 32 << 20,
                // Far above a sane gate's few microseconds, and above a scheduler time slice on
                // a loaded machine, so that only a runaway gate trips it.
                time: Duration::from_millis(20),
                time_per_unit: Duration::from_micros(20),
            },
            filter: KindLimits {
                memory_bytes: 64 << 20,
                time: Duration::from_millis(50),
                time_per_unit: Duration::from_micros(50),
            },
            retrieval: KindLimits {
                memory_bytes: 128 << 20,
                time: Duration::from_secs(2),
                time_per_unit: Duration::from_millis(10),
            },
            start_time: Duration::from_secs(1),
            tick: Duration::from_millis(1),
            max_consecutive_failures: 5,
            pool_size: 4,
            cache_dir: None,
        }
    }
}

impl HostOptions {
    pub fn limits(&self, kind: Kind) -> KindLimits {
        match kind {
            Kind::Gate => self.gate,
            Kind::Filter => self.filter,
            Kind::Retrieval => self.retrieval,
        }
    }
}

/// What plugins reach through their imports, provided by the daemon.
#[derive(Clone)]
pub struct Services {
    /// Key-value stores (one namespace per plugin); `None`: a `kv` grant cannot be honoured and
    /// such plugins are refused at load.
    pub kv: Option<Arc<dyn KvBackend>>,
    pub sources: Arc<Sources>,
    pub events: Arc<dyn HostEvents>,
}

impl Default for Services {
    fn default() -> Self {
        Services {
            kv: None,
            sources: Arc::new(Sources::default()),
            events: Arc::new(LogEvents),
        }
    }
}

struct TickerState {
    stop: AtomicBool,
    /// Calls (and instantiations) running now.
    active: AtomicUsize,
    parked: AtomicBool,
}

/// Increments the engine's epoch every tick while plugin code may run; parks after a second
/// without any, so an idle daemon does not wake a thousand times a second.
struct Ticker {
    state: Arc<TickerState>,
    thread: Option<JoinHandle<()>>,
}

/// Counts one running call for the ticker while it lives.
pub(crate) struct ActiveCall<'a>(&'a Ticker);

impl Drop for ActiveCall<'_> {
    fn drop(&mut self) {
        self.0.state.active.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Ticker {
    fn start(engine: Engine, tick: Duration) -> std::io::Result<Ticker> {
        let state = Arc::new(TickerState {
            stop: AtomicBool::new(false),
            active: AtomicUsize::new(0),
            parked: AtomicBool::new(false),
        });
        let st = state.clone();
        let idle_limit = (Duration::from_secs(1).as_nanos() / tick.as_nanos().max(1)).max(1) as u64;
        let thread = std::thread::Builder::new()
            .name("moed-plugin-epoch".into())
            .spawn(move || {
                let mut idle = 0u64;
                while !st.stop.load(Ordering::SeqCst) {
                    std::thread::sleep(tick);
                    engine.increment_epoch();
                    if st.active.load(Ordering::SeqCst) > 0 {
                        idle = 0;
                        continue;
                    }
                    idle += 1;
                    if idle < idle_limit {
                        continue;
                    }
                    // Announce the park, then look again: a call starting now either sees
                    // `parked` (and unparks) or is seen here (SeqCst on both sides).
                    st.parked.store(true, Ordering::SeqCst);
                    if st.active.load(Ordering::SeqCst) == 0 {
                        while st.parked.load(Ordering::SeqCst) && !st.stop.load(Ordering::SeqCst) {
                            std::thread::park();
                        }
                    }
                    st.parked.store(false, Ordering::SeqCst);
                    idle = 0;
                }
            })?;
        Ok(Ticker {
            state,
            thread: Some(thread),
        })
    }

    fn enter(&self) -> ActiveCall<'_> {
        self.state.active.fetch_add(1, Ordering::SeqCst);
        if self.state.parked.swap(false, Ordering::SeqCst)
            && let Some(t) = &self.thread
        {
            t.thread().unpark();
        }
        ActiveCall(self)
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            // The thread only sleeps, parks and increments; it cannot panic.
            let _ = t.join();
        }
    }
}

pub(crate) struct Runtime {
    pub engine: Engine,
    pub gate_linker: Linker<HostState>,
    pub filter_linker: Linker<HostState>,
    pub retrieval_linker: Linker<HostState>,
    pub options: HostOptions,
    pub services: Services,
    pub cache: Option<CompiledCache>,
    ticker: Ticker,
}

impl Runtime {
    pub fn new(options: HostOptions, services: Services) -> Result<Runtime, String> {
        if options.tick.is_zero() {
            return Err("the epoch tick must be longer than zero".into());
        }
        let mut config = Config::new();
        config.epoch_interruption(true).wasm_component_model(true);
        let engine = Engine::new(&config).map_err(|e| format!("cannot start wasmtime: {e:#}"))?;
        let link = |kind: Kind| -> Result<Linker<HostState>, String> {
            let mut linker = Linker::new(&engine);
            crate::capability::link_wasi(&mut linker)
                .map_err(|e| format!("linking WASI: {e:#}"))?;
            let r = match kind {
                Kind::Gate => {
                    v0_1::Gate::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
                }
                Kind::Filter => {
                    v0_1::Filter::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
                }
                Kind::Retrieval => v0_1::Retrieval::add_to_linker::<HostState, HasSelf<HostState>>(
                    &mut linker,
                    |s| s,
                ),
            };
            r.map_err(|e| format!("linking the {kind} world: {e:#}"))?;
            Ok(linker)
        };
        let cache = match &options.cache_dir {
            Some(dir) => Some(CompiledCache::open(dir, &engine)?),
            None => None,
        };
        Ok(Runtime {
            gate_linker: link(Kind::Gate)?,
            filter_linker: link(Kind::Filter)?,
            retrieval_linker: link(Kind::Retrieval)?,
            ticker: Ticker::start(engine.clone(), options.tick)
                .map_err(|e| format!("cannot start the epoch ticker: {e}"))?,
            engine,
            options,
            services,
            cache,
        })
    }

    /// Marks a call as running, so that the epoch ticks (and its deadline can pass) until the
    /// returned guard drops.
    pub fn enter(&self) -> ActiveCall<'_> {
        self.ticker.enter()
    }

    pub fn linker(&self, kind: Kind) -> &Linker<HostState> {
        match kind {
            Kind::Gate => &self.gate_linker,
            Kind::Filter => &self.filter_linker,
            Kind::Retrieval => &self.retrieval_linker,
        }
    }

    /// Epoch ticks covering `time` (at least one whole tick more, since the current tick is
    /// partly gone).
    pub fn ticks(&self, time: Duration) -> u64 {
        let tick = self.options.tick.as_nanos().max(1);
        (time.as_nanos().div_ceil(tick) as u64).saturating_add(1)
    }
}
