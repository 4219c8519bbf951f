//! A SQLite data source (rusqlite). The database is opened with `SQLITE_OPEN_READ_ONLY`, then
//! `PRAGMA query_only` and no ATTACH; a template that is not a read-only statement is refused
//! before it runs. The user's query is bound as `$1`, the row count as `$2`; a progress handler
//! interrupts a statement past the source's timeout (SQLite has no statement timeout of its
//! own), and the busy timeout bounds waiting for a writer's lock.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use moed_plugins::{DataSource, Document, SourceError};
use rusqlite::limits::Limit;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, ErrorCode, OpenFlags};

use super::limits::{Limits, column_positions, transform_query};
use crate::config::QueryTransform;

/// Milliseconds since the first use, for the progress handler's deadline.
fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

struct Conn {
    conn: Connection,
    /// When the running statement must stop (`now_ms`), `u64::MAX` between calls.
    deadline: Arc<AtomicU64>,
}

pub struct SqliteSource {
    label: String,
    path: PathBuf,
    template: String,
    transform: QueryTransform,
    limits: Limits,
    max_connections: usize,
    idle: Mutex<(Vec<Conn>, usize)>,
    freed: Condvar,
}

impl SqliteSource {
    /// Nothing is opened until the first call.
    pub fn new(
        label: &str,
        path: &Path,
        template: &str,
        transform: QueryTransform,
        limits: Limits,
        max_connections: usize,
    ) -> SqliteSource {
        SqliteSource {
            label: label.to_string(),
            path: path.to_path_buf(),
            template: template.to_string(),
            transform,
            limits,
            max_connections: max_connections.max(1),
            idle: Mutex::new((Vec::new(), 0)),
            freed: Condvar::new(),
        }
    }

    fn timeout(&self) -> Duration {
        self.limits.timeout.unwrap_or(Duration::from_secs(2))
    }

    fn open(&self) -> Result<Conn, SourceError> {
        let unavailable = |e: rusqlite::Error| {
            SourceError::Unavailable(format!(
                "data source '{}': cannot open {} read-only: {e}",
                self.label,
                self.path.display()
            ))
        };
        let mut conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(unavailable)?;
        conn.pragma_update(None, "query_only", true)
            .map_err(unavailable)?;
        conn.pragma_update(None, "trusted_schema", false)
            .map_err(unavailable)?;
        conn.set_limit(Limit::SQLITE_LIMIT_ATTACHED, 0)
            .map_err(unavailable)?;
        conn.busy_timeout(self.timeout()).map_err(unavailable)?;
        let deadline = Arc::new(AtomicU64::new(u64::MAX));
        let d = deadline.clone();
        conn.progress_handler(1000, Some(move || now_ms() > d.load(Ordering::Relaxed)))
            .map_err(unavailable)?;
        Ok(Conn { conn, deadline })
    }

    /// An idle connection or a new one, waiting while `max_connections` are in use.
    fn take(&self) -> Result<Conn, SourceError> {
        let wait_until = Instant::now() + self.timeout();
        let mut guard = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(c) = guard.0.pop() {
                guard.1 += 1;
                return Ok(c);
            }
            if guard.1 < self.max_connections {
                guard.1 += 1;
                drop(guard);
                return self.open().inspect_err(|_| self.release(None));
            }
            let left = wait_until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(SourceError::Unavailable(format!(
                    "data source '{}': all {} connections stayed busy for {} ms",
                    self.label,
                    self.max_connections,
                    self.timeout().as_millis()
                )));
            }
            guard = self
                .freed
                .wait_timeout(guard, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Returns a connection to the pool (`None`: it was dropped).
    fn release(&self, conn: Option<Conn>) {
        let mut guard = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        guard.1 = guard.1.saturating_sub(1);
        if let Some(c) = conn {
            guard.0.push(c);
        }
        self.freed.notify_one();
    }

    /// Opens the database and prepares the template: `Ok` when the source can answer.
    pub fn check(&self) -> Result<(), SourceError> {
        let conn = self.take()?;
        let r = self.prepare_checked(&conn.conn).map(|_| ());
        self.release(Some(conn));
        r
    }

    fn template_error(&self, message: String) -> SourceError {
        SourceError::InvalidQuery(format!(
            "the template of data source '{}' (knowledge.sources.{}.template): {message}",
            self.label, self.label
        ))
    }

    /// The prepared template with the index of `$1`, `$2` and of the four result columns.
    fn prepare_checked<'c>(
        &self,
        conn: &'c Connection,
    ) -> Result<(rusqlite::CachedStatement<'c>, [usize; 2], [usize; 4]), SourceError> {
        let stmt = conn
            .prepare_cached(&self.template)
            .map_err(|e| self.prepare_error(e))?;
        if !stmt.readonly() {
            return Err(self.template_error(
                "it is not a read-only statement; a data source only answers SELECT queries".into(),
            ));
        }
        let index = |name: &str| -> Result<usize, SourceError> {
            stmt.parameter_index(name)
                .map_err(|e| self.error(e))?
                .ok_or_else(|| self.template_error(format!("it does not use {name}")))
        };
        let params = [index("$1")?, index("$2")?];
        if stmt.parameter_count() != 2 {
            return Err(self.template_error(format!(
                "it has {} parameters; it must use exactly $1 (the query) and $2 (the limit)",
                stmt.parameter_count()
            )));
        }
        let names: Vec<String> = stmt.column_names().map(str::to_string).collect();
        let columns = column_positions(&self.label, &names)?;
        Ok((stmt, params, columns))
    }

