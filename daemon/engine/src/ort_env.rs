//! ONNX Runtime for moed: finds libonnxruntime, starts the process-wide environment once with one
//! shared intra-op thread pool, and picks an execution provider from a preference list.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Mutex, OnceLock, RwLock};

use ort::AsPointer;
use ort::environment::{Environment, GlobalThreadPoolOptions};
use ort::ep::{self, ExecutionProvider};
use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
use ort::session::Session;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};

/// Where packaging installs the library (the .deb puts it here).
pub const SYSTEM_LIB_DIR: &str = "/usr/lib/moed";
/// The script that fetches the pinned library for a development tree.
pub const PROVISION_SCRIPT: &str = "packaging/onnxruntime/provision.sh";

#[derive(Debug, thiserror::Error)]
pub enum OrtEnvError {
    #[error(
        "the ONNX Runtime library (libonnxruntime.so) was not found; looked in:\n{}\nrun {PROVISION_SCRIPT} (it prints the library's path), or point ORT_DYLIB_PATH or the configuration's ONNX Runtime path at a libonnxruntime.so",
        .looked.iter().map(|l| format!("  - {l}")).collect::<Vec<_>>().join("\n")
    )]
    LibraryNotFound { looked: Vec<String> },
    #[error("could not load the ONNX Runtime library {path}: {message}")]
    LibraryLoad { path: PathBuf, message: String },
    #[error("could not start the ONNX Runtime environment: {0}")]
    Environment(String),
    #[error("unknown execution provider {0:?} (known: tensorrt, cuda, cpu)")]
    UnknownProvider(String),
    #[error("no execution provider could be used; tried: {0}")]
    NoProvider(String),
}

/// An execution provider moed knows how to ask ONNX Runtime for. Its one parser is `FromStr`
/// (configuration and command line alike); it serializes as its short name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    TensorRt,
    Cuda,
    Cpu,
}

impl Provider {
    /// The name ONNX Runtime gives the provider.
    pub fn ort_name(self) -> &'static str {
        match self {
            Provider::TensorRt => ep::TensorRT::NAME,
            Provider::Cuda => ep::CUDA::NAME,
            Provider::Cpu => "CPUExecutionProvider",
        }
    }

    /// The short name used in configuration and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::TensorRt => "tensorrt",
            Provider::Cuda => "cuda",
            Provider::Cpu => "cpu",
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Provider {
    type Err = OrtEnvError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "tensorrt" | "trt" => Ok(Provider::TensorRt),
            "cuda" => Ok(Provider::Cuda),
            "cpu" => Ok(Provider::Cpu),
            _ => Err(OrtEnvError::UnknownProvider(s.to_string())),
        }
    }
}

/// Process-wide ONNX Runtime settings. Only the first successful [`runtime`] call applies them: ONNX
/// Runtime allows one environment per process.
#[derive(Debug, Clone, Default)]
pub struct OrtSettings {
    /// An explicit library path (from configuration); searched first.
    pub library: Option<PathBuf>,
    /// Intra-op threads of the shared pool; default: the number of CPUs.
    pub intra_threads: Option<usize>,
    /// Let idle pool threads spin. Off by default: moed runs many short graphs and spinning threads
    /// steal the cores the next graph needs on small machines.
    pub spinning: bool,
    /// Where the TensorRT provider caches its engines; unlike the rest, every call of [`runtime`]
    /// that names one sets it for the sessions created after.
    pub tensorrt_cache: Option<PathBuf>,
}

/// The initialised ONNX Runtime: its environment and how it was set up.
pub struct OrtRuntime {
    env: Environment,
    library: PathBuf,
    intra_threads: usize,
    spinning: bool,
    shared_allocator: bool,
    tensorrt_cache: RwLock<PathBuf>,
}

impl OrtRuntime {
    pub fn environment(&self) -> &Environment {
        &self.env
    }
    pub fn library(&self) -> &Path {
        &self.library
    }
    pub fn intra_threads(&self) -> usize {
        self.intra_threads
    }
    pub fn spinning(&self) -> bool {
        self.spinning
    }

