//! The filter plugins of `[plugins] filters`, loaded once at start and applied to every
//! inference request (see runner.rs); a plugin that cannot be loaded stops the start.

use std::path::Path;

use moed_plugins::{FilterPlugin, HostOptions, PluginHost, Services};

/// The configured filters, in order, with the host that runs them.
#[derive(Default)]
pub struct ServiceFilters {
    /// Kept because the plugins run on its engine; `None` when no filter is configured.
    _host: Option<PluginHost>,
    pub plugins: Vec<FilterPlugin>,
}

#[derive(Debug, thiserror::Error)]
#[error("plugin filter {path}: {message}")]
pub struct FilterLoadError {
    pub path: String,
    pub message: String,
}

impl ServiceFilters {
    /// Loads `paths` (built plugins: `NAME.wasm` beside `NAME.toml`, or a plugin directory),
    /// compiled components cached under `cache_dir`.
    pub fn load(paths: &[impl AsRef<Path>], cache_dir: &Path) -> Result<Self, FilterLoadError> {
        if paths.is_empty() {
            return Ok(ServiceFilters::default());
        }
        let fail = |path: &Path, message: String| FilterLoadError {
            path: path.display().to_string(),
            message,
        };
        let options = HostOptions {
            cache_dir: Some(cache_dir.to_owned()),
            ..HostOptions::default()
        };
        let host = PluginHost::new(options, Services::default())
            .map_err(|e| fail(Path::new("(host)"), e.to_string()))?;
        let mut plugins = Vec::new();
        for path in paths {
            let path = path.as_ref();
            let plugin =
                crate::plugins::load_path(&host, path).map_err(|e| fail(path, e.to_string()))?;
            let filter = FilterPlugin::new(&plugin).ok_or_else(|| {
                fail(
                    path,
                    format!("plugin '{}' is not a filter plugin", plugin.name()),
                )
            })?;
            log::info!(
                "filter plugin '{}' loaded from {}",
                plugin.name(),
                path.display()
            );
            plugins.push(filter);
        }
        Ok(ServiceFilters {
            _host: Some(host),
            plugins,
        })
    }
}
