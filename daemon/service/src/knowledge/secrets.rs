//! The secrets file (default `/etc/moed/secrets.toml`): database connection strings by name,
//! which only the daemon reads. moed refuses a file that anyone but its owner (root or the
//! daemon's user) could read, so a password never leaks through a lax mode; the one exception is
//! `root:<daemon's group> 0640`, the usual way to let a service read a root-owned secret.
//!
//! ```toml
//! [company]
//! connection = "host=/run/postgresql dbname=company user=moed_reader password=..."
//! ```

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::KnowledgeError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    connection: String,
}

/// The credentials read from the secrets file. Its `Debug` never shows them.
pub struct Secrets {
    path: PathBuf,
    entries: BTreeMap<String, Entry>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("path", &self.path)
            .field("names", &self.entries.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn error(path: &Path, message: impl Into<String>) -> KnowledgeError {
    KnowledgeError::Secrets {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Whether the file's owner and mode keep it private to root and the daemon's user.
pub fn check_private(path: &Path, meta: &std::fs::Metadata) -> Result<(), KnowledgeError> {
    let euid = nix::unistd::geteuid().as_raw();
    let egid = nix::unistd::getegid().as_raw();
    let mode = meta.mode() & 0o777;
    let fix = format!(
        "it holds database passwords; run `chmod 0600 {0}` and `chown {1} {0}` (or root:GROUP \
         with mode 0640, GROUP being the daemon's group)",
        path.display(),
        if euid == 0 {
            "root".to_string()
        } else {
            nix::unistd::User::from_uid(euid.into())
                .ok()
                .flatten()
                .map_or(euid.to_string(), |u| u.name)
        }
    );
    if !meta.is_file() {
        return Err(error(path, "is not a regular file"));
    }
    if meta.uid() != 0 && meta.uid() != euid {
        return Err(error(
            path,
            format!(
                "is owned by uid {}, not root or the daemon's user; {fix}",
                meta.uid()
            ),
        ));
    }
    if mode & 0o007 != 0 {
        return Err(error(
            path,
            format!("is accessible to other users (mode {mode:04o}); {fix}"),
        ));
    }
    let group_may = meta.uid() == 0 && meta.gid() == egid && egid != 0;
    if mode & 0o070 != 0 && !group_may {
        return Err(error(
            path,
            format!(
                "is accessible to its group, gid {} (mode {mode:04o}); {fix}",
                meta.gid()
            ),
        ));
    }
    Ok(())
}

impl Secrets {
    pub fn load(path: &Path) -> Result<Secrets, KnowledgeError> {
        let meta = std::fs::metadata(path).map_err(|e| {
            error(
                path,
                format!(
                    "{e}; database sources name their credentials there (knowledge.secrets_file)"
                ),
            )
        })?;
        check_private(path, &meta)?;
        let text = std::fs::read_to_string(path).map_err(|e| error(path, e.to_string()))?;
        // The parser's message may quote the offending line, which could be a password: only the
        // position is kept.
        let entries: BTreeMap<String, Entry> = toml::from_str(&text).map_err(|e| {
            let at = e
                .span()
                .map(|s| {
                    let line = text[..s.start].matches('\n').count() + 1;
                    format!(" at line {line}")
                })
                .unwrap_or_default();
            error(
                path,
                format!(
                    "is not valid{at}: expected tables `[NAME]` with one key `connection = \"...\"`"
                ),
            )
        })?;
        Ok(Secrets {
            path: path.to_path_buf(),
            entries,
        })
    }

    /// The connection string stored under `name`.
    pub fn connection(&self, name: &str) -> Result<&str, KnowledgeError> {
        self.entries
            .get(name)
            .map(|e| e.connection.as_str())
            .ok_or_else(|| {
                error(
                    &self.path,
                    format!("has no table [{name}] with a `connection` string"),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn lax_modes_are_refused_with_the_fix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secrets.toml");
        std::fs::write(
            &path,
            "[company]\nconnection = \"user=r password=hunter2\"\n",
        )
        .expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = Secrets::load(&path).unwrap_err().to_string();
        assert!(
            e.contains(&path.display().to_string())
                && e.contains("chmod 0600")
                && e.contains("0644"),
            "{e}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let s = Secrets::load(&path).expect("private file");
        assert_eq!(
            s.connection("company").expect("entry"),
            "user=r password=hunter2"
        );
        assert!(!format!("{s:?}").contains("hunter2"));
        let e = s.connection("payroll").unwrap_err().to_string();
        assert!(e.contains("[payroll]"), "{e}");

        std::fs::write(
            &path,
            "[company]\nconnection = \"password=hunter2\nuser = 1\n",
        )
        .expect("write");
        let e = Secrets::load(&path).unwrap_err().to_string();
        assert!(
            e.contains("not valid at line") && !e.contains("hunter2"),
            "{e}"
        );
    }
}