    fn set_tensorrt_cache(&self, settings: &OrtSettings) {
        if let Some(dir) = &settings.tensorrt_cache {
            *self
                .tensorrt_cache
                .write()
                .unwrap_or_else(|p| p.into_inner()) = dir.clone();
        }
    }

    /// A session builder for the given provider on the shared thread pool. Providers that fail to
    /// register return the error instead of silently falling back, so [`choose_provider`] can log
    /// the reason and try the next.
    pub fn session_builder(&self, provider: Provider) -> Result<SessionBuilder, ort::Error> {
        let mut builder = Session::builder(&self.env)?
            .with_optimization_level(GraphOptimizationLevel::All)?
            .with_intra_op_spinning(self.spinning)?
            .with_memory_pattern(false)?;
        // One arena for every session instead of one each: the arenas of thousands of expert
        // sessions each kept their largest run's buffers.
        if self.shared_allocator && provider == Provider::Cpu {
            builder = builder.with_env_allocators()?;
        }
        let builder = match provider {
            Provider::Cpu => builder,
            Provider::Cuda => builder
                .with_execution_providers([ep::CUDA::default().build().error_on_failure()])?,
            Provider::TensorRt => {
                let dir = self
                    .tensorrt_cache
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                builder.with_execution_providers([crate::tensorrt_cache::provider(&dir)?
                    .build()
                    .error_on_failure()])?
            }
        };
        Ok(builder)
    }
}

static RUNTIME: OnceLock<OrtRuntime> = OnceLock::new();
static INIT: Mutex<()> = Mutex::new(());

/// The process's ONNX Runtime if it was initialised (a model was loaded), without starting it.
pub fn started() -> Option<&'static OrtRuntime> {
    RUNTIME.get()
}

/// The process's ONNX Runtime, initialised on first call with `settings`.
pub fn runtime(settings: &OrtSettings) -> Result<&'static OrtRuntime, OrtEnvError> {
    if let Some(rt) = RUNTIME.get() {
        warn_if_different(rt, settings);
        rt.set_tensorrt_cache(settings);
        return Ok(rt);
    }
    // A failed start may be retried (e.g. after provisioning), so the lock guards the attempt and
    // only a success is stored.
    let _guard = INIT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(rt) = RUNTIME.get() {
        rt.set_tensorrt_cache(settings);
        return Ok(rt);
    }
    let library = locate_library(settings.library.as_deref())?;
    let threads = settings
        .intra_threads
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let builder = ort::init_from(&library).map_err(|e| OrtEnvError::LibraryLoad {
        path: library.clone(),
        message: e.to_string(),
    })?;
    let env_err = |e: ort::Error| OrtEnvError::Environment(e.to_string());
    let pool = GlobalThreadPoolOptions::default()
        .with_intra_threads(threads)
        .and_then(|p| p.with_inter_threads(1))
        .and_then(|p| p.with_spin_control(settings.spinning))
        .map_err(env_err)?;
    let env = builder
        .with_name("moed")
        .with_telemetry(false)
        .with_global_thread_pool(pool)
        .build()
        .map_err(env_err)?;
    log::info!(
        "ONNX Runtime {} loaded from {}; shared intra-op pool of {threads} thread(s), spinning {}",
        ort_version(),
        library.display(),
        if settings.spinning { "on" } else { "off" }
    );
    let shared_allocator = match register_shared_allocator(&env) {
        Ok(()) => true,
        Err(e) => {
            log::warn!(
                "ONNX Runtime: no shared CPU allocator ({e}); each session keeps its own arena"
            );
            false
        }
    };
    let rt = OrtRuntime {
        env,
        library,
        intra_threads: threads,
        spinning: settings.spinning,
        shared_allocator,
        tensorrt_cache: RwLock::new(
            settings
                .tensorrt_cache
                .clone()
                .unwrap_or_else(crate::tensorrt_cache::default_dir),
        ),
    };
    Ok(RUNTIME.get_or_init(|| rt))
}

