//! Persistent daemon state in sled: the one module that touches the store. Every write that a
//! client is told about is flushed to disk before the reply, so it survives `kill -9`.

mod alerts;
mod plugins;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

pub use alerts::{ALERT_LOG_MAX, AlertEntry};
pub use plugins::PluginRecord;

/// Default state directory of the system service (systemd sets `$STATE_DIRECTORY` to it).
pub const SYSTEM_STATE_DIR: &str = "/var/lib/moed";

const EXPERT_STATS_TREE: &str = "expert_stats";
const SETTINGS_TREE: &str = "settings";
const ACTIVE_MODEL_KEY: &str = "active_model";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state store {dir}: {message}")]
    Open { dir: PathBuf, message: String },
    #[error("state store: {0}")]
    Store(#[from] sled::Error),
    #[error("state store: record '{key}' in '{tree}' is unreadable: {message}")]
    Corrupt {
        tree: String,
        key: String,
        message: String,
    },
}

/// Expert statistics of one model accumulated over every run of the daemon.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedStats {
    /// `[layer][expert]` tokens routed; dense layers have an empty row.
    pub activations: Vec<Vec<u64>>,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub cache_evictions: u64,
    pub requests: u64,
    /// Tokens the engine ran (prompt and generated), so the expert loads can be put per token.
    /// Records written before these counters existed read them as 0.
    #[serde(default)]
    pub tokens: u64,
    /// File bytes of experts loaded on misses, the time creating their sessions took, and the
    /// bytes read from storage during the model's passes (`EngineStats::expert_load_bytes` and
    /// the two after it).
    #[serde(default)]
    pub expert_load_bytes: u64,
    #[serde(default)]
    pub expert_load_nanos: u64,
    #[serde(default)]
    pub storage_read_bytes: u64,
    /// Predictive prefetch: experts guessed for a layer before it ran, how many of them it then
    /// chose, and how many it chose (`EngineStats::prefetch_guessed` and the two after it).
    #[serde(default)]
    pub prefetch_guessed: u64,
    #[serde(default)]
    pub prefetch_guessed_right: u64,
    #[serde(default)]
    pub prefetch_chosen: u64,
}

impl PersistedStats {
    /// Adds `delta`'s counters; rows and columns grow as needed.
    pub fn add(&mut self, delta: &PersistedStats) {
        if self.activations.len() < delta.activations.len() {
            self.activations.resize(delta.activations.len(), Vec::new());
        }
        for (row, drow) in self.activations.iter_mut().zip(&delta.activations) {
            if row.len() < drow.len() {
                row.resize(drow.len(), 0);
            }
            for (a, d) in row.iter_mut().zip(drow) {
                *a = a.saturating_add(*d);
            }
        }
        self.cache_hits = self.cache_hits.saturating_add(delta.cache_hits);
        self.cache_misses = self.cache_misses.saturating_add(delta.cache_misses);
        self.cache_evictions = self.cache_evictions.saturating_add(delta.cache_evictions);
        self.requests = self.requests.saturating_add(delta.requests);
        self.tokens = self.tokens.saturating_add(delta.tokens);
        self.expert_load_bytes = self
            .expert_load_bytes
            .saturating_add(delta.expert_load_bytes);
        self.expert_load_nanos = self
            .expert_load_nanos
            .saturating_add(delta.expert_load_nanos);
        self.storage_read_bytes = self
            .storage_read_bytes
            .saturating_add(delta.storage_read_bytes);
        self.prefetch_guessed = self.prefetch_guessed.saturating_add(delta.prefetch_guessed);
        self.prefetch_guessed_right = self
            .prefetch_guessed_right
            .saturating_add(delta.prefetch_guessed_right);
        self.prefetch_chosen = self.prefetch_chosen.saturating_add(delta.prefetch_chosen);
    }
}

/// The daemon's state store.
#[derive(Clone)]
pub struct StateStore {
    dir: PathBuf,
    db: sled::Db,
    /// Serializes appends to the alert audit log and indexes its entries by user.
    alert_log: Arc<Mutex<alerts::AlertIndex>>,
}

