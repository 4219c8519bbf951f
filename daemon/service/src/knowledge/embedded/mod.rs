//! The embedded document store: documents (plain text, Markdown, HTML) added by name, cut into
//! overlapping chunks, stored in the daemon's sled state and searched with BM25 (SQLite FTS5, or
//! an in-memory index in builds without SQLite; `ranking.rs` compares the two). Re-adding a name
//! with changed content replaces its chunks; the same content is left as it is (documents are
//! keyed by name and SHA-256 of the content).

mod chunk;
mod chunk_index;
#[cfg(test)]
mod corpus;
mod extract;
#[cfg(feature = "sqlite")]
mod fts;
#[cfg(any(test, not(feature = "sqlite")))]
mod index;
#[cfg(test)]
mod index_memory;
#[cfg(all(test, feature = "sqlite"))]
mod ranking;
mod store;

use std::sync::{Mutex, MutexGuard};

use moed_plugins::{DataSource, Document, SourceError};
use sha2::{Digest, Sha256};

use chunk_index::ChunkIndex;
pub use extract::{EXTENSIONS, Format};
/// The chunk index of this build.
#[cfg(feature = "sqlite")]
type Indexer = fts::FtsIndex;
#[cfg(not(feature = "sqlite"))]
type Indexer = index::Index;
pub use store::DocRecord;
use store::DocStore;

use super::KnowledgeError;
use super::limits::Limits;
use crate::state::StateStore;

/// Longest document name (the client's path) accepted.
pub const MAX_NAME_BYTES: usize = 4096;

/// What adding one document did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    New { chunks: u32 },
    Replaced { chunks: u32 },
    Unchanged,
}

pub struct EmbeddedStore {
    label: String,
    store: DocStore,
    /// Searches take it too: an SQLite connection serves one call at a time.
    index: Mutex<Indexer>,
    chunk_words: usize,
    chunk_overlap: usize,
    limits: Limits,
    /// One change at a time, so the index and the trees change in the same order.
    writer: Mutex<()>,
}

impl EmbeddedStore {
    /// Opens the store `label` in the state and rebuilds its index from the stored chunks (so a
    /// store written by any version is indexed as this one indexes).
    pub fn open(
        state: &StateStore,
        label: &str,
        chunk_words: u32,
        chunk_overlap: u32,
        limits: Limits,
    ) -> Result<EmbeddedStore, KnowledgeError> {
        let store = DocStore::open(state, label)?;
        let failed = |e| index_error(label, e);
        let mut index = Indexer::open().map_err(failed)?;
        // Stored in key order: a document's chunks together, by number.
        let mut chunks = store.all_chunks()?.into_iter().peekable();
        while let Some((name, _, text)) = chunks.next() {
            let mut texts = vec![text];
            while let Some((_, _, text)) = chunks.next_if(|(next, _, _)| *next == name) {
                texts.push(text);
            }
            index.replace(&name, &texts, || Ok(()), failed)?;
        }
        Ok(EmbeddedStore {
            label: label.to_string(),
            store,
            index: Mutex::new(index),
            chunk_words: chunk_words as usize,
            chunk_overlap: chunk_overlap as usize,
            limits,
            writer: Mutex::new(()),
        })
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    fn index(&self) -> MutexGuard<'_, Indexer> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn document_error(name: &str, message: impl Into<String>) -> KnowledgeError {
        KnowledgeError::Document {
            name: name.to_string(),
            message: message.into(),
        }
    }