/// Registers one CPU arena allocator on the environment, for the sessions built with
/// `session.use_env_allocators`: one arena for the process instead of one per session.
fn register_shared_allocator(env: &Environment) -> Result<(), ort::Error> {
    let info = MemoryInfo::new(
        AllocationDevice::CPU,
        0,
        AllocatorType::Arena,
        MemoryType::Default,
    )?;
    // SAFETY: both pointers are valid for the call; a null arena config asks for the defaults.
    // ONNX Runtime copies what it needs from the memory info.
    let status = unsafe {
        (ort::api().CreateAndRegisterAllocator)(env.ptr().cast_mut(), info.ptr(), std::ptr::null())
    };
    // SAFETY: the status comes straight from the call above.
    unsafe { ort::Error::result_from_status(status) }
}

fn warn_if_different(rt: &OrtRuntime, settings: &OrtSettings) {
    if let Some(n) = settings
        .intra_threads
        .filter(|&n| n > 0 && n != rt.intra_threads)
    {
        log::warn!(
            "ONNX Runtime already runs with {} intra-op thread(s); the request for {n} is ignored (one environment per process)",
            rt.intra_threads
        );
    }
}

fn ort_version() -> String {
    // The build string starts with the version ("ORT Build Info: git-branch=rel-1.32.0, ...").
    ort::info()
        .split(',')
        .next()
        .unwrap_or_default()
        .trim_start_matches("ORT Build Info: ")
        .to_string()
}

/// Every place searched for the library, in order: the explicit path, `ORT_DYLIB_PATH`, the package
/// location, `<exe dir>/../lib/moed/`, the `target/onnxruntime/` above a binary that lies in a
/// `target/` folder, and (debug builds only) this source tree's `target/onnxruntime/`.
pub fn library_candidates(
    explicit: Option<&Path>,
    env_var: Option<&str>,
    exe: Option<&Path>,
) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(p) = explicit {
        out.push(p.to_path_buf());
    }
    if let Some(v) = env_var.filter(|v| !v.is_empty()) {
        out.push(PathBuf::from(v));
    }
    out.extend(versioned_libs(Path::new(SYSTEM_LIB_DIR)));
    if let Some(dir) = exe.and_then(Path::parent) {
        out.extend(versioned_libs(&dir.join("../lib/moed")));
        // target/<profile>/moed and target/<profile>/deps/<test>: the dev tree's target/ is above.
        for anc in dir.ancestors().take(4) {
            if anc.file_name().is_some_and(|n| n == "target") {
                out.push(anc.join("onnxruntime/libonnxruntime.so"));
                break;
            }
        }
    }
    if let Some(dev) = DEV_TREE_LIBRARY.map(|rel| Path::new(env!("CARGO_MANIFEST_DIR")).join(rel))
        && !out.contains(&dev)
    {
        out.push(dev);
    }
    out
}

/// The development tree's library, relative to this crate: searched by debug builds only, so an
/// installed (release) binary never looks inside the tree it was built in.
const DEV_TREE_LIBRARY: Option<&str> = if cfg!(debug_assertions) {
    Some("../../target/onnxruntime/libonnxruntime.so")
} else {
    None
};

/// `dir/libonnxruntime.so` first, then any versioned `libonnxruntime.so.*` there (newest name last).
fn versioned_libs(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.join("libonnxruntime.so")];
    if let Ok(entries) = std::fs::read_dir(dir) {
        let mut versioned: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("libonnxruntime.so."))
            })
            .collect();
        versioned.sort();
        versioned.reverse();
        out.extend(versioned);
    }
    out
}

/// Finds the library: the first candidate of [`library_candidates`] that is a file.
pub fn locate_library(explicit: Option<&Path>) -> Result<PathBuf, OrtEnvError> {
    let env_var = std::env::var("ORT_DYLIB_PATH").ok();
    let exe = std::env::current_exe().ok();
    // A configured path that is not there is passed over, but said so: it is likely a mistake.
    if let Some(p) = explicit.filter(|p| !p.is_file()) {
        log::warn!(
            "configured ONNX Runtime library {} does not exist; searching further",
            p.display()
        );
    }
    if let Some(v) = env_var
        .as_deref()
        .filter(|v| !v.is_empty() && !Path::new(v).is_file())
    {
        log::warn!("ORT_DYLIB_PATH={v} does not exist; searching further");
    }
    find_first(&library_candidates(
        explicit,
        env_var.as_deref(),
        exe.as_deref(),
    ))
}

