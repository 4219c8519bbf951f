//! An embedded store's chunk index in SQLite FTS5 (the bundled SQLite, ranked by its `bm25()`),
//! rebuilt from the stored chunks at open and kept in step with every change. It lives in a
//! private temporary database (SQLite unlinks the file as it opens it) with a bounded page cache,
//! so its memory stays the same however much text is stored; the chunk text itself stays in sled
//! only (the FTS5 table is contentless). `ranking.rs` compares it with the in-memory BM25 index.

use rusqlite::{Connection, params};

use super::chunk::terms;
use super::chunk_index::{ChunkIndex, Hit};

/// Page cache of one store's index, KiB.
const CACHE_KIB: i64 = 8192;

/// Tokens are letters and digits, diacritics kept: cut at least wherever [`terms`] cuts (it keeps
/// a few marks inside words), so each query term is found as the phrase of its tokens.
const SCHEMA: &str = "
    CREATE VIRTUAL TABLE chunks USING fts5(
        body, content = '', contentless_delete = 1,
        tokenize = 'unicode61 remove_diacritics 0 categories ''L* N*''');
    CREATE TABLE slots(id INTEGER PRIMARY KEY, doc TEXT NOT NULL, number INTEGER NOT NULL);
    CREATE INDEX slots_doc ON slots(doc);";

pub struct FtsIndex {
    conn: Connection,
    live: usize,
    /// Chunks the staged change adds less those it removes.
    staged: isize,
}

impl ChunkIndex for FtsIndex {
    type Error = rusqlite::Error;

    /// In a fresh temporary database.
    fn open() -> Result<FtsIndex, Self::Error> {
        let conn = Connection::open("")?;
        conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
        conn.execute_batch(SCHEMA)?;
        Ok(FtsIndex {
            conn,
            live: 0,
            staged: 0,
        })
    }

    fn stage(&mut self, doc: &str, chunks: &[String]) -> Result<(), Self::Error> {
        self.conn.execute_batch("BEGIN")?;
        self.conn.execute(
            "DELETE FROM chunks WHERE rowid IN (SELECT id FROM slots WHERE doc = ?1)",
            [doc],
        )?;
        let removed = self
            .conn
            .execute("DELETE FROM slots WHERE doc = ?1", [doc])?;
        let mut slot = self
            .conn
            .prepare_cached("INSERT INTO slots(doc, number) VALUES (?1, ?2)")?;
        let mut body = self
            .conn
            .prepare_cached("INSERT INTO chunks(rowid, body) VALUES (?1, ?2)")?;
        for (number, text) in chunks.iter().enumerate() {
            let id = slot.insert(params![doc, number as u32])?;
            body.execute(params![id, text])?;
        }
        self.staged = chunks.len() as isize - removed as isize;
        Ok(())
    }

    fn commit(&mut self) -> Result<(), Self::Error> {
        self.conn.execute_batch("COMMIT")?;
        self.live = self.live.saturating_add_signed(self.staged);
        self.staged = 0;
        Ok(())
    }

    fn roll_back(&mut self) {
        self.staged = 0;
        if !self.conn.is_autocommit() {
            // Fails only when no transaction is open: nothing to undo then.
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }

    fn chunk_count(&self) -> usize {
        self.live
    }

    fn search(&self, query: &str, limit: usize) -> Result<Vec<Hit>, Self::Error> {
        let mut words: Vec<String> = terms(query).collect();
        words.sort();
        words.dedup();
        if words.is_empty() {
            return Ok(Vec::new());
        }
        // Each term quoted: a string, never FTS5 syntax (a term holds letters and digits only).
        let expr = words
            .iter()
            .map(|w| format!("\"{w}\""))
            .collect::<Vec<_>>()
            .join(" OR ");
        let mut stmt = self.conn.prepare_cached(
            "SELECT -bm25(chunks), s.doc, s.number FROM chunks JOIN slots s ON s.id = chunks.rowid
             WHERE chunks MATCH ?1 ORDER BY bm25(chunks), s.doc, s.number LIMIT ?2",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![expr, limit], |r| {
            Ok((r.get::<_, f64>(0)? as f32, r.get(1)?, r.get(2)?))
        })?;
        rows.collect()
    }
}

