//! The data of one plugin instance's store and the host side of the `moed:plugin` imports: log,
//! configuration, key-value store, alerts, data sources. Guest-controlled sizes are capped here.

use std::sync::Arc;

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use moed_wire::limits;

use crate::bindings::v0_1::{alerts, config, kv, log, sources, types};
use crate::bounds;
use crate::capability::{self, Grant};
use crate::events::{Alert, HostEvents, Severity};
use crate::kv::{QuotaError, QuotaKv};
use crate::manifest::Kind;
use crate::sources::{SourceError, Sources};
use crate::stderr::StderrTail;

/// Log lines a plugin may write per call; further lines are counted and dropped.
const MAX_LOG_LINES: u32 = 32;
/// Alerts a plugin may raise per call.
const MAX_ALERTS: usize = 16;
/// Documents and bytes one `search` may return to the plugin.
const MAX_SEARCH_DOCS: u32 = 100;
const MAX_QUERY: usize = 8192;

/// What all instances of one loaded plugin share.
pub(crate) struct PluginContext {
    pub name: String,
    pub kind: Kind,
    pub grant: Grant,
    pub config_json: String,
    pub kv: Option<QuotaKv>,
    pub sources: Arc<Sources>,
    pub events: Arc<dyn HostEvents>,
}

/// Linear memory and table caps; remembers why it refused so the failure says so.
pub(crate) struct Limiter {
    pub memory_bytes: usize,
    pub refused: Option<String>,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            let msg = format!(
                "it asked for {} KiB of linear memory (from {} KiB), the limit is {} KiB",
                desired >> 10,
                current >> 10,
                self.memory_bytes >> 10
            );
            self.refused = Some(msg.clone());
            return Err(wasmtime::format_err!("{msg}"));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }

    fn instances(&self) -> usize {
        64
    }
    fn tables(&self) -> usize {
        64
    }
    fn memories(&self) -> usize {
        4
    }
}

pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub limiter: Limiter,
    pub ctx: Arc<PluginContext>,
    pub stderr: StderrTail,
    alerts: Vec<Alert>,
    log_lines: u32,
}

impl HostState {
    pub fn new(ctx: Arc<PluginContext>, memory_bytes: usize) -> HostState {
        let stderr = StderrTail::default();
        HostState {
            wasi: capability::wasi_ctx(&ctx.grant, stderr.clone()),
            table: ResourceTable::new(),
            limiter: Limiter {
                memory_bytes,
                refused: None,
            },
            ctx,
            stderr,
            alerts: Vec::new(),
            log_lines: 0,
        }
    }

    /// Resets what is counted per call.
    pub fn begin_call(&mut self) {
        self.alerts.clear();
        self.log_lines = 0;
        self.limiter.refused = None;
    }

    pub fn take_alerts(&mut self) -> Vec<Alert> {
        std::mem::take(&mut self.alerts)
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl log::Host for HostState {
    fn write(&mut self, level: log::Level, message: String) {
        self.log_lines += 1;
        if self.log_lines > MAX_LOG_LINES {
            return;
        }
        let lvl = match level {
            log::Level::Trace => ::log::Level::Trace,
            log::Level::Debug => ::log::Level::Debug,
            log::Level::Info => ::log::Level::Info,
            log::Level::Warn => ::log::Level::Warn,
            log::Level::Error => ::log::Level::Error,
        };
        ::log::log!(target: "moed_plugins::guest", lvl, "plugin {}: {}", self.ctx.name, bounds::line(&message, limits::LOG_LINE));
        if self.log_lines == MAX_LOG_LINES {
            ::log::warn!(target: "moed_plugins::guest", "plugin {}: further log lines of this call are dropped", self.ctx.name);
        }
    }
}

impl config::Host for HostState {
    fn get_json(&mut self) -> String {
        self.ctx.config_json.clone()
    }
}

fn kv_error(e: QuotaError) -> kv::KvError {
    match e {
        QuotaError::QuotaExceeded(q) => kv::KvError::QuotaExceeded(q),
        QuotaError::TooLarge(q) => kv::KvError::TooLarge(q),
        QuotaError::Unavailable(m) => kv::KvError::Unavailable(m),
    }
}

impl HostState {
    fn store(&self) -> Result<&QuotaKv, kv::KvError> {
        self.ctx.kv.as_ref().ok_or_else(|| {
            kv::KvError::Unavailable("no key-value store is granted to this plugin".into())
        })
    }
}

impl kv::Host for HostState {
    fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, kv::KvError> {
        self.store()?.get(&key).map_err(kv_error)
    }
    fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), kv::KvError> {
        self.store()?.set(&key, &value).map_err(kv_error)
    }
    fn delete(&mut self, key: String) -> Result<bool, kv::KvError> {
        self.store()?.delete(&key).map_err(kv_error)
    }
    fn keys(&mut self, prefix: String) -> Result<Vec<String>, kv::KvError> {
        self.store()?.keys(&prefix).map_err(kv_error)
    }
}

impl alerts::Host for HostState {
    fn raise(&mut self, severity: alerts::Severity, code: String, message: String) {
        if !capability::alerts_allowed(&self.ctx.grant) || self.alerts.len() >= MAX_ALERTS {
            return;
        }
        let severity = match severity {
            alerts::Severity::Info => Severity::Info,
            alerts::Severity::Warning => Severity::Warning,
            alerts::Severity::Error => Severity::Error,
        };
        let alert = Alert::new(&self.ctx.name, severity, &code, &message);
        self.ctx.events.alert(&alert);
        self.alerts.push(alert);
    }
}

impl types::Host for HostState {}

impl sources::Host for HostState {
    fn labels(&mut self) -> Vec<String> {
        capability::granted_sources(&self.ctx.grant).to_vec()
    }

    fn search(
        &mut self,
        label: String,
        query: String,
        limit: u32,
    ) -> Result<Vec<types::Document>, sources::SourceError> {
        capability::source_access(&self.ctx.grant, &label)
            .map_err(sources::SourceError::AccessDenied)?;
        if query.len() > MAX_QUERY {
            return Err(sources::SourceError::InvalidQuery(format!(
                "the query is {} bytes; at most {MAX_QUERY}",
                query.len()
            )));
        }
        let source = self.ctx.sources.get(&label).ok_or_else(|| {
            sources::SourceError::Unavailable(format!("data source '{label}' is not configured"))
        })?;
        let docs = source
            .search(&query, limit.min(MAX_SEARCH_DOCS) as usize)
            .map_err(|e| match e {
                SourceError::NotFound(m) => sources::SourceError::NotFound(m),
                SourceError::Unavailable(m) => sources::SourceError::Unavailable(m),
                SourceError::InvalidQuery(m) => sources::SourceError::InvalidQuery(m),
            })?;
        Ok(docs
            .into_iter()
            .take(limit.min(MAX_SEARCH_DOCS) as usize)
            .map(|d| types::Document {
                id: d.id,
                source: d.source,
                text: d.text,
                score: d.score,
            })
            .collect())
    }
}
