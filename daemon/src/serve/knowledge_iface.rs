//! `org.moed.Moed1.Knowledge`: adding documents to the embedded store (as file descriptors the
//! client opened, so the daemon needs no access to the client's files: under `ProtectHome` it
//! has none), removing and listing them, searching any source, listing the sources.
//!
//! Documents come only as descriptors, never as paths the daemon would open itself: a path
//! would let a caller make the daemon read what *it* may read (its own secrets file among them)
//! into a store that every user can search.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use moed_dbus::MoedError;
use moed_dbus::knowledge::{
    DEFAULT_SEARCH_LIMIT, DocumentInfo, IngestSummary, MAX_DOCUMENTS_PER_CALL, SearchHit,
    SearchOptions, SourceInfo, StoreOptions,
};
use moed_dbus::options::OptionDict;
use moed_dbus::wire::{self, ToWire, WireStr, limits, source_failures};
use moed_plugins::SourceError;
use zbus::message::Header;
use zbus::names::BusName;
use zbus::object_server::SignalEmitter;
use zbus::{OwnedFd, interface};

use super::auth::Action;
use super::daemon::Daemon;
use super::error::wire_error;
use crate::knowledge::{Added, Knowledge, KnowledgeError};
use moed_service::client_files::ReadError;
use moed_service::clock::unix_secs;

pub struct KnowledgeIface {
    pub daemon: Arc<Daemon>,
    pub knowledge: Arc<Knowledge>,
    jobs: AtomicU64,
}

impl KnowledgeIface {
    pub fn new(daemon: Arc<Daemon>) -> KnowledgeIface {
        KnowledgeIface {
            knowledge: daemon.service.knowledge.clone(),
            daemon,
            jobs: AtomicU64::new(1),
        }
    }
}

fn knowledge_error(e: KnowledgeError) -> MoedError {
    wire_error(e.into())
}

fn source_error(label: &str, e: SourceError) -> MoedError {
    wire_error(moed_service::knowledge::source_error(label, e))
}

fn joined(what: &str) -> impl Fn(tokio::task::JoinError) -> MoedError + '_ {
    move |e| MoedError::Failed(format!("{what}: {e}"))
}

/// The content behind a client's descriptor: a regular file of at most `max` bytes.
fn read_fd(fd: OwnedFd, max: u64) -> Result<Vec<u8>, String> {
    // The same rules as every client file: a regular file, bounded, read within a deadline (a
    // pipe, or a file on a hung mount, would otherwise keep this thread forever).
    let file = std::fs::File::from(std::os::fd::OwnedFd::from(fd));
    moed_service::client_files::read_bounded(file, max).map_err(|e| match e {
        ReadError::TooLarge { size, max } => format!(
            "is {size} bytes; the store takes documents of at most {max} bytes \
             (knowledge.max_document_bytes)"
        ),
        other => other.to_string(),
    })
}

#[interface(name = "org.moed.Moed1.Knowledge")]
impl KnowledgeIface {
    /// Adds documents to an embedded store: `(name, fd)` pairs, at most 16 per call, each name
    /// (the client's path) ending in .txt, .md, .markdown, .html or .htm. A changed document
    /// replaces its chunks, an unchanged one is left. Emits `IngestProgress` to the caller after
    /// each document; replies once everything is on disk. Needs `org.moed.manage-knowledge`.
    #[zbus(out_args("summary"))]
    async fn add_documents(
        &self,
        documents: Vec<(String, OwnedFd)>,
        options: OptionDict,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<IngestSummary, MoedError> {
        let caller = self.daemon.admin(&header, Action::ManageKnowledge).await?;
        let options = StoreOptions::from_dict(&options)?;
        if documents.len() > MAX_DOCUMENTS_PER_CALL {
            return Err(MoedError::InvalidArgument(format!(
                "{} documents in one call; send at most {MAX_DOCUMENTS_PER_CALL} per call",
                documents.len()
            )));
        }
        let store = self
            .knowledge
            .store(options.source.as_deref())
            .map_err(knowledge_error)?;
        let job = format!("{}", self.jobs.fetch_add(1, Ordering::Relaxed));
        let job_wire = WireStr::new(&job, limits::NAME);
        let emitter = SignalEmitter::new(self.daemon.connection()?, moed_dbus::OBJECT_PATH)?
            .set_destination(
                BusName::try_from(caller.unique_name.clone())
                    .map_err(|e| MoedError::Failed(format!("caller name: {e}")))?,
            )
            .into_owned();
        let max = self.knowledge.max_document_bytes();
        let total = documents.len() as u32;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u32, String)>();
        let mut summary = IngestSummary {
            job: job.clone(),
            label: store.label().to_string(),
            ..IngestSummary::default()
        };
        let work = tokio::task::spawn_blocking(move || {
            let now = unix_secs();
            for (i, (name, fd)) in documents.into_iter().enumerate() {
                let outcome = read_fd(fd, max)
                    .map_err(|m| KnowledgeError::Document {
                        name: name.clone(),
                        message: m,
                    })
                    .and_then(|content| store.add(&name, &content, now));
                match outcome {
                    Ok(Added::New { chunks }) => {
                        summary.added += 1;
                        summary.chunks += chunks;
                    }
                    Ok(Added::Replaced { chunks }) => {
                        summary.replaced += 1;
                        summary.chunks += chunks;
                    }
                    Ok(Added::Unchanged) => summary.unchanged += 1,
                    Err(KnowledgeError::Document { name, message }) => {
                        summary.failed.push((name, message))
                    }
                    Err(e) => return Err(e),
                }
                let _ = tx.send((i as u32 + 1, name));
            }
            store.flush()?;
            Ok(summary)
        });
        while let Some((done, name)) = rx.recv().await {
            let name = WireStr::from_string(name, limits::PATH);
            let _ = Self::ingest_progress(&emitter, &job_wire, done, total, &name).await;
        }
        let summary = work
            .await
            .map_err(joined("adding documents"))?
            .map_err(knowledge_error)?;
        log::info!(
            uid = caller.uid, source = summary.label.as_str();
            "knowledge job {job}: {} added, {} replaced, {} unchanged, {} failed, {} chunks in '{}'",
            summary.added, summary.replaced, summary.unchanged, summary.failed.len(), summary.chunks,
            wire::log_line(&summary.label, limits::NAME)
        );
        Ok(summary.to_wire())
    }

