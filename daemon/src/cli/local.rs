//! A service for one command: `moed generate` and `moed score` build the same [`Service`] the
//! daemon serves (filter plugins, retrieval, gates, scheduler) from a configuration file when
//! given one, over a state directory of their own, and drive it the way the daemon does.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use moed_plugins::Sources;
use moed_service::Service;
use moed_service::service::{Client, Parts};

use crate::config::Config;
use crate::engine::EngineOptions;
use crate::knowledge::Knowledge;
use crate::state::StateStore;
use moed_service::plugin_manager::{self, PluginManager};

/// Where the one-shot service takes its configuration and state from.
#[derive(clap::Args, Debug, Clone)]
pub struct ServiceArgs {
    /// Run under this daemon configuration file (moed.toml): its filter plugins, knowledge
    /// sources and retrieval settings apply as in the daemon. Default: the built-in
    /// configuration, with no plugins and no sources.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// State directory (installed plugins, embedded document stores, expert statistics).
    /// Default: a temporary one, removed afterwards. Not that of a running daemon: it holds
    /// the directory's lock.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

/// The service and what must live as long as it.
pub struct LocalService {
    pub service: Arc<Service>,
    /// The temporary state directory, removed when dropped.
    _scratch: Option<tempfile::TempDir>,
}

/// Engine settings from the command line, over the configuration's.
pub struct EngineOverrides {
    pub providers: Vec<crate::engine::Provider>,
    pub expert_memory_budget: Option<u64>,
    pub ort_library: Option<PathBuf>,
    pub base: EngineOptions,
}

impl LocalService {
    /// Builds the service; call inside a tokio runtime (plugin failures are republished by a
    /// task).
    pub fn open(args: &ServiceArgs, engine: EngineOverrides) -> anyhow::Result<LocalService> {
        let mut config = match &args.config {
            Some(file) => Config::load(Some(file))
                .with_context(|| format!("the configuration {}", file.display()))?,
            None => Config::builtin().context("the built-in configuration")?,
        };
        config.engine.providers = engine.providers;
        if engine.expert_memory_budget.is_some() {
            config.engine.expert_memory_budget = engine.expert_memory_budget;
        }
        if engine.ort_library.is_some() {
            config.engine.ort_library = engine.ort_library;
        }
        // `--experts-one-at-a-time` turns it off whatever the configuration says.
        if !engine.base.experts_side_by_side {
            config.engine.experts_side_by_side = false;
        }
        if !engine.base.prefetch_next_layer {
            config.engine.prefetch_next_layer = false;
        }
        let (dir, scratch) = match &args.state_dir {
            Some(dir) => (dir.clone(), None),
            None => {
                // Only its user may read it: the alert log and plugin state are theirs.
                let scratch = tempfile::Builder::new()
                    .prefix("moed-state-")
                    .permissions(std::fs::Permissions::from_mode(0o700))
                    .tempdir()
                    .context("cannot create a temporary state directory")?;
                (scratch.path().to_path_buf(), Some(scratch))
            }
        };
        let state = StateStore::open(&dir)?;
        let sources = Arc::new(Sources::default());
        let knowledge = Knowledge::start(&config.knowledge, &state, sources.clone())?;
        let (plugins, failures) = PluginManager::open(
            &state,
            &config.plugins,
            sources.clone(),
            plugin_manager::cache_dir(&dir),
        )?;
        let service = Service::new(Parts {
            config,
            state,
            sources,
            knowledge,
            plugins: Arc::new(plugins),
            plugin_failures: Some(failures),
            engine_base: engine.base,
        });
        Ok(LocalService {
            service,
            _scratch: scratch,
        })
    }

    /// Loads the package at `dir` and makes it the model requests use.
    pub async fn load(&self, dir: &std::path::Path) -> anyhow::Result<()> {
        let path = std::path::absolute(dir)
            .with_context(|| format!("the model package {}", dir.display()))?;
        let name = path.to_string_lossy();
        self.service
            .switch(&name, None, None)
            .await
            .with_context(|| format!("cannot load the model package {}", dir.display()))?;
        Ok(())
    }
}

/// The command's user, as the service's scheduler and audit log know clients.
pub fn client(command: &str) -> Client {
    Client {
        key: format!("moed {command}"),
        uid: nix::unistd::getuid().as_raw(),
    }
}

/// A multi-threaded runtime for the service's blocking work and its tasks.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}
