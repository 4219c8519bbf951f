//! The daemon's configuration: `/etc/moed/moed.toml`, then `moed.toml.d/*.toml` in name order,
//! then `MOED_*` environment variables; every value checked, errors naming the key.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use config::{Environment, File, FileFormat};
use serde::{Deserialize, Serialize};

use crate::ort_env::Provider;

/// The main configuration file when `--config` is not given.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/moed/moed.toml";
/// Model directories when the configuration names none.
pub const DEFAULT_MODEL_DIRS: &[&str] = &["/var/lib/moed/models", "/usr/share/moed/models"];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(String),
    #[error("configuration key '{key}': {message}")]
    Invalid { key: String, message: String },
    #[error("configuration directory {dir}: {message}")]
    Dir { dir: PathBuf, message: String },
}

/// The effective, validated configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    /// Files read, in order (for `check-config` and logs).
    #[serde(skip)]
    pub sources: Vec<PathBuf>,
    pub models: ModelsConfig,
    pub engine: EngineConfig,
    pub service: ServiceConfig,
    pub access: AccessConfig,
    pub log: LogConfig,
    pub plugins: PluginsConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PluginsConfig {
    /// `plugins.filters`: built filter plugins (`NAME.wasm` with `NAME.toml` beside it, or a
    /// plugin directory) applied to every inference request, in order; loaded at start.
    pub filters: Vec<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelsConfig {
    /// `models.dirs`: directories searched for model packages, in order.
    pub dirs: Vec<PathBuf>,
    /// `models.default`: loaded at start (a name in `dirs` or a path); none: no model at start.
    pub default: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EngineConfig {
    /// `engine.providers`: execution providers in order of preference.
    pub providers: Vec<String>,
    /// `engine.expert_memory_budget`: bytes of resident expert weights; none: unbounded.
    pub expert_memory_budget: Option<u64>,
    /// `engine.ort_library`: the ONNX Runtime shared library.
    pub ort_library: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceConfig {
    /// `service.max_concurrent`: requests executing at once.
    pub max_concurrent: u32,
    /// `service.queue_depth`: requests waiting for a slot; past it callers get `Busy`.
    pub queue_depth: u32,
    /// `service.drain_timeout_secs`: how long SIGTERM waits for in-flight requests.
    pub drain_timeout_secs: u64,
    /// `service.state_directory`: overrides `$STATE_DIRECTORY` and the default.
    pub state_directory: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AccessConfig {
    /// `access.authorizer`: `polkit` (default) or `group` (admin = root or member of
    /// `admin_group`; for hosts without polkit, and the tests).
    pub authorizer: AuthorizerKind,
    /// `access.allowed_group`: when set, inference and reads need root or membership.
    pub allowed_group: Option<String>,
    /// `access.admin_group`: members may manage models and plugins without polkit.
    pub admin_group: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthorizerKind {
    Polkit,
    Group,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogConfig {
    /// `log.level`: error, warn, info, debug or trace.
    pub level: String,
}

/// The file layout as read, before checks; unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawConfig {
    models: RawModels,
    engine: RawEngine,
    service: RawService,
    access: RawAccess,
    log: RawLog,
    plugins: RawPlugins,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawPlugins {
    filters: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawModels {
    dirs: Option<Vec<String>>,
    default: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawEngine {
    providers: Option<Vec<String>>,
    expert_memory_budget: Option<ByteSize>,
    ort_library: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawService {
    max_concurrent: Option<i64>,
    queue_depth: Option<i64>,
    drain_timeout_secs: Option<i64>,
    state_directory: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAccess {
    authorizer: Option<String>,
    allowed_group: Option<String>,
    admin_group: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLog {
    level: Option<String>,
}

/// A byte count written as an integer or as a string with a unit (`512MiB`, `2G`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ByteSize {
    Bytes(i64),
    Text(String),
}

impl Config {
    /// Reads the configuration: `file` (default `/etc/moed/moed.toml`; required only when given),
    /// then `<file>.d/*.toml` in name order, then the process's `MOED_*` variables.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Config::load_with_env(file, None)
    }

    /// As [`Config::load`], with the environment given as a map instead of read from the process.
    pub fn load_with_env(
        file: Option<&Path>,
        env: Option<HashMap<String, String>>,
    ) -> Result<Config, ConfigError> {
        let (main, required) = match file {
            Some(path) => (path.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_FILE), false),
        };
        if required && !main.is_file() {
            return Err(ConfigError::Load(format!(
                "{}: no such file (given with --config)",
                main.display()
            )));
        }
        let mut sources = Vec::new();
        let mut builder = config::Config::builder();
        if main.is_file() {
            sources.push(main.clone());
            builder = builder.add_source(File::from(main.as_path()).format(FileFormat::Toml));
        }
        let drop_in = drop_in_dir(&main);
        for part in drop_in_files(&drop_in)? {
            builder = builder.add_source(File::from(part.as_path()).format(FileFormat::Toml));
            sources.push(part);
        }
        let mut environment = Environment::with_prefix("MOED")
            .prefix_separator("_")
            .separator("__")
            .try_parsing(true)
            .list_separator(",")
            .with_list_parse_key("models.dirs")
            .with_list_parse_key("engine.providers")
            .with_list_parse_key("plugins.filters");
        if let Some(env) = env {
            environment = environment.source(Some(env.into_iter().collect()));
        }
        builder = builder.add_source(environment);
        let raw: RawConfig = builder
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        let mut config = validate(raw)?;
        config.sources = sources;
        Ok(config)
    }

    /// The effective configuration as TOML, for `moed check-config`.
    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        let q = |s: &str| format!("{s:?}");
        let list = |items: Vec<String>| format!("[{}]", items.join(", "));
        out.push_str("[models]\n");
        out.push_str(&format!(
            "dirs = {}\n",
            list(
                self.models
                    .dirs
                    .iter()
                    .map(|d| q(&d.display().to_string()))
                    .collect()
            )
        ));
        if let Some(d) = &self.models.default {
            out.push_str(&format!("default = {}\n", q(d)));
        }
        out.push_str("\n[engine]\n");
        out.push_str(&format!(
            "providers = {}\n",
            list(self.engine.providers.iter().map(|p| q(p)).collect())
        ));
        if let Some(b) = self.engine.expert_memory_budget {
            out.push_str(&format!("expert_memory_budget = {b}\n"));
        }
        if let Some(l) = &self.engine.ort_library {
            out.push_str(&format!("ort_library = {}\n", q(&l.display().to_string())));
        }
        out.push_str("\n[service]\n");
        out.push_str(&format!(
            "max_concurrent = {}\n",
            self.service.max_concurrent
        ));
        out.push_str(&format!("queue_depth = {}\n", self.service.queue_depth));
        out.push_str(&format!(
            "drain_timeout_secs = {}\n",
            self.service.drain_timeout_secs
        ));
        if let Some(d) = &self.service.state_directory {
            out.push_str(&format!(
                "state_directory = {}\n",
                q(&d.display().to_string())
            ));
        }
        out.push_str("\n[access]\n");
        out.push_str(&format!(
            "authorizer = {}\n",
            q(self.access.authorizer.as_str())
        ));
        if let Some(g) = &self.access.allowed_group {
            out.push_str(&format!("allowed_group = {}\n", q(g)));
        }
        if let Some(g) = &self.access.admin_group {
            out.push_str(&format!("admin_group = {}\n", q(g)));
        }
        out.push_str("\n[log]\n");
        out.push_str(&format!("level = {}\n", q(&self.log.level)));
        out.push_str("\n[plugins]\n");
        out.push_str(&format!(
            "filters = {}\n",
            list(
                self.plugins
                    .filters
                    .iter()
                    .map(|f| q(&f.display().to_string()))
                    .collect()
            )
        ));
        out
    }

    /// The providers as the engine takes them (already checked by validation).
    pub fn providers(&self) -> Vec<Provider> {
        self.engine
            .providers
            .iter()
            .filter_map(|p| parse_provider(p))
            .collect()
    }
}

impl AuthorizerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthorizerKind::Polkit => "polkit",
            AuthorizerKind::Group => "group",
        }
    }
}

impl fmt::Display for AuthorizerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn drop_in_dir(main: &Path) -> PathBuf {
    let mut name = main.as_os_str().to_os_string();
    name.push(".d");
    PathBuf::from(name)
}

fn drop_in_files(dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let entries = std::fs::read_dir(dir).map_err(|e| ConfigError::Dir {
        dir: dir.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| ConfigError::Dir {
            dir: dir.to_path_buf(),
            message: e.to_string(),
        })?;
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "toml") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        message: message.into(),
    }
}

fn parse_provider(name: &str) -> Option<Provider> {
    match name {
        "tensorrt" => Some(Provider::TensorRt),
        "cuda" => Some(Provider::Cuda),
        "cpu" => Some(Provider::Cpu),
        _ => None,
    }
}

fn int_in(
    key: &str,
    value: Option<i64>,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    let v = match value {
        None => return Ok(default),
        Some(v) => v,
    };
    if v < min as i64 || v as u64 > max {
        return Err(invalid(
            key,
            format!("{v} is out of range; expected {min} to {max}"),
        ));
    }
    Ok(v as u64)
}

fn group_name(key: &str, value: Option<String>) -> Result<Option<String>, ConfigError> {
    match value {
        None => Ok(None),
        Some(g) if g.is_empty() => Ok(None),
        Some(g) => {
            let ok = g
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
            if !ok {
                return Err(invalid(key, format!("'{g}' is not a valid group name")));
            }
            Ok(Some(g))
        }
    }
}

fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
    let dirs: Vec<PathBuf> = match raw.models.dirs {
        None => DEFAULT_MODEL_DIRS.iter().map(PathBuf::from).collect(),
        Some(dirs) => {
            let mut out = Vec::new();
            for d in dirs {
                let d = d.trim();
                if d.is_empty() {
                    return Err(invalid("models.dirs", "an entry is empty"));
                }
                if !Path::new(d).is_absolute() {
                    return Err(invalid(
                        "models.dirs",
                        format!("'{d}' is not an absolute path"),
                    ));
                }
                out.push(PathBuf::from(d));
            }
            out
        }
    };
    let default = match raw.models.default {
        Some(d) if d.trim().is_empty() => None,
        other => other,
    };

    let providers = raw
        .engine
        .providers
        .unwrap_or_else(|| vec!["cpu".to_string()]);
    if providers.is_empty() {
        return Err(invalid(
            "engine.providers",
            "name at least one of tensorrt, cuda, cpu",
        ));
    }
    for p in &providers {
        if parse_provider(p).is_none() {
            return Err(invalid(
                "engine.providers",
                format!("unknown execution provider '{p}'; expected tensorrt, cuda or cpu"),
            ));
        }
    }
    let expert_memory_budget = match raw.engine.expert_memory_budget {
        None => None,
        Some(ByteSize::Bytes(b)) if b < 0 => {
            return Err(invalid(
                "engine.expert_memory_budget",
                format!("{b} is negative"),
            ));
        }
        Some(ByteSize::Bytes(0)) => None,
        Some(ByteSize::Bytes(b)) => Some(b as u64),
        Some(ByteSize::Text(t)) => match parse_bytes(&t) {
            Some(0) => None,
            Some(b) => Some(b),
            None => {
                return Err(invalid(
                    "engine.expert_memory_budget",
                    format!("'{t}' is not a byte count (examples: 1073741824, \"512MiB\", \"2G\")"),
                ));
            }
        },
    };
    let ort_library = match raw.engine.ort_library {
        None => None,
        Some(p) if p.is_empty() => None,
        Some(p) => {
            let path = PathBuf::from(&p);
            if !path.is_absolute() {
                return Err(invalid(
                    "engine.ort_library",
                    format!("'{p}' is not an absolute path"),
                ));
            }
            Some(path)
        }
    };

    let service = ServiceConfig {
        max_concurrent: int_in(
            "service.max_concurrent",
            raw.service.max_concurrent,
            2,
            1,
            1024,
        )? as u32,
        queue_depth: int_in("service.queue_depth", raw.service.queue_depth, 16, 0, 65536)? as u32,
        drain_timeout_secs: int_in(
            "service.drain_timeout_secs",
            raw.service.drain_timeout_secs,
            60,
            0,
            86400,
        )?,
        state_directory: match raw.service.state_directory {
            None => None,
            Some(p) if p.is_empty() => None,
            Some(p) => {
                let path = PathBuf::from(&p);
                if !path.is_absolute() {
                    return Err(invalid(
                        "service.state_directory",
                        format!("'{p}' is not an absolute path"),
                    ));
                }
                Some(path)
            }
        },
    };

    let authorizer = match raw.access.authorizer.as_deref() {
        None | Some("polkit") => AuthorizerKind::Polkit,
        Some("group") => AuthorizerKind::Group,
        Some(other) => {
            return Err(invalid(
                "access.authorizer",
                format!("unknown authorizer '{other}'; expected polkit or group"),
            ));
        }
    };
    let access = AccessConfig {
        authorizer,
        allowed_group: group_name("access.allowed_group", raw.access.allowed_group)?,
        admin_group: group_name("access.admin_group", raw.access.admin_group)?,
    };

    let level = raw
        .log
        .level
        .unwrap_or_else(|| "info".to_string())
        .to_lowercase();
    if !["error", "warn", "info", "debug", "trace"].contains(&level.as_str()) {
        return Err(invalid(
            "log.level",
            format!("unknown level '{level}'; expected error, warn, info, debug or trace"),
        ));
    }

    let mut filters = Vec::new();
    for (i, f) in raw
        .plugins
        .filters
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let key = format!("plugins.filters[{i}]");
        if f.trim().is_empty() {
            return Err(invalid(&key, "empty path; name a built plugin (NAME.wasm)"));
        }
        let path = PathBuf::from(&f);
        if !path.is_absolute() {
            return Err(invalid(
                &key,
                format!(
                    "'{f}' is not an absolute path; the service does not resolve relative paths"
                ),
            ));
        }
        if filters.contains(&path) {
            return Err(invalid(&key, format!("'{f}' is listed twice")));
        }
        filters.push(path);
    }
    Ok(Config {
        sources: Vec::new(),
        models: ModelsConfig { dirs, default },
        engine: EngineConfig {
            providers,
            expert_memory_budget,
            ort_library,
        },
        service,
        access,
        log: LogConfig { level },
        plugins: PluginsConfig { filters },
    })
}

/// `123`, `512KiB`, `512MiB`, `2GiB`, `2G` (powers of 1024 and 1000 as written).
fn parse_bytes(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KB" => 1000,
        "KiB" => 1 << 10,
        "M" | "MB" => 1000 * 1000,
        "MiB" => 1 << 20,
        "G" | "GB" => 1000 * 1000 * 1000,
        "GiB" => 1 << 30,
        "T" | "TB" => 1000 * 1000 * 1000 * 1000,
        "TiB" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mult)
}

#[cfg(test)]
mod tests;
