//! TensorRT's engine cache: where the TensorRT execution provider keeps the engines it builds for
//! each graph, so that a model loaded again reads them instead of building them (minutes each).

use std::path::{Path, PathBuf};

use ort::ep;

/// The system service's cache directory (systemd's `CacheDirectory=moed`) and the folder in it.
pub const SYSTEM_CACHE_DIR: &str = "/var/cache/moed";
const FOLDER: &str = "tensorrt";

/// `engine.tensorrt_cache_dir` unless configured: `$CACHE_DIRECTORY/tensorrt` (its first entry,
/// as systemd sets it for the unit), else `/var/cache/moed/tensorrt`.
pub fn default_dir() -> PathBuf {
    let from_systemd = std::env::var_os("CACHE_DIRECTORY").and_then(|dirs| {
        let dirs = dirs.to_string_lossy().to_string();
        dirs.split(':')
            .find(|d| !d.is_empty())
            .map(|d| Path::new(d).join(FOLDER))
    });
    from_systemd.unwrap_or_else(|| Path::new(SYSTEM_CACHE_DIR).join(FOLDER))
}

/// The TensorRT provider with its engine and timing caches in `dir` (created if missing). A
/// directory that cannot be created is the session's failure, named, so the graph falls back.
pub fn provider(dir: &Path) -> Result<ep::TensorRT, ort::Error> {
    std::fs::create_dir_all(dir).map_err(|e| {
        ort::Error::new(format!(
            "the TensorRT engine cache {} cannot be created: {e}",
            dir.display()
        ))
    })?;
    let dir = dir.display().to_string();
    Ok(ep::TensorRT::default()
        .with_engine_cache(true)
        .with_engine_cache_path(&dir)
        .with_timing_cache(true)
        .with_timing_cache_path(&dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_uncreatable_cache_is_named() {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        let err = provider(&file.path().join("tensorrt")).expect_err("a file is in the way");
        assert!(err.to_string().contains("TensorRT engine cache"), "{err}");
    }

    #[test]
    fn the_cache_directory_is_made() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = dir.path().join("a/tensorrt");
        provider(&cache).expect("created");
        assert!(cache.is_dir());
    }
}
