//! Enterprise knowledge: the data sources retrieval plugins search by label. PostgreSQL and
//! SQLite databases answer through query templates the administrator writes (read-only, bound
//! parameters, statement timeout, row and byte limits); the embedded document store holds
//! documents added over D-Bus. [`Knowledge`] builds them from `[knowledge]`, registers them in
//! the plugin host's `Sources` and serves the `org.moed.Moed1.Knowledge` interface's needs.

mod concurrent;
pub mod embedded;
mod error;
mod limits;
mod merge;
#[cfg(feature = "postgres")]
mod postgres;
mod secrets;
#[cfg(feature = "sqlite")]
mod sqlite;
mod timing;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use moed_plugins::{DataSource, Document, SourceError, Sources};

pub use concurrent::{CONNECT_MARGIN, max_timeout_ms, safe_document, source_budget, start_ahead};
pub use embedded::{Added, DocRecord, EmbeddedStore};
pub use error::{KnowledgeError, source_error};
pub use limits::{COLUMNS, Limits};
pub use merge::merge;
#[cfg(feature = "postgres")]
pub use postgres::PostgresSource;
pub use secrets::{Secrets, check_private};
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteSource;
pub use timing::{SearchTimes, SourceTime};

use crate::config::{KnowledgeConfig, SourceConfig, SourceSpec};
use crate::state::StateStore;

/// One configured source.
#[derive(Clone)]
pub enum Source {
    Embedded(Arc<EmbeddedStore>),
    #[cfg(feature = "postgres")]
    Postgres(Arc<PostgresSource>),
    #[cfg(feature = "sqlite")]
    Sqlite(Arc<SqliteSource>),
}

