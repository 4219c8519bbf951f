//! The alert audit log: every alert a plugin raised, in order, bounded to [`ALERT_LOG_MAX`]
//! entries (the oldest are dropped), flushed to disk before the append returns.

use serde::{Deserialize, Serialize};

use super::{StateError, StateStore, json};

const ALERT_LOG_TREE: &str = "alert_log";

/// Entries kept; appending past it drops the oldest.
pub const ALERT_LOG_MAX: u64 = 10_000;

/// One alert as logged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertEntry {
    /// Position in the log, increasing (assigned by the append; ignored when given).
    #[serde(default)]
    pub seq: u64,
    /// Seconds since the Unix epoch.
    pub time: f64,
    /// The request the alert is about, when it came from one.
    pub request_id: Option<String>,
    pub plugin: String,
    /// `info`, `warning` or `error`.
    pub severity: String,
    pub code: String,
    pub message: String,
    /// The user id of the client whose request it was, when known.
    pub uid: Option<u32>,
}

impl StateStore {
    /// Appends `entries` in order, drops what falls past [`ALERT_LOG_MAX`], and flushes.
    pub fn append_alerts(&self, entries: &[AlertEntry]) -> Result<(), StateError> {
        if entries.is_empty() {
            return Ok(());
        }
        let tree = self.tree(ALERT_LOG_TREE)?;
        // Sequence numbers follow the last stored key, so they stay contiguous across restarts
        // and the bound is a plain key range.
        let _guard = self.alert_log.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = match tree.last()? {
            Some((key, _)) => seq_of(&key)? + 1,
            None => 1,
        };
        let mut batch = sled::Batch::default();
        for e in entries {
            let mut e = e.clone();
            e.seq = next;
            batch.insert(&next.to_be_bytes(), json(&e));
            next += 1;
        }
        tree.apply_batch(batch)?;
        let first_kept = next.saturating_sub(ALERT_LOG_MAX);
        let mut old = sled::Batch::default();
        for key in tree.range(..first_kept.to_be_bytes()).keys() {
            old.remove(key?);
        }
        tree.apply_batch(old)?;
        self.flush()
    }

    /// The newest `limit` entries, oldest first.
    pub fn recent_alerts(&self, limit: usize) -> Result<Vec<AlertEntry>, StateError> {
        let tree = self.tree(ALERT_LOG_TREE)?;
        let mut out = Vec::new();
        for item in tree.iter().rev().take(limit) {
            let (key, value) = item?;
            let seq = seq_of(&key)?;
            let mut entry: AlertEntry =
                serde_json::from_slice(&value).map_err(|e| StateError::Corrupt {
                    tree: ALERT_LOG_TREE.into(),
                    key: seq.to_string(),
                    message: e.to_string(),
                })?;
            entry.seq = seq;
            out.push(entry);
        }
        out.reverse();
        Ok(out)
    }
}

fn seq_of(key: &[u8]) -> Result<u64, StateError> {
    let bytes: [u8; 8] = key.try_into().map_err(|_| StateError::Corrupt {
        tree: ALERT_LOG_TREE.into(),
        key: format!("{key:?}"),
        message: "the key is not an 8-byte sequence number".into(),
    })?;
    Ok(u64::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(code: &str) -> AlertEntry {
        AlertEntry {
            seq: 0,
            time: 1.5,
            request_id: Some("7".into()),
            plugin: "p".into(),
            severity: "warning".into(),
            code: code.into(),
            message: "m".into(),
            uid: Some(1000),
        }
    }

    #[test]
    fn log_is_ordered_and_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateStore::open(dir.path()).expect("open");
        store
            .append_alerts(&[entry("a"), entry("b")])
            .expect("append");
        let got = store.recent_alerts(10).expect("read");
        assert_eq!(
            got.iter()
                .map(|e| (e.seq, e.code.as_str()))
                .collect::<Vec<_>>(),
            [(1, "a"), (2, "b")]
        );
        let many: Vec<AlertEntry> = (0..ALERT_LOG_MAX).map(|i| entry(&i.to_string())).collect();
        store.append_alerts(&many).expect("append many");
        let tree = store.tree(ALERT_LOG_TREE).expect("tree");
        assert_eq!(tree.len() as u64, ALERT_LOG_MAX);
        let last = store.recent_alerts(2).expect("read");
        assert_eq!(last[1].seq, ALERT_LOG_MAX + 2);
        assert_eq!(last[1].code, (ALERT_LOG_MAX - 1).to_string());
        assert_eq!(last[0].seq, ALERT_LOG_MAX + 1);
        // The two first entries were dropped.
        let oldest = store.recent_alerts(usize::MAX).expect("read all");
        assert_eq!(oldest[0].seq, 3);
    }
}
