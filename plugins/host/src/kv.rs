//! Per-plugin key-value stores: a backend gives each plugin its own namespace (a sled tree in the
//! daemon, memory in tests and one-shot commands); the host enforces the granted byte quota (keys
//! plus values) and per-entry size caps in front of it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// One plugin's namespace.
pub trait KvStore: Send + Sync {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String>;
    /// Stores `value`; returns the previous value's length.
    fn set(&self, key: &str, value: &[u8]) -> Result<Option<usize>, String>;
    /// Returns the removed value's length.
    fn delete(&self, key: &str) -> Result<Option<usize>, String>;
    /// Keys starting with `prefix`, in byte order, at most `max`.
    fn keys(&self, prefix: &str, max: usize) -> Result<Vec<String>, String>;
    /// Bytes stored (keys plus values).
    fn used(&self) -> Result<u64, String>;
}

/// Opens the namespace of a plugin.
pub trait KvBackend: Send + Sync {
    fn open(&self, plugin: &str) -> Result<Arc<dyn KvStore>, String>;
}

/// Stores in memory, per plugin name, for the life of the backend.
#[derive(Default)]
pub struct MemoryKv {
    spaces: Mutex<BTreeMap<String, Arc<MemorySpace>>>,
}

#[derive(Default)]
struct MemorySpace(Mutex<BTreeMap<String, Vec<u8>>>);

fn poisoned<T>(_: T) -> String {
    "the store's lock is poisoned".into()
}

impl KvBackend for MemoryKv {
    fn open(&self, plugin: &str) -> Result<Arc<dyn KvStore>, String> {
        let mut spaces = self.spaces.lock().map_err(poisoned)?;
        Ok(spaces.entry(plugin.to_owned()).or_default().clone())
    }
}

impl KvStore for MemorySpace {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        Ok(self.0.lock().map_err(poisoned)?.get(key).cloned())
    }
    fn set(&self, key: &str, value: &[u8]) -> Result<Option<usize>, String> {
        Ok(self
            .0
            .lock()
            .map_err(poisoned)?
            .insert(key.to_owned(), value.to_vec())
            .map(|v| v.len()))
    }
    fn delete(&self, key: &str) -> Result<Option<usize>, String> {
        Ok(self
            .0
            .lock()
            .map_err(poisoned)?
            .remove(key)
            .map(|v| v.len()))
    }
    fn keys(&self, prefix: &str, max: usize) -> Result<Vec<String>, String> {
        let map = self.0.lock().map_err(poisoned)?;
        Ok(map
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(max)
            .map(|(k, _)| k.clone())
            .collect())
    }
    fn used(&self) -> Result<u64, String> {
        let map = self.0.lock().map_err(poisoned)?;
        Ok(map.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum())
    }
}

/// Opens the sled tree of a plugin's store.
type TreeOpener = dyn Fn(&str) -> Result<sled::Tree, String> + Send + Sync;

/// Stores in sled, one tree per plugin (`plugin-kv/NAME`). sled flushes on its own schedule
/// (every 500 ms by default); plugin state is not a client's acknowledged change.
pub struct SledKv {
    open: Box<TreeOpener>,
}

impl SledKv {
    pub fn new(db: sled::Db) -> SledKv {
        SledKv::with_trees(move |name| db.open_tree(name).map_err(|e| e.to_string()))
    }

    /// Trees from the daemon's state store (`open` gets the tree name `plugin-kv/NAME`).
    pub fn with_trees(
        open: impl Fn(&str) -> Result<sled::Tree, String> + Send + Sync + 'static,
    ) -> SledKv {
        SledKv {
            open: Box::new(open),
        }
    }
}

struct SledSpace(sled::Tree);

impl KvBackend for SledKv {
    fn open(&self, plugin: &str) -> Result<Arc<dyn KvStore>, String> {
        let tree = (self.open)(&format!("plugin-kv/{plugin}"))
            .map_err(|e| format!("cannot open the store of plugin '{plugin}': {e}"))?;
        Ok(Arc::new(SledSpace(tree)))
    }
}

fn sled_err(e: sled::Error) -> String {
    format!("store error: {e}")
}

impl KvStore for SledSpace {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        Ok(self.0.get(key).map_err(sled_err)?.map(|v| v.to_vec()))
    }
    fn set(&self, key: &str, value: &[u8]) -> Result<Option<usize>, String> {
        Ok(self
            .0
            .insert(key, value)
            .map_err(sled_err)?
            .map(|v| v.len()))
    }
    fn delete(&self, key: &str) -> Result<Option<usize>, String> {
        Ok(self.0.remove(key).map_err(sled_err)?.map(|v| v.len()))
    }
    fn keys(&self, prefix: &str, max: usize) -> Result<Vec<String>, String> {
        self.0
            .scan_prefix(prefix)
            .keys()
            .take(max)
            .map(|k| {
                let k = k.map_err(sled_err)?;
                String::from_utf8(k.to_vec()).map_err(|_| "a stored key is not UTF-8".to_owned())
            })
            .collect()
    }
    fn used(&self) -> Result<u64, String> {
        let mut total = 0u64;
        for item in self.0.iter() {
            let (k, v) = item.map_err(sled_err)?;
            total += (k.len() + v.len()) as u64;
        }
        Ok(total)
    }
}

