//! Model packages: reading and validating manifest.json and the files it names (models/FORMAT.md).

mod error;
pub mod manifest;
mod precision;
mod validate;
mod verify;

use std::path::{Path, PathBuf};

pub use error::PackageError;
pub use manifest::{
    Attention, CacheDtype, CacheLayout, CacheTensor, Dims, FORMAT_NAME, FORMAT_VERSION, FileEntry,
    GenerationDefaults, GraphPrecision, GroupLimit, GroupScore, LayerSpec, Manifest, MaskedChoice,
    Precision, READ_VERSIONS, RoutingConfig, Scoring, SpecialToken, SpecialTokens, Thinking,
    TokenizerSpec,
};
pub use precision::GRAPH_KINDS;
pub use verify::VerifyReport;

/// A model package whose manifest parsed, is consistent, and whose files all exist with the listed
/// sizes. Graphs are not loaded here (the engine does that).
#[derive(Debug, Clone)]
pub struct Package {
    dir: PathBuf,
    manifest: Manifest,
}

impl Package {
    /// Reads `dir/manifest.json` and checks it and the files it lists (sizes, not hashes: see
    /// [`Package::verify`]).
    pub fn open(dir: &Path) -> Result<Package, PackageError> {
        if !dir.is_dir() {
            return Err(PackageError::NotADirectory {
                dir: dir.to_path_buf(),
                message: if dir.exists() {
                    "not a directory".into()
                } else {
                    "does not exist".into()
                },
            });
        }
        let path = dir.join("manifest.json");
        if !path.is_file() {
            return Err(PackageError::NotADirectory {
                dir: dir.to_path_buf(),
                message: "it has no manifest.json".into(),
            });
        }
        let text = read_manifest(&path)?;
        let manifest = checked_manifest(&path, &text)?;
        validate::check_files(dir, &manifest)?;
        Ok(Package {
            dir: dir.to_path_buf(),
            manifest,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
    /// The absolute path of a package file named relative to the package.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }
    pub fn tokenizer_path(&self) -> PathBuf {
        self.path(&self.manifest.tokenizer.file)
    }
    pub fn add_bos_token(&self) -> bool {
        self.manifest.tokenizer.add_bos_token
    }
    pub fn context_length(&self) -> usize {
        self.manifest.dims.context_length
    }
    pub fn vocab_size(&self) -> usize {
        self.manifest.dims.vocab_size
    }
    pub fn chat_template(&self) -> Option<&str> {
        self.manifest.chat_template.as_deref()
    }
    pub fn special_tokens(&self) -> &SpecialTokens {
        &self.manifest.special_tokens
    }
    pub fn thinking(&self) -> Option<&Thinking> {
        self.manifest.thinking.as_ref()
    }
    pub fn generation(&self) -> &GenerationDefaults {
        &self.manifest.generation
    }

    /// Bytes of a graph's weights on disk: the `.onnx` plus its `.onnx.data` when listed.
    pub fn graph_bytes(&self, rel: &str) -> u64 {
        let files = &self.manifest.files;
        let onnx = files.get(rel).map_or(0, |f| f.bytes);
        let data = files.get(&format!("{rel}.data")).map_or(0, |f| f.bytes);
        onnx + data
    }

    /// Hashes every listed file and compares it with manifest.json's SHA-256.
    pub fn verify(&self) -> Result<VerifyReport, PackageError> {
        verify::verify(self)
    }
}

/// The largest manifest.json read: a 256-expert, 61-layer package lists about 16,000 files in a few
/// MB; anything far larger is not a manifest, and reading it whole would cost the daemon memory.
pub const MAX_MANIFEST_BYTES: u64 = 64 << 20;

/// The longest parser message kept: serde quotes offending values whole.
const MAX_PARSE_MESSAGE: usize = 512;

fn read_manifest(path: &Path) -> Result<String, PackageError> {
    use std::io::Read;
    let read_err = |e: std::io::Error| PackageError::Read {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut text = String::new();
    // Read one byte past the limit to tell "at the limit" from "over it" without trusting stat
    // (a FIFO or /proc file reports 0).
    file.take(MAX_MANIFEST_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(read_err)?;
    if text.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(PackageError::Read {
            path: path.to_path_buf(),
            message: format!("larger than the {MAX_MANIFEST_BYTES}-byte limit of a manifest"),
        });
    }
    Ok(text)
}

/// manifest.json parsed and checked for consistency; errors name the file and are bounded.
fn checked_manifest(path: &Path, text: &str) -> Result<Manifest, PackageError> {
    let manifest = parse_manifest(path, text)?;
    validate::check_manifest(&manifest).map_err(|message| PackageError::Manifest {
        path: path.to_path_buf(),
        message: clipped(message),
    })?;
    Ok(manifest)
}

fn clipped(message: String) -> String {
    moed_wire::owned(message, MAX_PARSE_MESSAGE)
}

fn parse_manifest(path: &Path, text: &str) -> Result<Manifest, PackageError> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| PackageError::Json {
        path: path.to_path_buf(),
        message: clipped(e.to_string()),
    })?;
    // The version decides how the rest reads, so it is checked before the full parse.
    let format = value
        .get("format")
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    if format != FORMAT_NAME {
        return Err(PackageError::WrongFormat {
            path: path.to_path_buf(),
            found: value
                .get("format")
                .map_or_else(|| "missing".into(), |v| moed_wire::quote(&v.to_string())),
        });
    }
    match value
        .get("format_version")
        .and_then(serde_json::Value::as_u64)
    {
        Some(v) if READ_VERSIONS.contains(&v) => {}
        other => {
            return Err(PackageError::UnsupportedVersion {
                path: path.to_path_buf(),
                found: other.map_or_else(
                    || {
                        value
                            .get("format_version")
                            .map_or_else(|| "missing".into(), |v| moed_wire::quote(&v.to_string()))
                    },
                    |v| v.to_string(),
                ),
                supported: "1, 2 or 3",
            });
        }
    }
    // The path to the offending key ("layers[1].experts") goes into the message.
    serde_path_to_error::deserialize(value).map_err(|e| {
        let at = e.path().to_string();
        let inner = e.into_inner();
        PackageError::Manifest {
            path: path.to_path_buf(),
            message: clipped(if at == "." {
                inner.to_string()
            } else {
                format!("{at}: {inner}")
            }),
        }
    })
}

#[cfg(test)]
mod parse_tests;
