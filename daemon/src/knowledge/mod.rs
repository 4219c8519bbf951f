//! Enterprise knowledge: the data sources retrieval plugins search by label. PostgreSQL and
//! SQLite databases answer through query templates the administrator writes (read-only, bound
//! parameters, statement timeout, row and byte limits); the embedded document store holds
//! documents added over D-Bus. [`Knowledge`] builds them from `[knowledge]`, registers them in
//! the plugin host's `Sources` and serves the `org.moed.Moed1.Knowledge` interface's needs.

pub mod bench;
pub mod embedded;
mod error;
mod limits;
mod merge;
mod postgres;
mod secrets;
mod sqlite;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use moed_plugins::{DataSource, Document, SourceError, Sources};

pub use embedded::{Added, DocRecord, EmbeddedStore};
pub use error::KnowledgeError;
pub use limits::{COLUMNS, Limits};
pub use merge::merge;
pub use postgres::PostgresSource;
pub use secrets::{Secrets, check_private};
pub use sqlite::SqliteSource;

use crate::config::{KnowledgeConfig, SourceConfig, SourceSpec};
use crate::state::StateStore;

/// One configured source.
#[derive(Clone)]
pub enum Source {
    Embedded(Arc<EmbeddedStore>),
    Postgres(Arc<PostgresSource>),
    Sqlite(Arc<SqliteSource>),
}

impl Source {
    pub fn kind(&self) -> &'static str {
        match self {
            Source::Embedded(_) => "embedded",
            Source::Postgres(_) => "postgres",
            Source::Sqlite(_) => "sqlite",
        }
    }

    pub fn data_source(&self) -> Arc<dyn DataSource> {
        match self {
            Source::Embedded(s) => s.clone(),
            Source::Postgres(s) => s.clone(),
            Source::Sqlite(s) => s.clone(),
        }
    }

    /// Whether the source answers now (databases connect and prepare their template).
    pub fn check(&self) -> Result<(), SourceError> {
        match self {
            Source::Embedded(_) => Ok(()),
            Source::Postgres(s) => s.check(),
            Source::Sqlite(s) => s.check(),
        }
    }
}

/// A source's state for `ListSources`.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceStatus {
    pub label: String,
    pub kind: &'static str,
    pub error: Option<String>,
    /// Embedded stores: `(documents, chunks)`.
    pub counts: Option<(u64, u64)>,
    pub limits: Limits,
}

/// The configured sources, by label.
pub struct Knowledge {
    state: StateStore,
    registry: Arc<Sources>,
    sources: RwLock<BTreeMap<String, (SourceConfig, Source)>>,
    max_document_bytes: RwLock<u64>,
}

/// Builds one source. Databases do not connect here: a database that is down at start makes its
/// calls fail (`Unavailable`), not the daemon.
fn build(
    label: &str,
    config: &SourceConfig,
    state: &StateStore,
    secrets: &mut Option<Secrets>,
    secrets_file: &std::path::Path,
) -> Result<Source, KnowledgeError> {
    let limits = Limits::from(&config.limits);
    let source_error = |message: String| KnowledgeError::Source {
        label: label.to_string(),
        message,
    };
    Ok(match &config.spec {
        SourceSpec::Embedded {
            chunk_words,
            chunk_overlap,
        } => Source::Embedded(Arc::new(EmbeddedStore::open(
            state,
            label,
            *chunk_words,
            *chunk_overlap,
            limits,
        )?)),
        SourceSpec::Postgres {
            credentials,
            template,
            query,
            max_connections,
        } => {
            if secrets.is_none() {
                *secrets = Some(Secrets::load(secrets_file)?);
            }
            let connection = match secrets {
                Some(s) => s.connection(credentials)?,
                None => return Err(source_error("the secrets file was not read".into())),
            };
            Source::Postgres(Arc::new(
                PostgresSource::new(
                    label,
                    connection,
                    template,
                    *query,
                    limits,
                    *max_connections as usize,
                )
                .map_err(source_error)?,
            ))
        }
        SourceSpec::Sqlite {
            path,
            template,
            query,
            max_connections,
        } => Source::Sqlite(Arc::new(SqliteSource::new(
            label,
            path,
            template,
            *query,
            limits,
            *max_connections as usize,
        ))),
    })
}

