//! One loaded plugin: its checks at load (compile or read the compiled cache, capabilities,
//! exported interface, a first instance), the instance pool, one call under the kind's memory and
//! time limits, and the failure accounting that disables it after repeated failures.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use wasmtime::Store;
use wasmtime::component::Component;

use crate::bindings::v0_1::{Filter, FilterPre, Gate, GatePre, Retrieval, RetrievalPre};
use crate::cache::Compiled;
use crate::capability::{self, parse_interface};
use crate::error::{CallFailure, LoadError};
use crate::events::{Alert, Failure};
use crate::kv::QuotaKv;
use crate::manifest::{Kind, Manifest};
use crate::plugin::PluginSpec;
use crate::runtime::{HostOptions, Runtime};
use crate::state::{HostState, PluginContext};

pub(crate) enum Pre {
    Gate(GatePre<HostState>),
    Filter(FilterPre<HostState>),
    Retrieval(RetrievalPre<HostState>),
}

pub(crate) enum Bindings {
    Gate(Gate),
    Filter(Filter),
    Retrieval(Retrieval),
}

pub(crate) struct Instance {
    pub store: Store<HostState>,
    pub bindings: Bindings,
    /// The model a gate instance was initialized for.
    pub model: Option<u64>,
}

/// Bytes of a guest's stderr quoted in a trap's failure message (the rest of
/// `limits::PLUGIN_DETAIL` is for the trap's own words).
const STDERR_QUOTED: usize = 768;

/// What a failed wasmtime call means (memory refusal, timeout, trap with the guest's stderr).
pub(crate) fn classify(state: &mut HostState, e: wasmtime::Error, time: Duration) -> CallFailure {
    if let Some(m) = state.limiter.refused.take() {
        return CallFailure::Memory(m);
    }
    let stderr = state.stderr.take();
    let with_stderr = |m: String| {
        if stderr.is_empty() {
            m
        } else {
            // Its end: where a panic message is. The failure is bounded as a whole later.
            format!(
                "{m}; its stderr: {}",
                crate::bounds::tail(&stderr, STDERR_QUOTED)
            )
        }
    };
    if let Some(trap) = e.downcast_ref::<wasmtime::Trap>() {
        if *trap == wasmtime::Trap::Interrupt {
            return CallFailure::Timeout(time);
        }
        return CallFailure::Trap(with_stderr(trap.to_string()));
    }
    if let Some(exit) = e.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return CallFailure::Trap(with_stderr(format!("it called exit({})", exit.0)));
    }
    CallFailure::Trap(with_stderr(format!("{e:#}")))
}

/// Calls, failures and the automatic disable of one loaded plugin.
#[derive(Default)]
pub(crate) struct Health {
    pub consecutive: AtomicU32,
    pub disabled: Mutex<Option<String>>,
    pub calls: AtomicU64,
    pub failures: AtomicU64,
    pub nanos: AtomicU64,
}

