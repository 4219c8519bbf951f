//! Whether a caller may read a model package named by path, checked with the caller's
//! permissions before the daemon opens anything there (CONTRACT.md, Limits).

use std::path::Path;

use super::client_files::{self, Identity, Unreachable};

/// Largest manifest.json read on a caller's behalf before the package is opened.
const MAX_MANIFEST_BYTES: u64 = 16 << 20;

/// Whether `id` may read the package at `dir`: its manifest.json and every file the manifest
/// lists, each reached with the caller's permissions. Checked before the daemon opens anything
/// there, so neither the answer nor a later error (a size, a parse error) tells the caller about
/// a file it could not read itself.
pub fn caller_may_read(id: &Identity, dir: &Path) -> Result<(), Unreachable> {
    let unreachable = || Unreachable { uid: id.uid };
    let manifest = client_files::open_file_as(id, &dir.join("manifest.json"))?;
    let bytes =
        client_files::read_bounded(manifest, MAX_MANIFEST_BYTES).map_err(|_| unreachable())?;
    // A manifest that does not parse is left for Package::open to report: the caller may read it.
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Ok(());
    };
    if let Some(files) = value.get("files").and_then(|f| f.as_object()) {
        for rel in files.keys() {
            client_files::check_file_as(id, &dir.join(rel))?;
        }
    }
    Ok(())
}
