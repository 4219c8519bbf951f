//! What `models import` reads and writes, checked before the exporter starts: the checkpoint
//! folder, the package name and the output folder.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::CtlError;

/// The first of moed's default model directories (packaging/moed.toml): a package written there
/// is found by name.
pub const MODELS_DIR: &str = "/var/lib/moed/models";
/// Longer paths are refused before any file system call (PATH_MAX).
const MAX_PATH: usize = 4096;
/// A package name becomes a folder name and a model name on D-Bus.
const MAX_NAME: usize = 128;

/// The checked arguments: `src` and `out` are absolute.
#[derive(Debug, PartialEq)]
pub struct Plan {
    pub src: PathBuf,
    pub out: PathBuf,
    pub name: String,
}

pub fn plan(
    src: &Path,
    out: Option<&Path>,
    name: Option<&str>,
    force: bool,
) -> Result<Plan, CtlError> {
    check_path(src, "HF_DIR")?;
    let meta = std::fs::metadata(src).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            CtlError::Invalid(format!("HF_DIR {} does not exist", src.display()))
        }
        _ => CtlError::io(format!("reading {}", src.display()), e),
    })?;
    if !meta.is_dir() {
        return Err(CtlError::Invalid(format!(
            "HF_DIR {} is not a folder",
            src.display()
        )));
    }
    let src = src
        .canonicalize()
        .map_err(|e| CtlError::io(format!("resolving {}", src.display()), e))?;
    if !src.join("config.json").is_file() {
        return Err(CtlError::Invalid(format!(
            "{} has no config.json: not a Hugging Face checkpoint folder",
            src.display()
        )));
    }
    let name = match name {
        Some(n) => n.to_string(),
        None => src
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| {
                CtlError::Invalid(format!(
                    "cannot name the package after {}; pass --name NAME",
                    src.display()
                ))
            })?
            .to_string(),
    };
    check_name(&name)?;
    let out = match out {
        Some(o) => {
            check_path(o, "--out")?;
            std::path::absolute(o)
                .map_err(|e| CtlError::io(format!("resolving {}", o.display()), e))?
        }
        None => Path::new(MODELS_DIR).join(&name),
    };
    check_out(&out, &src, force)?;
    Ok(Plan { src, out, name })
}

fn check_path(path: &Path, what: &str) -> Result<(), CtlError> {
    let bytes = path.as_os_str().as_bytes();
    if bytes.contains(&0) {
        return Err(CtlError::Invalid(format!("{what} contains a NUL byte")));
    }
    if bytes.is_empty() || bytes.len() > MAX_PATH {
        return Err(CtlError::Invalid(format!(
            "{what} must be 1 to {MAX_PATH} bytes long, not {}",
            bytes.len()
        )));
    }
    Ok(())
}

/// A name that is safe as a folder name and readable in `models list`.
pub fn check_name(name: &str) -> Result<(), CtlError> {
    let bad = name.is_empty()
        || name.len() > MAX_NAME
        || name.starts_with(['.', '-'])
        || name
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control() || c.is_whitespace());
    if bad {
        return Err(CtlError::Invalid(format!(
            "package name '{}' is not usable: 1 to {MAX_NAME} characters, no '/', '\\', spaces or control characters, not starting with '.' or '-'; pass --name NAME",
            name.chars()
                .take(MAX_NAME)
                .map(|c| if c.is_control() { '?' } else { c })
                .collect::<String>()
        )));
    }
    Ok(())
}

fn check_out(out: &Path, src: &Path, force: bool) -> Result<(), CtlError> {
    let entries = match std::fs::read_dir(out) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(_) if out.exists() && !out.is_dir() => {
            return Err(CtlError::Invalid(format!(
                "{} exists and is not a folder",
                out.display()
            )));
        }
        Err(e) => return Err(CtlError::io(format!("reading {}", out.display()), e)),
    };
    if out.canonicalize().is_ok_and(|o| o == src) {
        return Err(CtlError::Invalid(format!(
            "the package cannot be written into HF_DIR itself ({}); choose --out DIR",
            src.display()
        )));
    }
    if entries.take(1).count() > 0 && !force {
        return Err(CtlError::Invalid(format!(
            "{} is not empty; pass --force to replace the package in it",
            out.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::*;

    fn checkpoint(dir: &Path) -> PathBuf {
        let src = dir.join("Tiny-MoE");
        std::fs::create_dir(&src).unwrap();
        std::fs::write(src.join("config.json"), "{}").unwrap();
        src
    }

    fn message(r: Result<Plan, CtlError>) -> String {
        let err = r.unwrap_err();
        assert_eq!(err.exit_code(), crate::error::exit::INVALID, "{err}");
        err.to_string()
    }

    #[test]
    fn defaults_name_the_package_after_its_folder() {
        let dir = tempfile::tempdir().unwrap();
        let src = checkpoint(dir.path());
        let plan = plan(&src, None, None, false).unwrap();
        assert_eq!(plan.name, "Tiny-MoE");
        assert_eq!(plan.out, Path::new("/var/lib/moed/models/Tiny-MoE"));
        let out = dir.path().join("pkg");
        let plan = super::plan(&src, Some(&out), Some("other"), false).unwrap();
        assert_eq!((plan.out, plan.name), (out, "other".to_string()));
    }

    #[test]
    fn nul_bytes_and_huge_paths_are_refused() {
        let nul = Path::new(OsStr::from_bytes(b"/tmp/a\0b"));
        assert!(message(plan(nul, None, None, false)).contains("HF_DIR contains a NUL byte"));
        let dir = tempfile::tempdir().unwrap();
        let src = checkpoint(dir.path());
        assert!(message(plan(&src, Some(nul), None, false)).contains("--out contains a NUL byte"));
        let long = PathBuf::from(format!("/{}", "a".repeat(5000)));
        assert!(message(plan(&long, None, None, false)).contains("1 to 4096 bytes"));
    }

    #[test]
    fn missing_folders_and_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let none = dir.path().join("nope");
        assert!(message(plan(&none, None, None, false)).ends_with("nope does not exist"));
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        assert!(message(plan(&file, None, None, false)).ends_with("file is not a folder"));
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        assert!(
            message(plan(&empty, None, None, false))
                .ends_with("has no config.json: not a Hugging Face checkpoint folder")
        );
    }

    #[test]
    fn output_folder_must_be_empty_unless_forced() {
        let dir = tempfile::tempdir().unwrap();
        let src = checkpoint(dir.path());
        let out = dir.path().join("pkg");
        std::fs::create_dir(&out).unwrap();
        assert!(plan(&src, Some(&out), None, false).is_ok(), "empty is fine");
        std::fs::write(out.join("manifest.json"), "{}").unwrap();
        assert!(
            message(plan(&src, Some(&out), None, false)).contains("is not empty; pass --force")
        );
        assert!(plan(&src, Some(&out), None, true).is_ok());
        assert!(
            message(plan(&src, Some(&out.join("manifest.json")), None, true))
                .ends_with("exists and is not a folder")
        );
        assert!(message(plan(&src, Some(&src), None, true)).contains("into HF_DIR itself"));
    }

    #[test]
    fn names_must_be_folder_names() {
        for good in ["qwen3-30b-a3b", "Mixtral_8x7B.v0.1", "é"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        let long = "a".repeat(129);
        for bad in [
            "", ".", "..", ".hidden", "-x", "a/b", "a\\b", "a b", "a\nb", "a\0b", &long,
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        let err = check_name("a\u{1b}[31m").unwrap_err().to_string();
        assert!(!err.contains('\u{1b}'), "{err}");
    }
}
