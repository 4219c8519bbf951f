//! A PostgreSQL data source (tokio-postgres). Every call runs the administrator's template in a
//! READ ONLY transaction with `SET LOCAL statement_timeout`, binds the user's query as `$1` and
//! the row count as `$2` (never spliced into the SQL), fetches at most `max_rows` rows through a
//! portal whatever the template does with `$2`, and cuts the result to `max_bytes`. Connections
//! also start with `default_transaction_read_only=on`. The connection string comes from the
//! secrets file and is never shown: errors name the source label.
//!
//! `DataSource::search` is synchronous (plugins call it from their blocking thread), so the
//! async driver runs on a small runtime of its own and the caller waits on a channel, with a
//! deadline, which also makes a hung server an `Unavailable` error rather than a stuck plugin.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use moed_plugins::{DataSource, Document, SourceError};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, NoTls, Row, Statement};

use super::limits::{Limits, column_positions, transform_query};
use crate::config::QueryTransform;

use super::concurrent::{CONNECT_MARGIN, source_budget};

fn runtime() -> Result<&'static tokio::runtime::Runtime, SourceError> {
    static RT: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("moed-postgres")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| SourceError::Unavailable(format!("cannot start the database runtime: {e}")))
}

/// An open connection with the template prepared on it.
struct Pooled {
    client: Client,
    statement: Statement,
    columns: [usize; 4],
    limit_type: Type,
}

struct Inner {
    label: String,
    config: tokio_postgres::Config,
    template: String,
    transform: QueryTransform,
    limits: Limits,
    idle: Mutex<Vec<Pooled>>,
    slots: tokio::sync::Semaphore,
}

pub struct PostgresSource {
    inner: Arc<Inner>,
}

impl PostgresSource {
    /// `connection` is a libpq connection string or URL (from the secrets file). Nothing connects
    /// until the first call.
    pub fn new(
        label: &str,
        connection: &str,
        template: &str,
        transform: QueryTransform,
        limits: Limits,
        max_connections: usize,
    ) -> Result<PostgresSource, String> {
        // The parser's message never contains the password, but may quote other parts; say only
        // where the string lives.
        let mut config: tokio_postgres::Config = connection.parse().map_err(|_| {
            "its connection string in the secrets file does not parse (libpq key=value pairs or \
             a postgresql:// URL)"
                .to_string()
        })?;
        config
            .connect_timeout(Duration::from_millis(limits.timeout_ms()).min(source_budget()))
            .application_name("moed")
            .options("-c default_transaction_read_only=on");
        Ok(PostgresSource {
            inner: Arc::new(Inner {
                label: label.to_string(),
                config,
                template: template.to_string(),
                transform,
                limits,
                idle: Mutex::new(Vec::new()),
                slots: tokio::sync::Semaphore::new(max_connections.max(1)),
            }),
        })
    }

    /// The statement timeout plus time to connect, never more than a source's share of the
    /// retrieval plugin's time limit (a hung server must fail the source, not the plugin).
    fn deadline(&self) -> Duration {
        (Duration::from_millis(self.inner.limits.timeout_ms()) + CONNECT_MARGIN)
            .min(source_budget())
    }

    /// Runs `f` on the driver's runtime and waits for it at most [`Self::deadline`].
    fn block<T: Send + 'static>(
        &self,
        f: impl Future<Output = Result<T, SourceError>> + Send + 'static,
    ) -> Result<T, SourceError> {
        let rt = runtime()?;
        let deadline = self.deadline();
        let (tx, rx) = std::sync::mpsc::channel();
        rt.spawn(async move {
            let r = match tokio::time::timeout(deadline, f).await {
                Ok(r) => r,
                Err(_) => Err(SourceError::Unavailable(String::new())),
            };
            let _ = tx.send(r);
        });
        let late = || {
            SourceError::Unavailable(format!(
                "data source '{}' did not answer within {} ms; the server may be down or overloaded",
                self.inner.label,
                deadline.as_millis()
            ))
        };
        match rx.recv_timeout(deadline + Duration::from_millis(200)) {
            Ok(Err(SourceError::Unavailable(m))) if m.is_empty() => Err(late()),
            Ok(r) => r,
            Err(_) => Err(late()),
        }
    }

    /// Connects (or reuses a connection) and runs `SELECT 1`: `Ok` when the source answers.
    pub fn check(&self) -> Result<(), SourceError> {
        let inner = self.inner.clone();
        self.block(async move {
            let _slot = inner.slot().await?;
            let conn = inner.take().await?;
            conn.client
                .simple_query("SELECT 1")
                .await
                .map_err(|e| inner.error(e))?;
            inner.give_back(conn);
            Ok(())
        })
    }
}

