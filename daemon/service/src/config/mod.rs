//! The daemon's configuration: `/etc/moed/moed.toml`, then `moed.toml.d/*.toml` in name order,
//! then `MOED_*` environment variables; every value checked, errors naming the key. The sections
//! live in sections.rs, their checks in validate.rs, `moed check-config`'s rendering in render.rs;
//! `[knowledge]` (data sources) has all three in knowledge.rs, `[retrieval]` (passages in
//! prompts) in retrieval.rs.

mod checks;
mod knowledge;
mod locate;
mod plugins;
mod render;
mod retrieval;
mod sections;
mod validate;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use config::{Environment, File, FileFormat};
use serde::Serialize;

pub use knowledge::{
    DEFAULT_EMBEDDED_LABEL, DEFAULT_SECRETS_FILE, KnowledgeConfig, QueryTransform, SourceConfig,
    SourceLimits, SourceSpec, check_label,
};
pub use plugins::{GrantSettings, PluginSettings};
pub use retrieval::RetrievalConfig;
pub use sections::*;
use validate::validate;

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
    /// [`ConfigError::Invalid`] with where the value was set (`FILE:LINE` or an environment
    /// variable).
    #[error("{place}: configuration key '{key}': {message}")]
    InvalidAt {
        place: String,
        key: String,
        message: String,
    },
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
    pub knowledge: KnowledgeConfig,
    pub retrieval: RetrievalConfig,
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
        if let Some(env) = &env {
            environment = environment.source(Some(env.clone().into_iter().collect()));
        }
        builder = builder.add_source(environment);
        let raw: RawConfig = builder
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        let mut config = validate(raw).map_err(|e| match e {
            ConfigError::Invalid { key, message } => {
                match locate::locate(&key, &sources, env.as_ref()) {
                    Some(place) => ConfigError::InvalidAt {
                        place,
                        key,
                        message,
                    },
                    None => ConfigError::Invalid { key, message },
                }
            }
            other => other,
        })?;
        config.sources = sources;
        Ok(config)
    }

    /// The built-in configuration: no file and no environment (what a one-shot command runs
    /// with unless it is given a file).
    pub fn builtin() -> Result<Config, ConfigError> {
        let raw: RawConfig = config::Config::builder()
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        validate(raw)
    }

    /// The providers as the engine takes them (already checked by validation).
    pub fn providers(&self) -> Vec<Provider> {
        self.engine.providers.clone()
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

#[cfg(test)]
mod prop_tests;
#[cfg(test)]
mod tests;