/// Where state lives: `configured`, else `$STATE_DIRECTORY` (its first entry), else
/// `/var/lib/moed`; for a session daemon `$XDG_STATE_HOME/moed` (default `~/.local/state/moed`).
pub fn state_dir(configured: Option<&Path>, session: bool) -> Option<PathBuf> {
    if let Some(dir) = configured {
        return Some(dir.to_path_buf());
    }
    if let Some(dirs) = std::env::var_os("STATE_DIRECTORY") {
        let dirs = dirs.to_string_lossy().to_string();
        if let Some(first) = dirs.split(':').find(|d| !d.is_empty()) {
            return Some(PathBuf::from(first));
        }
    }
    if !session {
        return Some(PathBuf::from(SYSTEM_STATE_DIR));
    }
    if let Some(xdg) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(xdg).join("moed"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/state/moed"))
}

impl StateStore {
    /// Opens (creating) the store in `dir/db`. A second daemon on the same directory is refused
    /// by sled's lock.
    pub fn open(dir: &Path) -> Result<StateStore, StateError> {
        std::fs::create_dir_all(dir).map_err(|e| StateError::Open {
            dir: dir.to_path_buf(),
            message: format!("cannot create it: {e}"),
        })?;
        let db = sled::Config::new()
            .path(dir.join("db"))
            .open()
            .map_err(|e| StateError::Open {
                dir: dir.to_path_buf(),
                message: format!(
                    "cannot open the database ({e}); is another moed running on this directory?"
                ),
            })?;
        Ok(StateStore {
            dir: dir.to_path_buf(),
            db,
            alert_log: Arc::new(Mutex::new(alerts::AlertIndex::default())),
        })
    }

    /// Opens `dir` again after a handle in this process was dropped: sled's flusher thread keeps
    /// the file lock for a moment after the last handle goes, so a test that reopens waits for it.
    #[cfg(test)]
    pub(crate) fn reopen(dir: &Path) -> StateStore {
        for _ in 0..200 {
            if let Ok(s) = StateStore::open(dir) {
                return s;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("cannot reopen the state store in {}", dir.display());
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A named tree for other parts of the daemon (plugin stores, audit log, documents).
    pub fn tree(&self, name: &str) -> Result<sled::Tree, StateError> {
        Ok(self.db.open_tree(name)?)
    }

    /// Writes everything to disk; call before acknowledging a change.
    pub fn flush(&self) -> Result<(), StateError> {
        self.db.flush()?;
        Ok(())
    }

    pub fn expert_stats(&self, model: &str) -> Result<Option<PersistedStats>, StateError> {
        self.get_json(EXPERT_STATS_TREE, model)
    }

    /// Adds `delta` to the stored statistics of `model` and flushes.
    pub fn add_expert_stats(
        &self,
        model: &str,
        delta: &PersistedStats,
    ) -> Result<PersistedStats, StateError> {
        let tree = self.tree(EXPERT_STATS_TREE)?;
        let mut total = self.expert_stats(model)?.unwrap_or_default();
        total.add(delta);
        tree.insert(model.as_bytes(), json(&total))?;
        self.flush()?;
        Ok(total)
    }

    /// Forgets the statistics of `model` and flushes; false when there were none.
    pub fn reset_expert_stats(&self, model: &str) -> Result<bool, StateError> {
        let removed = self.tree(EXPERT_STATS_TREE)?.remove(model.as_bytes())?;
        self.flush()?;
        Ok(removed.is_some())
    }

    /// The model last made active with `Switch`, restored at start.
    pub fn active_model(&self) -> Result<Option<String>, StateError> {
        self.get_json(SETTINGS_TREE, ACTIVE_MODEL_KEY)
    }

    pub fn set_active_model(&self, name: Option<&str>) -> Result<(), StateError> {
        let tree = self.tree(SETTINGS_TREE)?;
        match name {
            Some(name) => tree.insert(ACTIVE_MODEL_KEY, json(&name))?,
            None => tree.remove(ACTIVE_MODEL_KEY)?,
        };
        self.flush()
    }

    fn get_json<T: for<'de> Deserialize<'de>>(
        &self,
        tree: &str,
        key: &str,
    ) -> Result<Option<T>, StateError> {
        let Some(bytes) = self.tree(tree)?.get(key.as_bytes())? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StateError::Corrupt {
                tree: tree.to_string(),
                key: key.to_string(),
                message: e.to_string(),
            })
    }
}

fn json<T: Serialize>(value: &T) -> Vec<u8> {
    // Plain data structs of numbers and strings always serialize.
    serde_json::to_vec(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_accumulate_and_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let delta = PersistedStats {
            activations: vec![vec![], vec![1, 2, 3]],
            cache_hits: 4,
            cache_misses: 5,
            cache_evictions: 0,
            requests: 1,
            tokens: 9,
            expert_load_bytes: 1000,
            expert_load_nanos: 20,
            storage_read_bytes: 300,
            prefetch_guessed: 16,
            prefetch_guessed_right: 12,
            prefetch_chosen: 14,
        };
        {
            let store = StateStore::open(dir.path()).expect("open");
            store.add_expert_stats("m", &delta).expect("add");
            let total = store.add_expert_stats("m", &delta).expect("add");
            assert_eq!(total.activations, vec![vec![], vec![2, 4, 6]]);
            store.set_active_model(Some("m")).expect("set");
        }
        let store = StateStore::reopen(dir.path());
        let total = store.expert_stats("m").expect("read").expect("present");
        assert_eq!(total.cache_hits, 8);
        assert_eq!(total.requests, 2);
        assert_eq!(
            (
                total.prefetch_guessed,
                total.prefetch_guessed_right,
                total.prefetch_chosen
            ),
            (32, 24, 28)
        );
        assert_eq!(store.active_model().expect("read").as_deref(), Some("m"));
        assert!(store.reset_expert_stats("m").expect("reset"));
        assert!(!store.reset_expert_stats("m").expect("reset again"));
        assert_eq!(store.expert_stats("m").expect("read"), None);
    }
}