/// Largest key a plugin may use, bytes.
pub const MAX_KEY: usize = 512;
/// Most keys one `keys` call returns.
pub const MAX_KEYS_LISTED: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuotaError {
    QuotaExceeded(u64),
    TooLarge(u64),
    Unavailable(String),
}

/// A plugin's store behind its quota. Shared by the plugin's instances.
pub(crate) struct QuotaKv {
    store: Arc<dyn KvStore>,
    quota: u64,
    used: Mutex<u64>,
}

impl QuotaKv {
    pub fn new(store: Arc<dyn KvStore>, quota: u64) -> Result<QuotaKv, String> {
        let used = store.used()?;
        Ok(QuotaKv {
            store,
            quota,
            used: Mutex::new(used),
        })
    }

    fn key_ok(key: &str) -> Result<(), QuotaError> {
        if key.len() > MAX_KEY {
            return Err(QuotaError::TooLarge(MAX_KEY as u64));
        }
        Ok(())
    }

    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, QuotaError> {
        Self::key_ok(key)?;
        self.store.get(key).map_err(QuotaError::Unavailable)
    }

    pub fn set(&self, key: &str, value: &[u8]) -> Result<(), QuotaError> {
        Self::key_ok(key)?;
        let entry = (key.len() + value.len()) as u64;
        if entry > self.quota {
            return Err(QuotaError::TooLarge(self.quota));
        }
        // Held across the write so that concurrent instances cannot both pass the check.
        let mut used = self
            .used
            .lock()
            .map_err(|_| QuotaError::Unavailable(poisoned(())))?;
        let old = self
            .store
            .get(key)
            .map_err(QuotaError::Unavailable)?
            .map_or(0, |v| (key.len() + v.len()) as u64);
        let after = *used - old.min(*used) + entry;
        if after > self.quota {
            return Err(QuotaError::QuotaExceeded(self.quota));
        }
        self.store
            .set(key, value)
            .map_err(QuotaError::Unavailable)?;
        *used = after;
        Ok(())
    }

    pub fn delete(&self, key: &str) -> Result<bool, QuotaError> {
        Self::key_ok(key)?;
        let mut used = self
            .used
            .lock()
            .map_err(|_| QuotaError::Unavailable(poisoned(())))?;
        match self.store.delete(key).map_err(QuotaError::Unavailable)? {
            Some(len) => {
                *used = used.saturating_sub((key.len() + len) as u64);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    pub fn keys(&self, prefix: &str) -> Result<Vec<String>, QuotaError> {
        Self::key_ok(prefix)?;
        self.store
            .keys(prefix, MAX_KEYS_LISTED)
            .map_err(QuotaError::Unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_quota(backend: &dyn KvBackend) {
        let kv = QuotaKv::new(backend.open("p").expect("open"), 100).expect("quota");
        kv.set("a", &[0; 40]).expect("first");
        kv.set("b", &[0; 40]).expect("second");
        assert_eq!(kv.set("c", &[0; 40]), Err(QuotaError::QuotaExceeded(100)));
        // Replacing a value counts the difference only.
        kv.set("a", &[1; 50]).expect("replace");
        assert_eq!(kv.get("a").expect("get"), Some(vec![1; 50]));
        assert!(kv.delete("a").expect("delete"));
        kv.set("c", &[0; 40]).expect("after delete");
        assert_eq!(kv.keys("").expect("keys"), vec!["b", "c"]);
        assert_eq!(kv.set("big", &[0; 200]), Err(QuotaError::TooLarge(100)));
        // Another namespace is separate; reopening sees the usage.
        let again = QuotaKv::new(backend.open("p").expect("open"), 100).expect("quota");
        assert_eq!(
            again.set("d", &[0; 40]),
            Err(QuotaError::QuotaExceeded(100))
        );
        let other = QuotaKv::new(backend.open("q").expect("open"), 100).expect("quota");
        assert_eq!(other.keys("").expect("keys"), Vec::<String>::new());
    }

    #[test]
    fn memory_quota() {
        check_quota(&MemoryKv::default());
    }

    #[test]
    fn sled_quota_and_persistence() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let db = sled::open(dir.path()).expect("sled");
            check_quota(&SledKv::new(db.clone()));
            db.flush().expect("flush");
        }
        // sled's flusher thread keeps the file lock for a moment after the last handle drops.
        let db = (0..100)
            .find_map(|_| {
                sled::open(dir.path())
                    .map_err(|_| std::thread::sleep(std::time::Duration::from_millis(50)))
                    .ok()
            })
            .expect("sled reopen");
        let kv = SledKv::new(db).open("p").expect("open");
        assert_eq!(kv.get("b").expect("get"), Some(vec![0; 40]));
    }
}
