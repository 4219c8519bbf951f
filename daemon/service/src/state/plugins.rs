//! The registry of installed plugins (what the administrator decided: enabled, grant,
//! configuration) and the plugins' key-value stores, in sled. The components themselves are
//! files under the state directory (the plugin manager's business).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{StateError, StateStore, json};

const PLUGINS_TREE: &str = "plugins";
/// The prefix of the plugins' key-value trees (moed_plugins::kv::SledKv names them so).
const KV_TREE_PREFIX: &str = "plugin-kv/";

/// A record's name and the record, or why it cannot be read.
pub type RecordRead = (String, Result<PluginRecord, StateError>);

/// One installed plugin as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginRecord {
    pub name: String,
    pub version: String,
    /// `gate`, `filter` or `retrieval`.
    pub kind: String,
    /// The administrator's switch (`Enable`/`Disable`).
    pub enabled: bool,
    /// Applied to every request; `None`: the kind's default.
    pub always: Option<bool>,
    /// What the administrator granted at install (the configuration file may narrow it).
    pub grant: moed_plugins::Grant,
    /// The plugin's configuration as given with `Configure` (defaults not filled in).
    pub config: Map<String, Value>,
    /// Where it was installed from (a path, or `fd` for `InstallFd`).
    pub source: String,
    /// Seconds since the Unix epoch.
    pub installed_at: f64,
}

impl StateStore {
    /// Every installed plugin's record by name; an unreadable record is reported as such.
    pub fn plugin_records(&self) -> Result<Vec<RecordRead>, StateError> {
        let tree = self.tree(PLUGINS_TREE)?;
        let mut out = Vec::new();
        for item in tree.iter() {
            let (key, value) = item?;
            let name = String::from_utf8_lossy(&key).to_string();
            let record = serde_json::from_slice(&value).map_err(|e| StateError::Corrupt {
                tree: PLUGINS_TREE.into(),
                key: name.clone(),
                message: e.to_string(),
            });
            out.push((name, record));
        }
        Ok(out)
    }

    /// Writes a plugin's record and flushes.
    pub fn put_plugin_record(&self, record: &PluginRecord) -> Result<(), StateError> {
        self.tree(PLUGINS_TREE)?
            .insert(record.name.as_bytes(), json(record))?;
        self.flush()
    }

    /// Forgets a plugin's record and flushes.
    pub fn remove_plugin_record(&self, name: &str) -> Result<(), StateError> {
        self.tree(PLUGINS_TREE)?.remove(name.as_bytes())?;
        self.flush()
    }

    /// The backend of the plugins' key-value stores: one tree per plugin in this store.
    pub fn plugin_kv(&self) -> moed_plugins::kv::SledKv {
        let db = self.db.clone();
        moed_plugins::kv::SledKv::with_trees(move |name| {
            db.open_tree(name).map_err(|e| e.to_string())
        })
    }

    /// Whether the plugin `name` has a key-value store.
    pub fn plugin_kv_exists(&self, name: &str) -> bool {
        let tree = format!("{KV_TREE_PREFIX}{name}");
        self.db
            .tree_names()
            .iter()
            .any(|t| t.as_ref() == tree.as_bytes())
    }

    /// Deletes the key-value store of plugin `name` (when it is removed) and flushes.
    pub fn drop_plugin_kv(&self, name: &str) -> Result<(), StateError> {
        self.db.drop_tree(format!("{KV_TREE_PREFIX}{name}"))?;
        self.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moed_plugins::kv::KvBackend;

    #[test]
    fn records_and_stores_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateStore::open(dir.path()).expect("open");
        let record = PluginRecord {
            name: "pii-redact".into(),
            version: "0.1.0".into(),
            kind: "filter".into(),
            enabled: true,
            always: None,
            grant: moed_plugins::Grant {
                alerts: true,
                ..Default::default()
            },
            config: Map::from_iter([("email".to_string(), Value::Bool(false))]),
            source: "/x/pii-redact.wasm".into(),
            installed_at: 2.0,
        };
        store.put_plugin_record(&record).expect("put");
        let all = store.plugin_records().expect("list");
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].1.as_ref().expect("readable"), &record);

        assert!(!store.plugin_kv_exists("pii-redact"));
        let kv = store.plugin_kv().open("pii-redact").expect("open kv");
        kv.set("k", b"v").expect("set");
        assert!(store.plugin_kv_exists("pii-redact"));
        store.drop_plugin_kv("pii-redact").expect("drop");
        assert!(!store.plugin_kv_exists("pii-redact"));

        store.remove_plugin_record("pii-redact").expect("remove");
        assert!(store.plugin_records().expect("list").is_empty());
    }
}
