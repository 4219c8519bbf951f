//! The alert audit log: every alert a plugin raised, in order, bounded to [`ALERT_LOG_MAX`]
//! entries, shared fairly between users, flushed to disk before the append returns.
//!
//! Fairness: one request adds at most [`ALERTS_PER_REQUEST`] entries (identical alerts are
//! coalesced with a count, the rest summarized in one entry), and when the log is full the entry
//! that goes is the oldest of the user id holding the most entries. A user flooding the log
//! therefore only ever evicts their own entries once they hold the largest share; nobody can push
//! out another user who holds fewer.

use std::collections::{HashMap, VecDeque};

use moed_wire::{self as wire, limits};
use serde::{Deserialize, Serialize};

use super::{StateError, StateStore, json};

const ALERT_LOG_TREE: &str = "alert_log";

/// Entries kept; past it the largest holder's oldest entry is dropped.
pub const ALERT_LOG_MAX: u64 = 10_000;

/// Entries one append (one request's alerts) may add, a summary entry included.
pub const ALERTS_PER_REQUEST: usize = 32;

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

impl AlertEntry {
    /// Valid, bounded strings ([`moed_wire`]): applied when stored and again when read, so
    /// a record written by an older version cannot carry a NUL or megabytes onto the bus.
    fn sanitize(&mut self) {
        let clip = |s: &mut String, max: usize| {
            if s.len() > max || s.contains('\0') {
                *s = wire::owned(std::mem::take(s), max);
            }
        };
        if let Some(id) = &mut self.request_id {
            clip(id, limits::NAME);
        }
        clip(&mut self.plugin, limits::NAME);
        clip(&mut self.severity, limits::NAME);
        clip(&mut self.code, limits::ALERT_CODE);
        clip(&mut self.message, limits::ALERT_MESSAGE);
    }
}

/// Sequence numbers per user id, oldest first, of the entries in the log: built from the tree on
/// the first append, kept by appends (the only writer), so eviction needs no scan.
#[derive(Debug, Default)]
pub(super) struct AlertIndex {
    loaded: bool,
    by_uid: HashMap<Option<u32>, VecDeque<u64>>,
    total: u64,
}

impl AlertIndex {
    fn load(&mut self, tree: &sled::Tree) -> Result<(), StateError> {
        #[derive(Deserialize)]
        struct UidOnly {
            #[serde(default)]
            uid: Option<u32>,
        }
        self.by_uid.clear();
        self.total = 0;
        for item in tree.iter() {
            let (key, value) = item?;
            // An unreadable record still takes a place; it counts as nobody's.
            let uid = serde_json::from_slice::<UidOnly>(&value)
                .ok()
                .and_then(|u| u.uid);
            self.push(uid, seq_of(&key)?);
        }
        self.loaded = true;
        Ok(())
    }

    fn push(&mut self, uid: Option<u32>, seq: u64) {
        self.by_uid.entry(uid).or_default().push_back(seq);
        self.total += 1;
    }

    /// The oldest entry of the user holding the most (ties: the older entry), removed.
    fn evict(&mut self) -> Option<u64> {
        let uid = *self
            .by_uid
            .iter()
            .filter_map(|(uid, seqs)| Some((uid, seqs.len(), *seqs.front()?)))
            .max_by(|a, b| a.1.cmp(&b.1).then(b.2.cmp(&a.2)))?
            .0;
        let seqs = self.by_uid.get_mut(&uid)?;
        let seq = seqs.pop_front()?;
        if seqs.is_empty() {
            self.by_uid.remove(&uid);
        }
        self.total -= 1;
        Some(seq)
    }
}

/// One request's alerts as they are stored: sanitized, identical ones coalesced with their count,
/// at most [`ALERTS_PER_REQUEST`] with a summary entry for the rest.
fn per_request(entries: &[AlertEntry]) -> Vec<AlertEntry> {
    let mut out: Vec<(AlertEntry, usize)> = Vec::new();
    let mut index: HashMap<(String, String, String, String), usize> = HashMap::new();
    let mut dropped = 0usize;
    for e in entries {
        let mut e = e.clone();
        e.sanitize();
        let key = (
            e.plugin.clone(),
            e.severity.clone(),
            e.code.clone(),
            e.message.clone(),
        );
        if let Some(&i) = index.get(&key) {
            out[i].1 += 1;
        } else if out.len() < ALERTS_PER_REQUEST - 1 {
            index.insert(key, out.len());
            out.push((e, 1));
        } else {
            dropped += 1;
        }
    }
    let summary = out
        .first()
        .filter(|_| dropped > 0)
        .map(|(first, _)| AlertEntry {
            plugin: "moed".into(),
            severity: "warning".into(),
            code: "alert_log.truncated".into(),
            message: format!(
                "{dropped} more alerts of this request were not logged (at most {ALERTS_PER_REQUEST} entries a request)"
            ),
            ..first.clone()
        });
    out.into_iter()
        .map(|(mut e, n)| {
            if n > 1 {
                let suffix = format!(" (repeated {n} times)");
                let room = limits::ALERT_MESSAGE - suffix.len();
                e.message = format!("{}{suffix}", wire::text(&e.message, room));
            }
            e
        })
        .chain(summary)
        .collect()
}

impl StateStore {
    /// Appends one request's alerts (see [`per_request`]), drops what falls past
    /// [`ALERT_LOG_MAX`] (the largest holder's oldest first), and flushes.
    pub fn append_alerts(&self, entries: &[AlertEntry]) -> Result<(), StateError> {
        self.append_alerts_within(entries, ALERT_LOG_MAX)
    }

    fn append_alerts_within(
        &self,
        entries: &[AlertEntry],
        capacity: u64,
    ) -> Result<(), StateError> {
        if entries.is_empty() {
            return Ok(());
        }
        let entries = per_request(entries);
        let tree = self.tree(ALERT_LOG_TREE)?;
        // Sequence numbers follow the last stored key, so they stay contiguous across restarts.
        let mut index = self.alert_log.lock().unwrap_or_else(|p| p.into_inner());
        if !index.loaded {
            index.load(&tree)?;
        }
        let first = match tree.last()? {
            Some((key, _)) => seq_of(&key)? + 1,
            None => 1,
        };
        let mut batch = sled::Batch::default();
        for (seq, mut e) in (first..).zip(entries) {
            e.seq = seq;
            batch.insert(&seq.to_be_bytes(), json(&e));
            index.push(e.uid, seq);
        }
        while index.total > capacity {
            match index.evict() {
                Some(seq) => batch.remove(&seq.to_be_bytes()),
                None => break,
            }
        }
        if let Err(err) = tree.apply_batch(batch) {
            // The index no longer matches the tree; rebuild it on the next append.
            index.loaded = false;
            return Err(err.into());
        }
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
            entry.sanitize();
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
#[path = "alerts_tests.rs"]
mod tests;
