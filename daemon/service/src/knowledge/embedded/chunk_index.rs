//! What the store asks of its chunk index (SQLite FTS5, or the in-memory BM25 index in builds
//! without SQLite): a change is staged, then committed once the same change is stored in sled or
//! rolled back when it is not, so the index holds what the store holds.

use std::fmt::Display;

/// A chunk that matched: `(score, document, chunk number)`.
pub type Hit = (f32, String, u32);

pub trait ChunkIndex: Sized {
    type Error: Display;

    /// An empty index.
    fn open() -> Result<Self, Self::Error>;

    /// Stages replacing the chunks of `doc` by `chunks` (none: removing it).
    fn stage(&mut self, doc: &str, chunks: &[String]) -> Result<(), Self::Error>;

    fn commit(&mut self) -> Result<(), Self::Error>;

    fn roll_back(&mut self);

    fn chunk_count(&self) -> usize;

    /// The best `limit` chunks for `query` (any of its terms), best first; ties by document
    /// name and number, so results are stable.
    fn search(&self, query: &str, limit: usize) -> Result<Vec<Hit>, Self::Error>;

    /// Replaces the chunks of `doc` by `chunks` if `persist` (the same change to the stored copy)
    /// succeeds; `fail` turns the index's own errors into the caller's.
    fn replace<E>(
        &mut self,
        doc: &str,
        chunks: &[String],
        persist: impl FnOnce() -> Result<(), E>,
        fail: impl Fn(Self::Error) -> E,
    ) -> Result<(), E> {
        self.stage(doc, chunks).map_err(&fail)?;
        match persist() {
            Ok(()) => self.commit().map_err(fail),
            Err(e) => {
                self.roll_back();
                Err(e)
            }
        }
    }
}