    fn query(&self, c: &Conn, query: &str, rows: usize) -> Result<Vec<Document>, SourceError> {
        let (mut stmt, params, columns) = self.prepare_checked(&c.conn)?;
        stmt.raw_bind_parameter(params[0], query)
            .map_err(|e| self.error(e))?;
        stmt.raw_bind_parameter(params[1], rows as i64)
            .map_err(|e| self.error(e))?;
        c.deadline.store(
            now_ms() + self.timeout().as_millis() as u64,
            Ordering::Relaxed,
        );
        let mut out = Vec::new();
        let mut result = stmt.raw_query();
        let read = loop {
            if out.len() >= rows {
                break Ok(());
            }
            match result.next() {
                Ok(Some(row)) => match self.document(row, &columns) {
                    Ok(Some(d)) => out.push(d),
                    Ok(None) => {}
                    Err(e) => break Err(e),
                },
                Ok(None) => break Ok(()),
                Err(e) => break Err(self.error(e)),
            }
        };
        drop(result);
        c.deadline.store(u64::MAX, Ordering::Relaxed);
        read.map(|()| out)
    }

    fn document(
        &self,
        row: &rusqlite::Row<'_>,
        c: &[usize; 4],
    ) -> Result<Option<Document>, SourceError> {
        let value = |i: usize| row.get_ref(i).map_err(|e| self.error(e));
        let Some(id) = text(value(c[0])?) else {
            return Ok(None);
        };
        let source = text(value(c[1])?).unwrap_or_else(|| self.label.clone());
        let body = text(value(c[2])?).unwrap_or_default();
        let score = match value(c[3])? {
            ValueRef::Integer(i) => i as f64,
            ValueRef::Real(r) => r,
            ValueRef::Null => 0.0,
            other => {
                return Err(self.template_error(format!(
                    "column 'score' has a {} value; it must be a number",
                    other.data_type()
                )));
            }
        };
        Ok(Some(Document {
            id,
            source,
            text: body,
            score: if score.is_finite() { score as f32 } else { 0.0 },
        }))
    }

    fn error(&self, e: rusqlite::Error) -> SourceError {
        let label = &self.label;
        match e.sqlite_error_code() {
            Some(ErrorCode::OperationInterrupted) => SourceError::Unavailable(format!(
                "data source '{label}': the query was stopped by its statement timeout of {} ms \
                 (knowledge.sources.{label}.timeout_ms)",
                self.timeout().as_millis()
            )),
            Some(ErrorCode::ReadOnly) => SourceError::InvalidQuery(format!(
                "data source '{label}': the template tried to write to a database opened read-only ({e})"
            )),
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
                SourceError::Unavailable(format!("data source '{label}' is busy: {e}"))
            }
            Some(
                ErrorCode::CannotOpen
                | ErrorCode::NotADatabase
                | ErrorCode::DatabaseCorrupt
                | ErrorCode::SystemIoFailure
                | ErrorCode::OutOfMemory
                | ErrorCode::PermissionDenied,
            ) => SourceError::Unavailable(format!("data source '{label}' is unavailable: {e}")),
            _ => SourceError::InvalidQuery(format!("data source '{label}' refused the query: {e}")),
        }
    }

    /// As [`Self::error`], but a statement SQLite refuses to compile is the template's fault.
    fn prepare_error(&self, e: rusqlite::Error) -> SourceError {
        match self.error(e) {
            SourceError::InvalidQuery(m) => self.template_error(m),
            other => other,
        }
    }
}

fn text(v: ValueRef<'_>) -> Option<String> {
    match v {
        ValueRef::Null => None,
        ValueRef::Integer(i) => Some(i.to_string()),
        ValueRef::Real(r) => Some(r.to_string()),
        ValueRef::Text(t) | ValueRef::Blob(t) => Some(String::from_utf8_lossy(t).into_owned()),
    }
}

impl DataSource for SqliteSource {
    fn search(&self, query: &str, limit: usize) -> Result<Vec<Document>, SourceError> {
        let rows = self.limits.rows(limit);
        if rows == 0 {
            return Ok(Vec::new());
        }
        let query = transform_query(self.transform, query, "OR")?;
        let conn = self.take()?;
        let result = self.query(&conn, &query, rows);
        // A connection whose statement failed is still sound (SQLite resets the statement).
        self.release(Some(conn));
        Ok(self.limits.cap(result?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_itself_refuses_writes_and_attach() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.db");
        Connection::open(&path)
            .and_then(|c| c.execute_batch("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1);"))
            .expect("create");
        let limits = Limits {
            timeout: Some(Duration::from_millis(500)),
            max_rows: 5,
            max_bytes: 1 << 10,
        };
        let source = SqliteSource::new(
            "t",
            &path,
            "SELECT $1 AS id, '' AS source, '' AS text, $2 AS score",
            QueryTransform::AsIs,
            limits,
            1,
        );
        let c = source.take().expect("open");
        // Even with query_only switched off, the read-only open refuses the write.
        let e = c
            .conn
            .execute_batch("PRAGMA query_only = 0; INSERT INTO t VALUES (2);")
            .unwrap_err();
        assert_eq!(e.sqlite_error_code(), Some(ErrorCode::ReadOnly), "{e}");
        let other = dir.path().join("other.db").display().to_string();
        let e = c
            .conn
            .execute_batch(&format!("ATTACH DATABASE '{other}' AS o"))
            .unwrap_err();
        assert!(e.to_string().contains("too many attached databases"), "{e}");
        assert!(!dir.path().join("other.db").exists());
        source.release(Some(c));
        let count: i64 = Connection::open(&path)
            .and_then(|c| c.query_row("SELECT count(*) FROM t", [], |r| r.get(0)))
            .expect("count");
        assert_eq!(count, 1);
    }
}
