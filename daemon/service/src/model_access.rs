//! Whether a caller may read a model package named by path, checked with the caller's
//! permissions before the daemon opens anything there (CONTRACT.md, Limits), and the name its
//! manifest gives it.

use std::path::Path;

use super::client_files::{self, Identity, Unreachable};

/// Largest manifest.json read on a caller's behalf before the package is opened.
const MAX_MANIFEST_BYTES: u64 = 16 << 20;

/// Whether `id` may read the package at `dir`: its manifest.json and every file the manifest
/// lists, each reached with the caller's permissions. Checked before the daemon opens anything
/// there, so neither the answer nor a later error (a size, a parse error) tells the caller about
/// a file it could not read itself. Answers the manifest's `name` when it is a usable model
/// name (see [`usable_name`]).
pub fn caller_may_read(id: &Identity, dir: &Path) -> Result<Option<String>, Unreachable> {
    let unreachable = || Unreachable { uid: id.uid };
    let manifest = client_files::open_file_as(id, &dir.join("manifest.json"))?;
    let bytes =
        client_files::read_bounded(manifest, MAX_MANIFEST_BYTES).map_err(|_| unreachable())?;
    // A manifest that does not parse is left for Package::open to report: the caller may read it.
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Ok(None);
    };
    if let Some(files) = value.get("files").and_then(|f| f.as_object()) {
        for rel in files.keys() {
            client_files::check_file_as(id, &dir.join(rel))?;
        }
    }
    Ok(name_of(&value))
}

/// The usable `name` of the manifest in `dir`, read by the daemon itself (root's path, or the
/// configuration's); `None` when it cannot be read or gives none.
pub fn manifest_name(dir: &Path) -> Option<String> {
    let file = std::fs::File::open(dir.join("manifest.json")).ok()?;
    let bytes = client_files::read_bounded(file, MAX_MANIFEST_BYTES).ok()?;
    name_of(&serde_json::from_slice(&bytes).ok()?)
}

fn name_of(manifest: &serde_json::Value) -> Option<String> {
    let name = manifest.get("name")?.as_str()?;
    usable_name(name).then(|| name.to_owned())
}

/// Most bytes of a manifest name used as a model's name.
const MAX_NAME_BYTES: usize = 128;

/// Whether a manifest's name can be a model's name: something a client can type back as a name
/// (not a path, not `.`/`..`), printable, not padded, and short.
pub fn usable_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name != "."
        && name != ".."
        && name.trim() == name
        && !name.contains('/')
        && !name.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::usable_name;

    #[test]
    fn manifest_names_that_can_be_model_names() {
        for ok in ["moe-mini", "Qwen3 30B A3B", "deepseek_v3.int4"] {
            assert!(usable_name(ok), "{ok}");
        }
        let long = "x".repeat(129);
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            " pad",
            "tab\t",
            "nul\0",
            long.as_str(),
        ] {
            assert!(!usable_name(bad), "{bad:?}");
        }
    }
}