impl FtsIndex {
    /// Bytes the database holds (pages in use times page size).
    #[cfg(test)]
    pub fn database_bytes(&self) -> rusqlite::Result<u64> {
        let pages: i64 = self
            .conn
            .pragma_query_value(None, "page_count", |r| r.get(0))?;
        let size: i64 = self
            .conn
            .pragma_query_value(None, "page_size", |r| r.get(0))?;
        Ok((pages * size) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(ix: &mut FtsIndex, doc: &str, chunks: &[&str]) {
        let chunks: Vec<String> = chunks.iter().map(|c| c.to_string()).collect();
        ix.replace(doc, &chunks, || Ok::<(), rusqlite::Error>(()), |e| e)
            .expect("replace");
    }

    #[test]
    fn bm25_prefers_rare_terms_and_short_chunks() {
        let mut ix = FtsIndex::open().expect("open");
        add(
            &mut ix,
            "handbook.md",
            &["Every employee has 25 vacation days per year."],
        );
        add(
            &mut ix,
            "it.md",
            &["Reset your password at the IT portal. The portal is open all year."],
        );
        add(
            &mut ix,
            "long.md",
            &[
                "vacation is mentioned once in this much longer chunk about travel, expenses, \
               receipts, hotels, trains, flights and the per diem rules of the company",
            ],
        );
        let hits = ix
            .search("How many vacation days per year?", 3)
            .expect("search");
        assert_eq!(hits[0].1, "handbook.md");
        assert!(hits[0].0 > hits[1].0 && hits[1].0 > 0.0, "{hits:?}");
        let v = ix.search("vacation", 3).expect("search");
        assert_eq!(
            (v[0].1.as_str(), v[1].1.as_str()),
            ("handbook.md", "long.md")
        );
        // Words FTS5 would read as syntax are plain terms.
        assert_eq!(
            ix.search("open OR NOT \"x", 3).expect("search")[0].1,
            "it.md"
        );
        assert!(ix.search("?!", 3).expect("search").is_empty());

        add(
            &mut ix,
            "handbook.md",
            &["Every employee has 30 vacation days."],
        );
        assert_eq!(ix.chunk_count(), 3);
        assert_eq!(ix.search("30", 3).expect("search")[0].1, "handbook.md");
        assert!(ix.search("25", 3).expect("search").is_empty());
        add(&mut ix, "handbook.md", &[]);
        assert_eq!(ix.chunk_count(), 2);
        assert!(ix.search("30", 3).expect("search").is_empty());
    }

    #[test]
    fn a_change_the_store_refuses_is_not_indexed() {
        let mut ix = FtsIndex::open().expect("open");
        add(&mut ix, "a.md", &["alpha one", "alpha two"]);
        let refused = ix.replace("a.md", &["beta".into()], || Err("disk full"), |_| "index");
        assert_eq!(refused, Err("disk full"));
        assert_eq!(ix.chunk_count(), 2);
        assert_eq!(ix.search("alpha", 5).expect("search").len(), 2);
        assert!(ix.search("beta", 5).expect("search").is_empty());
    }

    #[test]
    fn words_are_the_store_terms() {
        let mut ix = FtsIndex::open().expect("open");
        add(&mut ix, "u.md", &["Vacation-days: Ünïcode हिन्दी"]);
        for q in ["ünïcode", "ÜNÏCODE", "हिन्दी", "days"] {
            assert_eq!(ix.search(q, 1).expect("search").len(), 1, "{q}");
        }
        // Diacritics are kept, as the in-memory index keeps them.
        assert!(ix.search("unicode", 1).expect("search").is_empty());
    }
}