pub(crate) fn find_first(candidates: &[PathBuf]) -> Result<PathBuf, OrtEnvError> {
    for c in candidates {
        if c.is_file() {
            return Ok(std::fs::canonicalize(c).unwrap_or_else(|_| c.clone()));
        }
        log::debug!("no ONNX Runtime library at {}", c.display());
    }
    let mut looked: Vec<String> = Vec::new();
    for c in candidates {
        let s = c.display().to_string();
        if !looked.contains(&s) {
            looked.push(s);
        }
    }
    Err(OrtEnvError::LibraryNotFound { looked })
}

/// Why a provider cannot be used, or `None` when ONNX Runtime was built with it. A built-in provider
/// can still fail at session creation (no GPU, missing CUDA libraries); [`choose_provider`] covers that.
pub fn provider_unavailable_reason(provider: Provider) -> Option<String> {
    let available = match provider {
        Provider::Cpu => return None,
        Provider::Cuda => ep::CUDA::is_available(),
        Provider::TensorRt => ep::TensorRT::is_available(),
    };
    match available {
        Ok(true) => None,
        Ok(false) => Some(format!(
            "this ONNX Runtime build has no {} (built without it, like the CPU-only onnxruntime wheel)",
            provider.ort_name()
        )),
        Err(e) => Some(format!("could not list ONNX Runtime's providers: {e}")),
    }
}

/// Picks the first provider of `prefs` that works: each is checked against the library, then
/// `probe` (which creates a real session with it) must succeed. Each fallback is logged with its
/// reason. Returns the provider in use and the (provider, reason) of every one passed over.
pub fn choose_provider<F>(
    prefs: &[Provider],
    mut probe: F,
) -> Result<(Provider, Vec<(Provider, String)>), OrtEnvError>
where
    F: FnMut(Provider) -> Result<(), String>,
{
    let prefs: Vec<Provider> = if prefs.is_empty() {
        vec![Provider::Cpu]
    } else {
        prefs.to_vec()
    };
    let mut skipped = Vec::new();
    for &p in &prefs {
        let reason = match provider_unavailable_reason(p) {
            Some(r) => Some(r),
            None => probe(p).err(),
        };
        match reason {
            None => {
                log::info!("execution provider in use: {p}");
                return Ok((p, skipped));
            }
            Some(r) => {
                log::warn!("execution provider {p} unavailable, falling back: {r}");
                skipped.push((p, r));
            }
        }
    }
    let tried = skipped
        .iter()
        .map(|(p, r)| format!("{p} ({r})"))
        .collect::<Vec<_>>()
        .join("; ");
    Err(OrtEnvError::NoProvider(tried))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_follow_the_documented_order() {
        let c = library_candidates(
            Some(Path::new("/etc/explicit.so")),
            Some("/env/libonnxruntime.so"),
            Some(Path::new("/opt/x/target/debug/deps/test-bin")),
        );
        assert_eq!(c[0], PathBuf::from("/etc/explicit.so"));
        assert_eq!(c[1], PathBuf::from("/env/libonnxruntime.so"));
        assert_eq!(c[2], PathBuf::from("/usr/lib/moed/libonnxruntime.so"));
        assert!(c.contains(&PathBuf::from(
            "/opt/x/target/debug/deps/../lib/moed/libonnxruntime.so"
        )));
        assert!(c.contains(&PathBuf::from(
            "/opt/x/target/onnxruntime/libonnxruntime.so"
        )));
    }

    #[test]
    fn missing_library_lists_every_place_and_the_script() {
        let err = find_first(&[
            PathBuf::from("/nonexistent/a.so"),
            PathBuf::from("/nonexistent/b.so"),
        ])
        .expect_err("no file exists");
        let msg = err.to_string();
        assert!(msg.contains("/nonexistent/a.so"), "{msg}");
        assert!(msg.contains("/nonexistent/b.so"), "{msg}");
        assert!(msg.contains(PROVISION_SCRIPT), "{msg}");
    }

    #[test]
    fn provider_names_parse() {
        assert_eq!("CUDA".parse::<Provider>().ok(), Some(Provider::Cuda));
        assert_eq!(
            "tensorrt".parse::<Provider>().ok(),
            Some(Provider::TensorRt)
        );
        assert!("tpu".parse::<Provider>().is_err());
    }
}