impl Source {
    pub fn kind(&self) -> &'static str {
        match self {
            Source::Embedded(_) => "embedded",
            #[cfg(feature = "postgres")]
            Source::Postgres(_) => "postgres",
            #[cfg(feature = "sqlite")]
            Source::Sqlite(_) => "sqlite",
        }
    }

    /// What [`Source::check`] does, for a benchmark's baseline: `None` for the embedded store
    /// (nothing to ask).
    pub fn check_call(&self) -> Option<&'static str> {
        match self {
            Source::Embedded(_) => None,
            #[cfg(feature = "postgres")]
            Source::Postgres(_) => Some("SELECT 1"),
            #[cfg(feature = "sqlite")]
            Source::Sqlite(_) => Some("prepare"),
        }
    }

    pub fn data_source(&self) -> Arc<dyn DataSource> {
        match self {
            Source::Embedded(s) => s.clone(),
            #[cfg(feature = "postgres")]
            Source::Postgres(s) => s.clone(),
            #[cfg(feature = "sqlite")]
            Source::Sqlite(s) => s.clone(),
        }
    }

    /// What the plugin host is given: databases searched ahead and concurrently, rows made safe.
    fn routed(&self, label: &str, times: Arc<SearchTimes>) -> Arc<dyn DataSource> {
        let ahead = !matches!(self, Source::Embedded(_));
        Arc::new(concurrent::Routed::new(label, self.data_source(), ahead).timed(times))
    }

    /// Whether the source answers now (databases connect and prepare their template).
    pub fn check(&self) -> Result<(), SourceError> {
        match self {
            Source::Embedded(_) => Ok(()),
            #[cfg(feature = "postgres")]
            Source::Postgres(s) => s.check(),
            #[cfg(feature = "sqlite")]
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
    sources: RwLock<BTreeMap<String, Entry>>,
    max_document_bytes: RwLock<u64>,
    times: Arc<SearchTimes>,
}

/// One source as built: its configuration, the connection string it was built with (databases
/// with credentials from the secrets file) and the source.
#[derive(Clone)]
struct Entry {
    config: SourceConfig,
    connection: Option<String>,
    source: Source,
}

/// The connection string of a PostgreSQL source from the secrets file (read once per apply).
fn connection_of(
    config: &SourceConfig,
    secrets: &mut Option<Secrets>,
    secrets_file: &std::path::Path,
) -> Result<Option<String>, KnowledgeError> {
    let SourceSpec::Postgres { credentials, .. } = &config.spec else {
        return Ok(None);
    };
    if secrets.is_none() {
        *secrets = Some(Secrets::load(secrets_file)?);
    }
    match secrets {
        Some(s) => Ok(Some(s.connection(credentials)?.to_string())),
        None => Ok(None),
    }
}

/// Builds one source. Databases do not connect here: a database that is down at start makes its
/// calls fail (`Unavailable`), not the daemon.
#[cfg_attr(not(feature = "postgres"), allow(unused_variables))]
fn build(
    label: &str,
    config: &SourceConfig,
    state: &StateStore,
    connection: Option<&str>,
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
        #[cfg(feature = "postgres")]
        SourceSpec::Postgres {
            template,
            query,
            max_connections,
            ..
        } => {
            let Some(connection) = connection else {
                return Err(source_error("the secrets file was not read".into()));
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
        #[cfg(feature = "sqlite")]
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
        #[cfg(not(all(feature = "postgres", feature = "sqlite")))]
        other => {
            return Err(source_error(format!(
                "kind \"{}\" is not built into this moed (cargo feature \"{}\")",
                other.kind(),
                other.kind()
            )));
        }
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
            times: Arc::default(),
        };
        k.apply(config)?;
        Ok(Arc::new(k))
    }

    /// Applies a new configuration (SIGHUP): the secrets file is read again; sources whose
    /// configuration and connection string are unchanged are kept (with their connections),
    /// changed ones rebuilt (so a rotated password takes effect), removed ones unregistered.
    /// Nothing changes when any source cannot be built.
    pub fn apply(&self, config: &KnowledgeConfig) -> Result<(), KnowledgeError> {
        let current = self
            .sources
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut secrets = None;
        let mut next = BTreeMap::new();
        for (label, sc) in &config.sources {
            let connection = connection_of(sc, &mut secrets, &config.secrets_file)?;
            let source = match current.get(label) {
                Some(old) if old.config == *sc && old.connection == connection => {
                    old.source.clone()
                }
                _ => build(label, sc, &self.state, connection.as_deref())?,
            };
            next.insert(
                label.clone(),
                Entry {
                    config: sc.clone(),
                    connection,
                    source,
                },
            );
        }
        for label in current.keys().filter(|l| !next.contains_key(*l)) {
            self.registry.remove(label);
        }
        for (label, entry) in &next {
            self.registry
                .register(label, entry.source.routed(label, self.times.clone()));
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

    /// Searches, failures and time of each source configured now.
    pub fn search_times(&self) -> Vec<(String, SourceTime)> {
        self.times.of(&self.labels())
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
            .map(|e| e.source.clone())
            .ok_or_else(|| KnowledgeError::UnknownSource(label.to_string()))
    }

    /// The embedded store `label`, or the only one when `label` is `None`.
    #[cfg_attr(
        not(any(feature = "postgres", feature = "sqlite")),
        allow(clippy::unnecessary_filter_map)
    )]
    pub fn store(&self, label: Option<&str>) -> Result<Arc<EmbeddedStore>, KnowledgeError> {
        if let Some(label) = label {
            return match self.get(label)? {
                Source::Embedded(s) => Ok(s),
                #[cfg(any(feature = "postgres", feature = "sqlite"))]
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
            .filter_map(|e| match &e.source {
                Source::Embedded(e) => Some(e.clone()),
                #[cfg(any(feature = "postgres", feature = "sqlite"))]
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
            .map(|(label, Entry { config, source, .. })| {
                let (error, counts) = match &source {
                    Source::Embedded(s) => match s.counts() {
                        Ok(c) => (None, Some(c)),
                        Err(e) => (Some(e.to_string()), None),
                    },
                    #[cfg(any(feature = "postgres", feature = "sqlite"))]
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
        let docs = source.data_source().search(query, limit)?;
        Ok(docs.into_iter().map(safe_document).collect())
    }

    /// Searches every source, concurrently (a slow source delays the answer by its own
    /// deadline only); the hits merged (see [`merge`]), and the sources that failed.
    #[allow(clippy::type_complexity)]
    pub fn search_all(
        &self,
        query: &str,
        limit: usize,
    ) -> (Vec<(String, Document)>, Vec<(String, SourceError)>) {
        let labels = self.labels();
        let results: Vec<(String, Result<Vec<Document>, SourceError>)> =
            std::thread::scope(|scope| {
                let running: Vec<_> = labels
                    .into_iter()
                    .map(|label| {
                        let spawned = std::thread::Builder::new()
                            .name("moed-search".into())
                            .spawn_scoped(scope, {
                                let label = label.clone();
                                move || self.search(&label, query, limit)
                            });
                        (label, spawned)
                    })
                    .collect();
                running
                    .into_iter()
                    .map(|(label, spawned)| {
                        // No thread to be had: this source is searched here instead.
                        let r = match spawned {
                            Ok(h) => h.join().unwrap_or_else(|_| {
                                Err(SourceError::Unavailable("the search failed".into()))
                            }),
                            Err(_) => self.search(&label, query, limit),
                        };
                        (label, r)
                    })
                    .collect()
            });
        let mut found = Vec::new();
        let mut failed = Vec::new();
        for (label, r) in results {
            match r {
                Ok(docs) => found.push((label, docs)),
                Err(e) => failed.push((label, e)),
            }
        }
        (merge(found, limit), failed)
    }
}