impl Health {
    pub fn disabled(&self) -> Option<String> {
        self.disabled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

pub(crate) struct Loaded {
    pub manifest: Manifest,
    pub ctx: Arc<PluginContext>,
    /// `moed:plugin` version the component exports, e.g. `0.1.0`.
    pub interface_version: String,
    pub compiled: Compiled,
    pre: Pre,
    pool: Mutex<Vec<Instance>>,
    pub health: Health,
}

impl Loaded {
    fn instantiate(&self, rt: &Runtime) -> Result<Instance, CallFailure> {
        let limits = rt.options.limits(self.ctx.kind);
        let _running = rt.enter();
        let mut store = Store::new(
            &rt.engine,
            HostState::new(self.ctx.clone(), limits.memory_bytes),
        );
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(rt.ticks(rt.options.start_time));
        let made = match &self.pre {
            Pre::Gate(p) => p.instantiate(&mut store).map(Bindings::Gate),
            Pre::Filter(p) => p.instantiate(&mut store).map(Bindings::Filter),
            Pre::Retrieval(p) => p.instantiate(&mut store).map(Bindings::Retrieval),
        };
        let bindings = made.map_err(|e| {
            let state = store.data_mut();
            let ran = state.limiter.refused.is_some()
                || e.downcast_ref::<wasmtime::Trap>().is_some()
                || e.downcast_ref::<wasmtime_wasi::I32Exit>().is_some();
            if ran {
                CallFailure::Start(classify(state, e, rt.options.start_time).to_string()).bounded()
            } else {
                // Linking or type checking the exports failed: nothing of the plugin ran.
                CallFailure::Interface(format!("{e:#}")).bounded()
            }
        })?;
        Ok(Instance {
            store,
            bindings,
            model: None,
        })
    }

    fn take(&self, rt: &Runtime) -> Result<Instance, CallFailure> {
        let pooled = self.pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match pooled {
            Some(i) => Ok(i),
            None => self.instantiate(rt),
        }
    }

    fn put_back(&self, options: &HostOptions, inst: Instance) {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < options.pool_size {
            pool.push(inst);
        }
    }

    /// One call: an instance from the pool (or a new one), the deadline for `time`, `f`, then the
    /// instance back to the pool unless it trapped, and the outcome counted.
    pub fn call<R>(
        &self,
        rt: &Runtime,
        time: Duration,
        f: impl FnOnce(&mut Instance) -> Result<R, CallFailure>,
    ) -> (Result<R, CallFailure>, Vec<Alert>) {
        if let Some(reason) = self.health.disabled() {
            return (Err(CallFailure::Disabled(reason)), Vec::new());
        }
        let start = Instant::now();
        let (result, alerts) = match self.take(rt) {
            Err(f) => (Err(f), Vec::new()),
            Ok(mut inst) => {
                let _running = rt.enter();
                inst.store.data_mut().begin_call();
                inst.store.set_epoch_deadline(rt.ticks(time));
                // Whatever the plugin said is bounded before anyone logs, stores or returns it.
                let r = f(&mut inst).map_err(CallFailure::bounded);
                let alerts = inst.store.data_mut().take_alerts();
                match &r {
                    Ok(_) => self.put_back(&rt.options, inst),
                    Err(e) if e.instance_reusable() => self.put_back(&rt.options, inst),
                    // A trapped instance may not be entered again; it is dropped.
                    Err(_) => {}
                }
                (r, alerts)
            }
        };
        self.record(rt, result.as_ref().err(), start.elapsed());
        (result, alerts)
    }

    fn record(&self, rt: &Runtime, failure: Option<&CallFailure>, took: Duration) {
        let h = &self.health;
        h.calls.fetch_add(1, Relaxed);
        h.nanos.fetch_add(took.as_nanos() as u64, Relaxed);
        // A parameter the plugin refused is the caller's mistake: the plugin answered as it
        // should, and one client's bad requests must not disable it for everyone.
        let Some(f) = failure.filter(|f| !f.is_callers()) else {
            h.consecutive.store(0, Relaxed);
            return;
        };
        h.failures.fetch_add(1, Relaxed);
        let n = h.consecutive.fetch_add(1, Relaxed) + 1;
        let max = rt.options.max_consecutive_failures;
        let disabled = max > 0 && n >= max;
        if disabled {
            let mut d = h.disabled.lock().unwrap_or_else(|p| p.into_inner());
            if d.is_some() {
                return;
            }
            *d = Some(format!("{n} consecutive failed calls; the last: {f}"));
        }
        self.ctx.events.failure(&Failure {
            plugin: self.ctx.name.clone(),
            kind: self.ctx.kind.to_string(),
            message: f.to_string(),
            consecutive: n,
            disabled,
        });
    }
}

/// Finds the `moed:plugin` interface the component exports for `kind` and returns its version.
fn check_exports(kind: Kind, exports: &[String]) -> Result<String, String> {
    let ours: Vec<_> = exports
        .iter()
        .filter_map(|e| parse_interface(e))
        .filter(|n| n.package == "moed:plugin")
        .collect();
    let wanted = kind.export_interface();
    if let Some(n) = ours.iter().find(|n| n.interface == wanted) {
        capability::moed_version_supported(n.version)
            .map_err(|e| format!("it exports moed:plugin/{wanted}, but {e}"))?;
        return Ok(n.version.unwrap_or_default().to_owned());
    }
    let others: Vec<String> = [Kind::Gate, Kind::Filter, Kind::Retrieval]
        .into_iter()
        .filter(|k| ours.iter().any(|n| n.interface == k.export_interface()))
        .map(|k| format!("moed:plugin/{} (a {k} plugin)", k.export_interface()))
        .collect();
    if others.is_empty() {
        Err(format!(
            "its manifest says {kind}, but it does not export moed:plugin/{wanted} (it exports: {})",
            if exports.is_empty() {
                "nothing".to_owned()
            } else {
                exports.join(", ")
            }
        ))
    } else {
        Err(format!(
            "its manifest says {kind}, but it exports {}",
            others.join(", ")
        ))
    }
}

pub(crate) fn load(rt: &Arc<Runtime>, spec: &PluginSpec) -> Result<Loaded, LoadError> {
    let m = &spec.manifest;
    let plugin = m.name.clone();
    let kind = m.kind;
    let config = m.resolve_config(&spec.config)?;
    let wasm = std::fs::read(&spec.wasm).map_err(|source| LoadError::Read {
        plugin: plugin.clone(),
        path: spec.wasm.clone(),
        source,
    })?;
    let compiled = match &rt.cache {
        Some(cache) => cache.load(&rt.engine, &wasm),
        None => Component::new(&rt.engine, &wasm)
            .map(|c| (c, Compiled::Fresh))
            .map_err(|e| format!("{e:#}")),
    };
    // Messages about the component quote names from it: bounded like the plugin's own words.
    let (component, compiled) = compiled.map_err(|message| LoadError::Compile {
        plugin: plugin.clone(),
        path: spec.wasm.clone(),
        message: crate::bounds::detail(&message),
    })?;
    let ty = component.component_type();
    let imports: Vec<String> = ty.imports(&rt.engine).map(|(n, _)| n.to_owned()).collect();
    capability::check_imports(kind, imports.iter().map(String::as_str), &spec.grant).map_err(
        |source| LoadError::Capability {
            plugin: plugin.clone(),
            source,
        },
    )?;
    let exports: Vec<String> = ty.exports(&rt.engine).map(|(n, _)| n.to_owned()).collect();
    let interface_version =
        check_exports(kind, &exports).map_err(|message| LoadError::Interface {
            plugin: plugin.clone(),
            message: crate::bounds::detail(&message),
        })?;
    let interface_err = |e: wasmtime::Error| LoadError::Interface {
        plugin: plugin.clone(),
        message: crate::bounds::detail(&format!("{e:#}")),
    };
    let pre = rt
        .linker(kind)
        .instantiate_pre(&component)
        .map_err(interface_err)?;
    let pre = match kind {
        Kind::Gate => Pre::Gate(GatePre::new(pre).map_err(interface_err)?),
        Kind::Filter => Pre::Filter(FilterPre::new(pre).map_err(interface_err)?),
        Kind::Retrieval => Pre::Retrieval(RetrievalPre::new(pre).map_err(interface_err)?),
    };
    let kv = match capability::kv_quota(&spec.grant) {
        None => None,
        Some(quota) => {
            let backend = rt.services.kv.as_ref().ok_or_else(|| LoadError::Start {
                plugin: plugin.clone(),
                message: "it is granted a key-value store, but this host has no store configured"
                    .into(),
            })?;
            let store = backend.open(&plugin).map_err(|message| LoadError::Start {
                plugin: plugin.clone(),
                message,
            })?;
            Some(
                QuotaKv::new(store, quota).map_err(|message| LoadError::Start {
                    plugin: plugin.clone(),
                    message,
                })?,
            )
        }
    };
    let ctx = Arc::new(PluginContext {
        name: plugin.clone(),
        kind,
        grant: spec.grant.clone(),
        config_json: Value::Object(config).to_string(),
        kv,
        sources: rt.services.sources.clone(),
        events: rt.services.events.clone(),
    });
    let loaded = Loaded {
        manifest: m.clone(),
        ctx,
        interface_version,
        compiled,
        pre,
        pool: Mutex::new(Vec::new()),
        health: Health::default(),
    };
    // One instance now, so that start-up code runs (within the limits) and fails at load.
    let first = loaded.instantiate(rt).map_err(|f| match f {
        CallFailure::Interface(message) => LoadError::Interface {
            plugin: plugin.clone(),
            message,
        },
        other => LoadError::Start {
            plugin: plugin.clone(),
            message: other.to_string(),
        },
    })?;
    loaded.put_back(&rt.options, first);
    Ok(loaded)
}
