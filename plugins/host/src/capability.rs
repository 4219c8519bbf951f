//! The one place where capabilities are decided: what the administrator grants a plugin, which
//! component imports that grant covers (checked at load, before anything runs), which data source
//! labels a plugin may name (checked per call, Spin's `access-denied`), whether a gate may choose
//! fewer experts than the model's top-k, and the WASI context a plugin runs with (no environment,
//! no arguments, no file system, no network, a frozen clock unless clocks are granted).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use wasmtime::component::{HasData, Linker, ResourceTable};
use wasmtime_wasi::cli::{WasiCli, WasiCliView as _};
use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView as _};
use wasmtime_wasi::random::WasiRandom;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder, WasiView};

use crate::manifest::{Kind, Manifest};

/// What the administrator grants one plugin. Logging and reading its own configuration are always
/// allowed; everything else is off unless granted here.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// May raise alerts (they reach the client and the audit log).
    #[serde(default)]
    pub alerts: bool,
    /// May use a key-value store of this many bytes (keys plus values).
    #[serde(default)]
    pub kv_quota: Option<u64>,
    /// Data source labels it may search (retrieval plugins).
    #[serde(default)]
    pub sources: Vec<String>,
    /// A gate may answer with fewer experts per token than the model's top-k.
    #[serde(default)]
    pub fewer_experts: bool,
    /// May read the wall and monotonic clocks.
    #[serde(default)]
    pub clocks: bool,
}

impl Grant {
    /// Everything the manifest asks for. For plugins an administrator has vetted (the reference
    /// plugins in this repository, `moed bench --gate-plugin`); the daemon builds grants from its
    /// configuration instead.
    pub fn as_requested(manifest: &Manifest) -> Grant {
        let r = &manifest.requested;
        Grant {
            alerts: r.alerts,
            kv_quota: r.kv,
            sources: r.sources.clone(),
            fewer_experts: r.fewer_experts,
            clocks: r.clocks,
        }
    }
}

/// One import a plugin is refused for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub import: String,
    pub why: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapabilityError {
    #[error("{}", refusals_text(.0))]
    Imports(Vec<Refusal>),
}

fn refusals_text(r: &[Refusal]) -> String {
    r.iter()
        .map(|r| format!("it imports `{}`, {}", r.import, r.why))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The `moed:plugin` versions this host links: major 0, minor 1 (any patch).
pub const SUPPORTED_MINOR: &[u64] = &[1];

/// `namespace:package/interface@version` split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceName<'a> {
    pub package: &'a str,
    pub interface: &'a str,
    pub version: Option<&'a str>,
}

pub fn parse_interface(name: &str) -> Option<InterfaceName<'_>> {
    let (path, version) = match name.split_once('@') {
        Some((p, v)) => (p, Some(v)),
        None => (name, None),
    };
    let (package, interface) = path.split_once('/')?;
    package.contains(':').then_some(InterfaceName {
        package,
        interface,
        version,
    })
}