impl DataSource for PostgresSource {
    fn search(&self, query: &str, limit: usize) -> Result<Vec<Document>, SourceError> {
        let rows = self.inner.limits.rows(limit);
        if rows == 0 {
            return Ok(Vec::new());
        }
        let query = transform_query(self.inner.transform, query, "or")?;
        let inner = self.inner.clone();
        let docs = self.block(async move {
            let _slot = inner.slot().await?;
            let mut conn = inner.take().await?;
            let docs = inner.run(&mut conn, &query, rows).await?;
            inner.give_back(conn);
            Ok(docs)
        })?;
        Ok(self.inner.limits.cap(docs))
    }
}

impl Inner {
    async fn slot(&self) -> Result<tokio::sync::SemaphorePermit<'_>, SourceError> {
        self.slots.acquire().await.map_err(|_| {
            SourceError::Unavailable(format!("data source '{}' is closed", self.label))
        })
    }

    /// An idle connection, or a new one with the template prepared and checked.
    async fn take(&self) -> Result<Pooled, SourceError> {
        loop {
            let conn = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            match conn {
                Some(c) if !c.client.is_closed() => return Ok(c),
                Some(_) => continue,
                None => break,
            }
        }
        let (client, connection) = self
            .config
            .connect(NoTls)
            .await
            .map_err(|e| self.error(e))?;
        let label = self.label.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                log::debug!("data source '{label}': connection ended: {e}");
            }
        });
        let statement = client
            .prepare(&self.template)
            .await
            .map_err(|e| match self.error(e) {
                SourceError::InvalidQuery(m) => self.template_error(m),
                other => other,
            })?;
        let (columns, limit_type) = self.check_statement(&statement)?;
        Ok(Pooled {
            client,
            statement,
            columns,
            limit_type,
        })
    }

    fn give_back(&self, conn: Pooled) {
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(conn);
    }

    fn template_error(&self, message: String) -> SourceError {
        SourceError::InvalidQuery(format!(
            "the template of data source '{}' (knowledge.sources.{}.template): {message}",
            self.label, self.label
        ))
    }

    /// The template's parameters (`$1` text, `$2` an integer) and result columns.
    fn check_statement(&self, s: &Statement) -> Result<([usize; 4], Type), SourceError> {
        let params = s.params();
        if params.len() != 2 {
            return Err(self.template_error(format!(
                "it has {} parameters; it must use exactly $1 (the query) and $2 (the limit)",
                params.len()
            )));
        }
        if ![Type::TEXT, Type::VARCHAR, Type::BPCHAR, Type::NAME].contains(&params[0]) {
            return Err(self.template_error(format!(
                "$1 is used as {}; it is the user's query text",
                params[0]
            )));
        }
        if ![Type::INT2, Type::INT4, Type::INT8].contains(&params[1]) {
            return Err(self.template_error(format!(
                "$2 is used as {}; it is the number of rows (LIMIT $2)",
                params[1]
            )));
        }
        let names: Vec<String> = s.columns().iter().map(|c| c.name().to_string()).collect();
        let columns = column_positions(&self.label, &names)?;
        let texty = [
            Type::TEXT,
            Type::VARCHAR,
            Type::BPCHAR,
            Type::NAME,
            Type::INT2,
            Type::INT4,
            Type::INT8,
        ];
        for (i, want) in super::limits::COLUMNS.iter().enumerate() {
            let ty = s.columns()[columns[i]].type_();
            let ok = if *want == "score" {
                [
                    Type::FLOAT4,
                    Type::FLOAT8,
                    Type::INT2,
                    Type::INT4,
                    Type::INT8,
                ]
                .contains(ty)
            } else {
                texty.contains(ty)
            };
            if !ok {
                let cast = if *want == "score" { "float8" } else { "text" };
                return Err(self.template_error(format!(
                    "column '{want}' has type {ty}; cast it ({want}::{cast})"
                )));
            }
        }
        Ok((columns, params[1].clone()))
    }

    async fn run(
        &self,
        conn: &mut Pooled,
        query: &str,
        rows: usize,
    ) -> Result<Vec<Document>, SourceError> {
        let err = |e| self.error(e);
        let Pooled {
            client,
            statement,
            columns,
            limit_type,
        } = conn;
        let tx = client
            .build_transaction()
            .read_only(true)
            .start()
            .await
            .map_err(err)?;
        // The timeout is a number from the configuration, not client input.
        tx.batch_execute(&format!(
            "SET LOCAL statement_timeout = {}",
            self.limits.timeout_ms()
        ))
        .await
        .map_err(err)?;
        let (l2, l4, l8) = (rows as i16, rows as i32, rows as i64);
        let limit: &(dyn ToSql + Sync) = match *limit_type {
            Type::INT2 => &l2,
            Type::INT4 => &l4,
            _ => &l8,
        };
        let query = query.to_string();
        // A portal is fetched with a row count, so a template that ignores $2 still returns no
        // more than `rows` rows.
        let portal = tx.bind(&*statement, &[&query, limit]).await.map_err(err)?;
        let fetched = tx.query_portal(&portal, rows as i32).await.map_err(err)?;
        tx.rollback().await.map_err(err)?;
        fetched
            .iter()
            .filter_map(|row| self.document(row, columns).transpose())
            .collect()
    }

    /// One row as a document; `None` for a row without an id.
    fn document(&self, row: &Row, c: &[usize; 4]) -> Result<Option<Document>, SourceError> {
        let Some(id) = text_of(row, c[0]).map_err(|e| self.error(e))? else {
            return Ok(None);
        };
        let source = text_of(row, c[1])
            .map_err(|e| self.error(e))?
            .unwrap_or_else(|| self.label.clone());
        let text = text_of(row, c[2])
            .map_err(|e| self.error(e))?
            .unwrap_or_default();
        let score = score_of(row, c[3])
            .map_err(|e| self.error(e))?
            .unwrap_or(0.0);
        Ok(Some(Document {
            id,
            source,
            text,
            score: if score.is_finite() { score as f32 } else { 0.0 },
        }))
    }

    fn error(&self, e: tokio_postgres::Error) -> SourceError {
        let label = &self.label;
        if let Some(db) = e.as_db_error() {
            let code = db.code();
            let msg = db.message();
            if *code == SqlState::QUERY_CANCELED {
                return SourceError::Unavailable(format!(
                    "data source '{label}': the query was cancelled by its statement timeout of {} ms \
                     (knowledge.sources.{label}.timeout_ms)",
                    self.limits.timeout_ms()
                ));
            }
            if *code == SqlState::READ_ONLY_SQL_TRANSACTION {
                return SourceError::InvalidQuery(format!(
                    "data source '{label}': the template tried to write, which the read-only \
                     transaction refused ({msg})"
                ));
            }
            if *code == SqlState::INSUFFICIENT_PRIVILEGE {
                return SourceError::InvalidQuery(format!(
                    "data source '{label}': {msg}; grant the source's role SELECT on what the \
                     template reads"
                ));
            }
            let class = &code.code()[..2];
            return match class {
                // Connection, resources, operator intervention, system errors: the server's state.
                "08" | "53" | "57" | "58" | "28" => {
                    SourceError::Unavailable(format!("data source '{label}' is unavailable: {msg}"))
                }
                _ => SourceError::InvalidQuery(format!(
                    "data source '{label}' refused the query: {msg}"
                )),
            };
        }
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            message.push_str(&format!(": {s}"));
            source = s.source();
        }
        SourceError::Unavailable(format!("data source '{label}' is unavailable: {message}"))
    }
}

fn text_of(row: &Row, i: usize) -> Result<Option<String>, tokio_postgres::Error> {
    let ty = row.columns()[i].type_().clone();
    Ok(match ty {
        Type::INT2 => row.try_get::<_, Option<i16>>(i)?.map(|v| v.to_string()),
        Type::INT4 => row.try_get::<_, Option<i32>>(i)?.map(|v| v.to_string()),
        Type::INT8 => row.try_get::<_, Option<i64>>(i)?.map(|v| v.to_string()),
        _ => row.try_get::<_, Option<String>>(i)?,
    })
}

fn score_of(row: &Row, i: usize) -> Result<Option<f64>, tokio_postgres::Error> {
    let ty = row.columns()[i].type_().clone();
    Ok(match ty {
        Type::FLOAT4 => row.try_get::<_, Option<f32>>(i)?.map(f64::from),
        Type::INT2 => row.try_get::<_, Option<i16>>(i)?.map(f64::from),
        Type::INT4 => row.try_get::<_, Option<i32>>(i)?.map(f64::from),
        Type::INT8 => row.try_get::<_, Option<i64>>(i)?.map(|v| v as f64),
        _ => row.try_get::<_, Option<f64>>(i)?,
    })
}
