//! Persistence of an embedded store in the daemon's sled state (trees
//! `knowledge/LABEL/documents` and `knowledge/LABEL/chunks`): the only code that reads or writes
//! them. A document's record and its chunks change in one transaction, so a crash leaves the old
//! version or the new one, never a mix.

use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::extract::Format;
use crate::knowledge::KnowledgeError;
use crate::state::StateStore;

/// What is stored about one document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocRecord {
    pub name: String,
    pub format: Format,
    /// SHA-256 of the content as added, hex.
    pub sha256: String,
    pub bytes: u64,
    pub chunks: u32,
    /// Seconds since the Unix epoch.
    pub added: u64,
}

pub struct DocStore {
    label: String,
    state: StateStore,
    docs: sled::Tree,
    chunks: sled::Tree,
}

/// `name NUL number`: a document's chunks sort together, in order.
fn chunk_key(name: &str, number: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(name.len() + 5);
    k.extend_from_slice(name.as_bytes());
    k.push(0);
    k.extend_from_slice(&number.to_be_bytes());
    k
}

impl DocStore {
    pub fn open(state: &StateStore, label: &str) -> Result<DocStore, KnowledgeError> {
        Ok(DocStore {
            label: label.to_string(),
            state: state.clone(),
            docs: state.tree(&format!("knowledge/{label}/documents"))?,
            chunks: state.tree(&format!("knowledge/{label}/chunks"))?,
        })
    }

    fn corrupt(&self, message: String) -> KnowledgeError {
        KnowledgeError::Corrupt {
            label: self.label.clone(),
            message,
        }
    }

    pub fn get(&self, name: &str) -> Result<Option<DocRecord>, KnowledgeError> {
        let Some(bytes) = self.docs.get(name.as_bytes())? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| self.corrupt(format!("record of '{name}' is unreadable: {e}")))
    }

    pub fn list(&self) -> Result<Vec<DocRecord>, KnowledgeError> {
        self.docs
            .iter()
            .values()
            .map(|v| {
                let v = v?;
                serde_json::from_slice(&v)
                    .map_err(|e| self.corrupt(format!("a document record is unreadable: {e}")))
            })
            .collect()
    }

    /// Every stored chunk: `(document, number, text)`, for rebuilding the index.
    pub fn all_chunks(&self) -> Result<Vec<(String, u32, String)>, KnowledgeError> {
        let mut out = Vec::new();
        for kv in self.chunks.iter() {
            let (k, v) = kv?;
            let split = k.len().checked_sub(5).filter(|&i| k[i] == 0);
            let Some(i) = split else {
                return Err(self.corrupt("a chunk key is malformed".into()));
            };
            let name = String::from_utf8(k[..i].to_vec())
                .map_err(|_| self.corrupt("a chunk key is not UTF-8".into()))?;
            let number = u32::from_be_bytes([k[i + 1], k[i + 2], k[i + 3], k[i + 4]]);
            let text = String::from_utf8(v.to_vec())
                .map_err(|_| self.corrupt(format!("chunk {number} of '{name}' is not UTF-8")))?;
            out.push((name, number, text));
        }
        Ok(out)
    }

    pub fn chunk(&self, name: &str, number: u32) -> Result<Option<String>, KnowledgeError> {
        Ok(self
            .chunks
            .get(chunk_key(name, number))?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Stores `record` and its `chunks`, replacing the `old` version's chunks.
    pub fn put(
        &self,
        record: &DocRecord,
        chunks: &[String],
        old: Option<&DocRecord>,
    ) -> Result<(), KnowledgeError> {
        let value = serde_json::to_vec(record)
            .map_err(|e| self.corrupt(format!("cannot encode a record: {e}")))?;
        let old_chunks = old.map_or(0, |o| o.chunks);
        self.transact(|docs, stored| {
            for n in 0..old_chunks {
                stored.remove(chunk_key(&record.name, n))?;
            }
            for (n, text) in chunks.iter().enumerate() {
                stored.insert(chunk_key(&record.name, n as u32), text.as_bytes())?;
            }
            docs.insert(record.name.as_bytes(), value.as_slice())?;
            Ok(())
        })
    }

    /// Removes a document and its chunks.
    pub fn delete(&self, record: &DocRecord) -> Result<(), KnowledgeError> {
        self.transact(|docs, stored| {
            for n in 0..record.chunks {
                stored.remove(chunk_key(&record.name, n))?;
            }
            docs.remove(record.name.as_bytes())?;
            Ok(())
        })
    }

    fn transact(
        &self,
        f: impl Fn(
            &sled::transaction::TransactionalTree,
            &sled::transaction::TransactionalTree,
        ) -> Result<(), ConflictableTransactionError<()>>,
    ) -> Result<(), KnowledgeError> {
        (&self.docs, &self.chunks)
            .transaction(|(docs, chunks)| f(docs, chunks))
            .map_err(|e| match e {
                TransactionError::Storage(e) => KnowledgeError::from(e),
                TransactionError::Abort(()) => self.corrupt("a write was aborted".into()),
            })
    }

    /// Writes everything to disk; called before a change is acknowledged.
    pub fn flush(&self) -> Result<(), KnowledgeError> {
        Ok(self.state.flush()?)
    }
}