    /// Removes documents from an embedded store by name; returns the names that were stored.
    /// Needs `org.moed.manage-knowledge`.
    #[zbus(out_args("removed"))]
    async fn remove_documents(
        &self,
        names: Vec<String>,
        options: OptionDict,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<Vec<String>, MoedError> {
        self.daemon.admin(&header, Action::ManageKnowledge).await?;
        let options = StoreOptions::from_dict(&options)?;
        let store = self
            .knowledge
            .store(options.source.as_deref())
            .map_err(knowledge_error)?;
        tokio::task::spawn_blocking(move || -> Result<Vec<String>, KnowledgeError> {
            let mut removed = Vec::new();
            for name in names {
                if store.remove(&name)? {
                    removed.push(name);
                }
            }
            store.flush()?;
            Ok(wire::strings(removed, limits::PATH))
        })
        .await
        .map_err(joined("removing documents"))?
        .map_err(knowledge_error)
    }

    /// Searches the source named by option `source`, or every source; returns the hits, best
    /// first, and `(label, why)` for each source that failed. Option `limit`: 1 to 64 (default 5).
    #[zbus(out_args("hits", "failures"))]
    async fn search(
        &self,
        query: String,
        options: OptionDict,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(Vec<SearchHit>, Vec<(String, String)>), MoedError> {
        self.daemon.user(&header).await?;
        let options = SearchOptions::from_dict(&options)?;
        let limit = options.limit.unwrap_or(DEFAULT_SEARCH_LIMIT) as usize;
        let knowledge = self.knowledge.clone();
        tokio::task::spawn_blocking(move || {
            let hit = |label: &str, d: moed_plugins::Document| SearchHit {
                label: label.to_string(),
                id: d.id,
                source: d.source,
                text: d.text,
                score: d.score as f64,
            };
            match options.source {
                Some(label) => {
                    knowledge.get(&label).map_err(knowledge_error)?;
                    let docs = knowledge
                        .search(&label, &query, limit)
                        .map_err(|e| source_error(&label, e))?;
                    Ok((
                        docs.into_iter().map(|d| hit(&label, d).to_wire()).collect(),
                        Vec::new(),
                    ))
                }
                None => {
                    let (hits, failed) = knowledge.search_all(&query, limit);
                    Ok((
                        hits.into_iter()
                            .map(|(l, d)| hit(&l, d).to_wire())
                            .collect(),
                        source_failures(
                            failed
                                .into_iter()
                                .map(|(l, e)| (l, e.to_string()))
                                .collect(),
                        ),
                    ))
                }
            }
        })
        .await
        .map_err(joined("searching"))?
    }

    /// Every configured source: label, kind, whether it answers now, documents and chunks of
    /// embedded stores, the limits in force.
    #[zbus(out_args("sources"))]
    async fn list_sources(
        &self,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<Vec<SourceInfo>, MoedError> {
        self.daemon.user(&header).await?;
        let knowledge = self.knowledge.clone();
        let status = tokio::task::spawn_blocking(move || knowledge.status())
            .await
            .map_err(joined("listing sources"))?;
        Ok(status
            .into_iter()
            .map(|s| SourceInfo {
                label: s.label,
                kind: s.kind.to_string(),
                status: if s.error.is_some() {
                    "unavailable".into()
                } else {
                    "ready".into()
                },
                message: s.error,
                documents: s.counts.map(|c| c.0),
                chunks: s.counts.map(|c| c.1),
                timeout_ms: s.limits.timeout.map(|t| t.as_millis() as u64),
                max_rows: s.limits.max_rows as u32,
                max_bytes: s.limits.max_bytes as u64,
            })
            .collect::<Vec<_>>()
            .to_wire())
    }

    /// The documents of an embedded store (option `source`, default: the only one).
    #[zbus(out_args("documents"))]
    async fn list_documents(
        &self,
        options: OptionDict,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<Vec<DocumentInfo>, MoedError> {
        self.daemon.user(&header).await?;
        let options = StoreOptions::from_dict(&options)?;
        let store = self
            .knowledge
            .store(options.source.as_deref())
            .map_err(knowledge_error)?;
        let label = store.label().to_string();
        let docs = tokio::task::spawn_blocking(move || store.documents())
            .await
            .map_err(joined("listing documents"))?
            .map_err(knowledge_error)?;
        Ok(docs
            .into_iter()
            .map(|d| DocumentInfo {
                label: label.clone(),
                name: d.name,
                format: d.format.as_str().to_string(),
                sha256: d.sha256,
                bytes: d.bytes,
                chunks: d.chunks,
                added: d.added,
            })
            .collect::<Vec<_>>()
            .to_wire())
    }

    /// Progress of an `AddDocuments` call, sent to its caller only: `done` of `total` documents
    /// handled, `name` the last one.
    #[zbus(signal)]
    async fn ingest_progress(
        emitter: &SignalEmitter<'_>,
        job: &WireStr,
        done: u32,
        total: u32,
        name: &WireStr,
    ) -> zbus::Result<()>;
}
