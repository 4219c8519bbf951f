//! Errors from reading and checking a model package; each names the file (or key) and the problem.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("{dir}: not a model package directory ({message})")]
    NotADirectory { dir: PathBuf, message: String },
    #[error("{path}: cannot read: {message}")]
    Read { path: PathBuf, message: String },
    #[error("{path}: not valid JSON: {message}")]
    Json { path: PathBuf, message: String },
    #[error("{path}: \"format\" is {found}, expected \"moed-package\"")]
    WrongFormat { path: PathBuf, found: String },
    #[error(
        "{path}: format_version {found} is not supported; this moed reads format_version {supported} (re-export the model with a matching moe_export, or upgrade moed)"
    )]
    UnsupportedVersion {
        path: PathBuf,
        found: String,
        supported: &'static str,
    },
    #[error("{path}: {message}")]
    Manifest { path: PathBuf, message: String },
    #[error("{file}: listed in manifest.json but missing from the package ({path})")]
    MissingFile { file: String, path: PathBuf },
    #[error("{file}: {found} bytes on disk, manifest.json says {expected} ({kind})")]
    WrongSize {
        file: String,
        expected: u64,
        found: u64,
        kind: &'static str,
    },
    #[error(
        "{file}: SHA-256 is {found}, manifest.json says {expected} (the file is corrupt or was changed)"
    )]
    Checksum {
        file: String,
        expected: String,
        found: String,
    },
}