impl Knowledge {
    /// Builds every configured source and registers it in `registry`.
    pub fn start(
        config: &KnowledgeConfig,
        state: &StateStore,
        registry: Arc<Sources>,
    ) -> Result<Arc<Knowledge>, KnowledgeError> {
        let k = Knowledge {
            state: state.clone(),
            registry,
            sources: RwLock::new(BTreeMap::new()),
            max_document_bytes: RwLock::new(config.max_document_bytes),
        };
        k.apply(config)?;
        Ok(Arc::new(k))
    }

    /// Applies a new configuration (SIGHUP): sources whose configuration is unchanged are kept
    /// (with their connections), changed ones rebuilt, removed ones unregistered. Nothing changes
    /// when any source cannot be built.
    pub fn apply(&self, config: &KnowledgeConfig) -> Result<(), KnowledgeError> {
        let current = self
            .sources
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut secrets = None;
        let mut next = BTreeMap::new();
        for (label, sc) in &config.sources {
            let source = match current.get(label) {
                Some((old, source)) if old == sc => source.clone(),
                _ => build(label, sc, &self.state, &mut secrets, &config.secrets_file)?,
            };
            next.insert(label.clone(), (sc.clone(), source));
        }
        for label in current.keys().filter(|l| !next.contains_key(*l)) {
            self.registry.remove(label);
        }
        for (label, (_, source)) in &next {
            self.registry.register(label, source.data_source());
        }
        *self.sources.write().unwrap_or_else(|p| p.into_inner()) = next;
        *self
            .max_document_bytes
            .write()
            .unwrap_or_else(|p| p.into_inner()) = config.max_document_bytes;
        Ok(())
    }

    pub fn max_document_bytes(&self) -> u64 {
        *self
            .max_document_bytes
            .read()
            .unwrap_or_else(|p| p.into_inner())
    }

    pub fn labels(&self) -> Vec<String> {
        self.sources
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    pub fn get(&self, label: &str) -> Result<Source, KnowledgeError> {
        self.sources
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(label)
            .map(|(_, s)| s.clone())
            .ok_or_else(|| KnowledgeError::UnknownSource(label.to_string()))
    }

    /// The embedded store `label`, or the only one when `label` is `None`.
    pub fn store(&self, label: Option<&str>) -> Result<Arc<EmbeddedStore>, KnowledgeError> {
        if let Some(label) = label {
            return match self.get(label)? {
                Source::Embedded(s) => Ok(s),
                other => Err(KnowledgeError::NotEmbedded {
                    label: label.to_string(),
                    kind: other.kind(),
                }),
            };
        }
        let stores: Vec<Arc<EmbeddedStore>> = self
            .sources
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter_map(|(_, s)| match s {
                Source::Embedded(e) => Some(e.clone()),
                _ => None,
            })
            .collect();
        match stores.as_slice() {
            [] => Err(KnowledgeError::NoStore),
            [one] => Ok(one.clone()),
            many => Err(KnowledgeError::WhichStore(
                many.iter()
                    .map(|s| s.label().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            )),
        }
    }

    /// Every source and whether it answers (databases are asked; this blocks).
    pub fn status(&self) -> Vec<SourceStatus> {
        let sources = self
            .sources
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        sources
            .into_iter()
            .map(|(label, (config, source))| {
                let (error, counts) = match &source {
                    Source::Embedded(s) => match s.counts() {
                        Ok(c) => (None, Some(c)),
                        Err(e) => (Some(e.to_string()), None),
                    },
                    other => (other.check().err().map(|e| e.to_string()), None),
                };
                SourceStatus {
                    label,
                    kind: source.kind(),
                    error,
                    counts,
                    limits: Limits::from(&config.limits),
                }
            })
            .collect()
    }

    /// Searches one source.
    pub fn search(
        &self,
        label: &str,
        query: &str,
        limit: usize,
    ) -> Result<Vec<Document>, SourceError> {
        let source = self
            .get(label)
            .map_err(|e| SourceError::NotFound(e.to_string()))?;
        source.data_source().search(query, limit)
    }

    /// Searches every source; the hits merged (see [`merge`]), and the sources that failed.
    #[allow(clippy::type_complexity)]
    pub fn search_all(
        &self,
        query: &str,
        limit: usize,
    ) -> (Vec<(String, Document)>, Vec<(String, SourceError)>) {
        let mut found = Vec::new();
        let mut failed = Vec::new();
        for label in self.labels() {
            match self.search(&label, query, limit) {
                Ok(docs) => found.push((label, docs)),
                Err(e) => failed.push((label, e)),
            }
        }
        (merge(found, limit), failed)
    }
}