    /// Adds or replaces the document `name` (its format from the extension). Not yet flushed:
    /// call [`EmbeddedStore::flush`] before acknowledging.
    pub fn add(&self, name: &str, content: &[u8], now: u64) -> Result<Added, KnowledgeError> {
        if name.is_empty() || name.len() > MAX_NAME_BYTES || name.contains('\0') {
            return Err(Self::document_error(
                name,
                format!("a name must be 1 to {MAX_NAME_BYTES} bytes without NUL"),
            ));
        }
        let format = Format::of(name).ok_or_else(|| {
            Self::document_error(
                name,
                format!("unsupported type; the store takes {EXTENSIONS}"),
            )
        })?;
        let sha256 = format!("{:x}", Sha256::digest(content));
        let _writing = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let old = self.store.get(name)?;
        if old.as_ref().is_some_and(|o| o.sha256 == sha256) {
            return Ok(Added::Unchanged);
        }
        let text = extract::extract(format, content).map_err(|m| Self::document_error(name, m))?;
        // Stored text holds no NUL, so nothing read back can break a bus message (the size is
        // bounded before: knowledge.max_document_bytes).
        let text = moed_wire::owned(text, usize::MAX);
        let chunks = chunk::chunks(&text, self.chunk_words, self.chunk_overlap);
        if chunks.is_empty() {
            return Err(Self::document_error(name, "has no text"));
        }
        let record = DocRecord {
            name: name.to_string(),
            format,
            sha256,
            bytes: content.len() as u64,
            chunks: chunks.len() as u32,
            added: now,
        };
        self.index().replace(
            name,
            &chunks,
            || self.store.put(&record, &chunks, old.as_ref()),
            |e| index_error(&self.label, e),
        )?;
        let count = record.chunks;
        Ok(match old {
            Some(_) => Added::Replaced { chunks: count },
            None => Added::New { chunks: count },
        })
    }

    /// Removes `name`; false when it is not stored. Not yet flushed.
    pub fn remove(&self, name: &str) -> Result<bool, KnowledgeError> {
        let _writing = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let Some(record) = self.store.get(name)? else {
            return Ok(false);
        };
        self.index().replace(
            name,
            &[],
            || self.store.delete(&record),
            |e| index_error(&self.label, e),
        )?;
        Ok(true)
    }

    pub fn flush(&self) -> Result<(), KnowledgeError> {
        self.store.flush()
    }

    /// The stored records; names made safe for the bus (records of older versions were not
    /// checked for NUL).
    pub fn documents(&self) -> Result<Vec<DocRecord>, KnowledgeError> {
        let mut records = self.store.list()?;
        for r in &mut records {
            r.name = moed_wire::owned(std::mem::take(&mut r.name), MAX_NAME_BYTES);
        }
        Ok(records)
    }

    /// `(documents, chunks)` stored.
    pub fn counts(&self) -> Result<(u64, u64), KnowledgeError> {
        // Named: the in-memory index has a count of its own for its tests.
        let chunks = ChunkIndex::chunk_count(&*self.index()) as u64;
        Ok((self.store.list()?.len() as u64, chunks))
    }
}

fn index_error(label: &str, e: <Indexer as ChunkIndex>::Error) -> KnowledgeError {
    KnowledgeError::Corrupt {
        label: label.to_string(),
        message: format!("index: {e}"),
    }
}

impl DataSource for EmbeddedStore {
    fn search(&self, query: &str, limit: usize) -> Result<Vec<Document>, SourceError> {
        if chunk::terms(query).next().is_none() {
            return Err(SourceError::InvalidQuery("the query has no words".into()));
        }
        let hits = self
            .index()
            .search(query, self.limits.rows(limit))
            .map_err(|e| SourceError::Unavailable(index_error(&self.label, e).to_string()))?;
        let mut docs = Vec::with_capacity(hits.len());
        for (score, name, number) in hits {
            let text = self
                .store
                .chunk(&name, number)
                .map_err(|e| SourceError::Unavailable(e.to_string()))?
                // Removed between the index read and now.
                .unwrap_or_default();
            // Chunks stored by older versions may hold NUL: made safe as they are read.
            docs.push(super::safe_document(Document {
                id: format!("{name}#{number}"),
                source: name,
                text,
                score,
            }));
        }
        Ok(self.limits.cap(docs))
    }
}

#[cfg(test)]
mod tests;