/// `(major, minor)` of a `x.y.z` version.
pub fn major_minor(version: &str) -> Option<(u64, u64)> {
    let mut it = version.split(['.', '-', '+']);
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

/// Whether this host links `moed:plugin@version`.
pub fn moed_version_supported(version: Option<&str>) -> Result<(), String> {
    match version.and_then(major_minor) {
        Some((0, minor)) if SUPPORTED_MINOR.contains(&minor) => Ok(()),
        Some((major, minor)) => Err(format!(
            "moed:plugin@{major}.{minor} is not linked by this host (it links {}); rebuild the plugin \
             against a supported version or update moed",
            SUPPORTED_MINOR
                .iter()
                .map(|m| format!("0.{m}"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
        None => {
            Err("moed:plugin without a version; plugins must import a versioned package".into())
        }
    }
}

/// WASI interfaces every plugin may import because they are inert here: no environment or
/// arguments, stdin closed, stdout discarded, stderr kept for failure reports, `exit` ends the
/// call as a trap; random numbers. (Rust's standard library imports the `cli` and `io` ones in
/// every component.)
const WASI_INERT: &[&str] = &[
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
];

const WASI_CLOCKS: &[&str] = &["wasi:clocks/wall-clock", "wasi:clocks/monotonic-clock"];

/// Decides every import of a component of `kind` against `grant`; all refusals are reported.
pub fn check_imports<'a>(
    kind: Kind,
    imports: impl IntoIterator<Item = &'a str>,
    grant: &Grant,
) -> Result<(), CapabilityError> {
    let refusals: Vec<Refusal> = imports
        .into_iter()
        .filter_map(|import| {
            decide(kind, import, grant).err().map(|why| Refusal {
                import: import.to_owned(),
                why,
            })
        })
        .collect();
    if refusals.is_empty() {
        Ok(())
    } else {
        Err(CapabilityError::Imports(refusals))
    }
}

fn decide(kind: Kind, import: &str, grant: &Grant) -> Result<(), String> {
    let Some(name) = parse_interface(import) else {
        return Err(
            "which is not an interface this host provides (plugins import interfaces only)".into(),
        );
    };
    let unversioned = format!("{}/{}", name.package, name.interface);
    match name.package {
        "moed:plugin" => {
            moed_version_supported(name.version).map_err(|e| format!("but {e}"))?;
            match (name.interface, kind) {
                ("log" | "config" | "types", _) => Ok(()),
                ("alerts", _) if grant.alerts => Ok(()),
                ("alerts", _) => {
                    Err("which its grant does not include (grant `alerts = true`)".into())
                }
                ("kv", _) if grant.kv_quota.is_some() => Ok(()),
                ("kv", _) => {
                    Err("which its grant does not include (grant `kv_quota = BYTES`)".into())
                }
                ("sources", Kind::Retrieval) if !grant.sources.is_empty() => Ok(()),
                ("sources", Kind::Retrieval) => Err(
                    "which its grant does not include (grant `sources = [\"LABEL\", ...]`)".into(),
                ),
                ("sources", _) => Err(format!(
                    "which a {kind} plugin may not use (data sources are for retrieval plugins)"
                )),
                _ => Err("which is not an interface moed provides to plugins".into()),
            }
        }
        _ if WASI_INERT.contains(&unversioned.as_str()) => Ok(()),
        _ if WASI_CLOCKS.contains(&unversioned.as_str()) => {
            if grant.clocks {
                Ok(())
            } else {
                Err("which its grant does not include (grant `clocks = true`)".into())
            }
        }
        "wasi:sockets" | "wasi:http" => {
            Err("which no plugin is granted (plugins have no network access)".into())
        }
        "wasi:filesystem" => {
            Err("which no plugin is granted (plugins have no file system access)".into())
        }
        _ => Err("which is not an interface this host provides to plugins".into()),
    }
}

/// A data source label the plugin names at run time.
pub fn source_access(grant: &Grant, label: &str) -> Result<(), String> {
    if granted_sources(grant).iter().any(|s| s == label) {
        Ok(())
    } else {
        Err(format!(
            "data source '{label}' is not granted to this plugin"
        ))
    }
}

/// Whether the plugin's alerts are passed on (without the grant the import is refused at load;
/// this is the check at the call).
pub fn alerts_allowed(grant: &Grant) -> bool {
    grant.alerts
}

/// The key-value store quota granted, if any.
pub fn kv_quota(grant: &Grant) -> Option<u64> {
    grant.kv_quota
}

/// The data source labels granted (what `sources.labels` tells the plugin).
pub fn granted_sources(grant: &Grant) -> &[String] {
    &grant.sources
}

/// The number of experts per token a gate's answer may have.
pub fn gate_k_allowed(grant: &Grant, answer_k: usize, model_k: usize) -> Result<(), String> {
    if answer_k == model_k {
        return Ok(());
    }
    if grant.fewer_experts && (1..model_k).contains(&answer_k) {
        return Ok(());
    }
    if grant.fewer_experts {
        Err(format!(
            "it chose {answer_k} experts per token; allowed are 1 to {model_k}"
        ))
    } else {
        Err(format!(
            "it chose {answer_k} experts per token, the model uses {model_k} (fewer needs the `fewer_experts` grant)"
        ))
    }
}

struct HasIo;

impl HasData for HasIo {
    type Data<'a> = &'a mut ResourceTable;
}

/// Links the WASI interfaces plugins may import: [`WASI_INERT`] and [`WASI_CLOCKS`]. Sockets and
/// the file system are not linked at all, so even a check missed here could not reach them.
pub(crate) fn link_wasi<T: WasiView>(l: &mut Linker<T>) -> wasmtime::Result<()> {
    use wasmtime_wasi::p2::bindings::sync as wasi;
    use wasmtime_wasi::p2::bindings::{cli, clocks, random};
    wasmtime_wasi_io::bindings::wasi::io::error::add_to_linker::<T, HasIo>(l, |t| t.ctx().table)?;
    wasi::io::poll::add_to_linker::<T, HasIo>(l, |t| t.ctx().table)?;
    wasi::io::streams::add_to_linker::<T, HasIo>(l, |t| t.ctx().table)?;
    clocks::wall_clock::add_to_linker::<T, WasiClocks>(l, T::clocks)?;
    clocks::monotonic_clock::add_to_linker::<T, WasiClocks>(l, T::clocks)?;
    random::random::add_to_linker::<T, WasiRandom>(l, |t| t.ctx().ctx.random())?;
    random::insecure::add_to_linker::<T, WasiRandom>(l, |t| t.ctx().ctx.random())?;
    random::insecure_seed::add_to_linker::<T, WasiRandom>(l, |t| t.ctx().ctx.random())?;
    cli::exit::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::environment::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stdin::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stdout::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stderr::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_input::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_output::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stdin::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stdout::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stderr::add_to_linker::<T, WasiCli>(l, T::cli)?;
    Ok(())
}

/// A clock that always reads zero: what a plugin without the clock grant would see, should a
/// clock import ever reach it.
struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// The WASI context of one plugin instance. `stderr` receives what the plugin writes there (a
/// panic message, for the failure report).
pub(crate) fn wasi_ctx(grant: &Grant, stderr: crate::stderr::StderrTail) -> WasiCtx {
    let mut b = WasiCtxBuilder::new();
    b.stderr(stderr)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_, _| Box::pin(async { false }));
    if !grant.clocks {
        b.wall_clock(FrozenClock).monotonic_clock(FrozenClock);
    }
    b.build()
}

#[cfg(test)]
mod tests;
