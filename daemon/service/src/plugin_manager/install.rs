//! Installing a plugin: read what the client gave (a path, read with the caller's permissions,
//! or the manifest text and a passed file descriptor), check everything (manifest, options, the
//! configuration's settings, then a complete load: compilation, imports against the grant,
//! exports against the kind, a first instance) in a staging directory, and only then move it
//! into place and record it. A refused installation leaves nothing behind: no files, no record,
//! no compiled code, no key-value store.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use moed_plugins::{Kind, Manifest, ManifestError};

use super::settings::{Recorded, check_not_pinned, effective, grant_option, json_object};
use super::{
    COMPONENT_FILE, Entry, MANIFEST_FILE, ManagerError, Origin, PluginDetails, PluginManager,
    load_error, state_error,
};
use crate::ServiceError;
use crate::client_files::{self, Identity, read_bounded};
use crate::config::GrantSettings;
use crate::plugins::{built_files, dir_entries};
use crate::state::PluginRecord;

/// Largest component accepted, bytes.
pub const MAX_COMPONENT_BYTES: u64 = 64 << 20;
/// Largest manifest accepted, bytes.
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;

const STAGING_PREFIX: &str = ".staging-";
const OLD_PREFIX: &str = ".old-";

/// A plugin as a client hands it over.
pub struct Package {
    pub manifest_text: String,
    pub wasm: Vec<u8>,
    /// Where it came from, as recorded: the path, or `fd`.
    pub source: String,
}

/// How to install a plugin: the administrator's settings for it, recorded with it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InstallOptions {
    /// Enabled right away (default true).
    pub enabled: Option<bool>,
    /// Applied to every request; default: true for filters and retrieval, false for gates.
    pub always: Option<bool>,
    /// Narrows what the manifest asks for.
    pub grant: GrantSettings,
    /// The plugin's configuration as a JSON object, checked against its schema.
    pub config: Option<String>,
    /// Replace an installed plugin of the same name (its key-value store stays).
    pub replace: bool,
}

fn invalid(m: String) -> ServiceError {
    ServiceError::InvalidArgument(m)
}

fn read_capped(what: &str, file: File, max: u64) -> Result<Vec<u8>, ServiceError> {
    read_bounded(file, max).map_err(|e| invalid(format!("the {what}: {e}")))
}

/// A manifest error without the text of the manifest: a TOML parse error names the line and
/// column and what was expected, and drops the excerpt of the file that `toml` adds.
fn manifest_error(e: ManifestError) -> ServiceError {
    let message = match e {
        ManifestError::Parse { message, .. } => message
            .lines()
            .filter(|l| {
                let t = l.trim_start();
                let excerpt = t.starts_with('|')
                    || t.split_once(" |")
                        .is_some_and(|(n, _)| n.chars().all(|c| c.is_ascii_digit()));
                !excerpt && !t.is_empty()
            })
            .collect::<Vec<_>>()
            .join(": "),
        other => other.to_string(),
    };
    invalid(format!("the plugin's manifest: {message}"))
}

impl Package {
    /// A built plugin at `path`: `NAME.wasm` with `NAME.toml` beside it (as plugins/build.sh
    /// leaves them), or a directory holding `plugin.toml` and one `.wasm`. Read with the
    /// caller's permissions (`who`; `None` for root): a path the caller could not read is
    /// refused with one answer whether it exists or not, and names no file it found.
    pub fn from_path(path: &Path, who: Option<&Identity>) -> Result<Package, ServiceError> {
        if !path.is_absolute() {
            return Err(invalid(format!(
                "path {} is not absolute; the daemon does not know the caller's directory",
                moed_wire::quote(&path.display().to_string())
            )));
        }
        let Some(id) = who else {
            return Self::from_path_as_daemon(path);
        };
        let shown = moed_wire::quote(&path.display().to_string());
        let unreachable = |e: client_files::Unreachable| {
            invalid(format!(
                "cannot install from {shown}: {e}; pass the files instead (moectl plugins install sends them)"
            ))
        };
        let entries = client_files::list_dir_as(id, path).ok();
        let (manifest, wasm) = built_files(path, entries.as_deref())
            .ok_or_else(|| invalid(format!("{shown} holds no .wasm component")))?;
        let manifest_file = client_files::open_file_as(id, &manifest).map_err(unreachable)?;
        let wasm_file = client_files::open_file_as(id, &wasm).map_err(unreachable)?;
        Self::read(manifest_file, wasm_file, path.display().to_string())
    }

    /// Root's path: read with the daemon's permissions, as root could read it anyway.
    fn from_path_as_daemon(path: &Path) -> Result<Package, ServiceError> {
        let entries = dir_entries(path)
            .map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
        let (manifest, wasm) = built_files(path, entries.as_deref())
            .ok_or_else(|| invalid(format!("{} holds no .wasm component", path.display())))?;
        let open = |p: &Path| {
            client_files::open_file(p).map_err(|e| {
                invalid(format!(
                    "cannot read {} as the daemon's user: {e}; pass the files instead (moectl plugins install sends them)",
                    p.display()
                ))
            })
        };
        Self::read(open(&manifest)?, open(&wasm)?, path.display().to_string())
    }

    fn read(manifest: File, wasm: File, source: String) -> Result<Package, ServiceError> {
        let manifest_bytes = read_capped("manifest", manifest, MAX_MANIFEST_BYTES)?;
        let manifest_text = String::from_utf8(manifest_bytes)
            .map_err(|_| invalid("the manifest is not UTF-8 text".into()))?;
        Ok(Package {
            manifest_text,
            wasm: read_capped("component", wasm, MAX_COMPONENT_BYTES)?,
            source,
        })
    }

    /// The manifest as text and the component read from a passed file descriptor: a regular
    /// file (a pipe or socket could keep the reading thread waiting forever), at most
    /// [`MAX_COMPONENT_BYTES`], read within the client-file deadline.
    pub fn from_fd(manifest_text: String, fd: OwnedFd) -> Result<Package, ServiceError> {
        if manifest_text.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(invalid(format!(
                "the manifest is larger than the {MAX_MANIFEST_BYTES} bytes moed accepts"
            )));
        }
        let wasm = read_capped(
            "component (the passed file descriptor)",
            File::from(fd),
            MAX_COMPONENT_BYTES,
        )?;
        Ok(Package {
            manifest_text,
            wasm,
            source: "fd".into(),
        })
    }
}

/// Creates `root` and clears what an interrupted installation left there.
pub(super) fn prepare_root(root: &Path) -> Result<(), ManagerError> {
    let dir_err = |message: String| ManagerError::Dir {
        dir: root.to_owned(),
        message,
    };
    std::fs::create_dir_all(root).map_err(|e| dir_err(format!("cannot create it: {e}")))?;
    let entries = std::fs::read_dir(root).map_err(|e| dir_err(format!("cannot read it: {e}")))?;
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().to_string();
        let path = entry.path();
        if file_name.starts_with(STAGING_PREFIX) {
            let _ = std::fs::remove_dir_all(&path);
        } else if let Some(rest) = file_name.strip_prefix(OLD_PREFIX) {
            // `.old-NAME-N`: a replacement that stopped half-way; the old version comes back
            // unless the new one made it into place.
            let name = rest.rsplit_once('-').map_or(rest, |(n, _)| n);
            let target = root.join(name);
            if target.exists() {
                let _ = std::fs::remove_dir_all(&path);
            } else {
                let _ = std::fs::rename(&path, &target);
            }
        }
    }
    Ok(())
}

fn unique(root: &Path, prefix: &str, name: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    root.join(format!(
        "{prefix}{name}-{}{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Removes a directory on drop unless disarmed: the staging area of a refused installation.
struct Cleanup(Option<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl PluginManager {
    /// Installs `pkg` (see the module's documentation). Replies with the installed plugin.
    pub fn install(
        &self,
        pkg: Package,
        opts: &InstallOptions,
    ) -> Result<PluginDetails, ServiceError> {
        let manifest = Manifest::parse(&pkg.manifest_text).map_err(manifest_error)?;
        let name = manifest.name.clone();
        let mut inner = self.lock();
        let replacing = match inner.entries.get(&name).map(|e| &e.origin) {
            Some(Origin::Configured { path, .. }) => {
                return Err(invalid(format!(
                    "plugins.filters of the configuration names a plugin '{name}' ({}); it cannot be installed over",
                    path.display()
                )));
            }
            Some(Origin::Installed(_)) if !opts.replace => {
                return Err(invalid(format!(
                    "plugin '{name}' is already installed; remove it first, or install with option replace (moectl plugins install --replace)"
                )));
            }
            Some(Origin::Installed(_)) => true,
            None => false,
        };
        let file = inner.settings.get(&name).cloned();
        if opts.enabled.is_some() {
            check_not_pinned(&name, file.as_ref(), "enabled")?;
        }
        if opts.always.is_some() {
            check_not_pinned(&name, file.as_ref(), "always")?;
        }
        if opts.config.is_some() {
            check_not_pinned(&name, file.as_ref(), "config")?;
        }
        let config = match &opts.config {
            Some(text) => json_object("option 'config'", text)?,
            None => Default::default(),
        };
        let recorded = Recorded {
            enabled: opts.enabled.unwrap_or(true),
            always: opts.always,
            grant: grant_option(&manifest, &opts.grant)?,
            config,
        };
        let eff = effective(manifest.kind, &recorded, file.as_ref());
        // A key the schema does not know is named here, before anything is compiled.
        manifest.resolve_config(&eff.config).map_err(|e| {
            let from = if file.as_ref().is_some_and(|f| f.config.is_some()) {
                format!(" (from plugins.{name}.config in the configuration)")
            } else {
                String::new()
            };
            invalid(format!("{e}{from}"))
        })?;
        if manifest.kind == Kind::Gate
            && eff.always
            && let Some((other, _)) = inner.entries.iter().find(|(n, e)| {
                **n != name
                    && e.effective.as_ref().is_some_and(|f| f.always && f.enabled)
                    && e.manifest.as_ref().is_some_and(|m| m.kind == Kind::Gate)
            })
        {
            return Err(invalid(format!(
                "gate '{other}' already applies to every request; only one gate can (disable it, or install '{name}' without option always)"
            )));
        }

        let staging = unique(&self.root, STAGING_PREFIX, &name);
        let mut cleanup = Cleanup(Some(staging.clone()));
        let write = |file: &str, bytes: &[u8]| {
            std::fs::create_dir_all(&staging)
                .and_then(|()| std::fs::write(staging.join(file), bytes))
                .map_err(|e| {
                    ServiceError::Failed(format!("cannot write {}: {e}", staging.display()))
                })
        };
        write(MANIFEST_FILE, pkg.manifest_text.as_bytes())?;
        write(COMPONENT_FILE, &pkg.wasm)?;
        let kv_existed = self.state.plugin_kv_exists(&name);
        let plugin = match self.load_spec(&manifest, &staging.join(COMPONENT_FILE), &eff) {
            Ok(p) => p,
            Err(e) => {
                self.host.discard_compiled(&pkg.wasm);
                if !kv_existed && let Err(err) = self.state.drop_plugin_kv(&name) {
                    log::warn!("plugin '{name}' refused; its empty store stays: {err}");
                }
                return Err(load_error(e));
            }
        };

        // Into place: the new directory, then its record; the old version (when replacing)
        // comes back if either step fails.
        let target = self.root.join(&name);
        let old = unique(&self.root, OLD_PREFIX, &name);
        if replacing {
            std::fs::rename(&target, &old).map_err(|e| {
                ServiceError::Failed(format!("cannot move {} aside: {e}", target.display()))
            })?;
        }
        let restore = |e: String| {
            let _ = std::fs::remove_dir_all(&target);
            if replacing {
                let _ = std::fs::rename(&old, &target);
            }
            ServiceError::Failed(e)
        };
        std::fs::rename(&staging, &target).map_err(|e| {
            restore(format!(
                "cannot move the plugin into {}: {e}",
                target.display()
            ))
        })?;
        cleanup.0 = None;
        let record = PluginRecord {
            name: name.clone(),
            version: manifest.version.clone(),
            kind: manifest.kind.to_string(),
            enabled: recorded.enabled,
            always: recorded.always,
            grant: recorded.grant.clone(),
            config: recorded.config.clone(),
            source: pkg.source.clone(),
            installed_at: crate::clock::unix_now(),
        };
        self.state
            .put_plugin_record(&record)
            .map_err(|e| restore(state_error(e).to_string()))?;
        if replacing {
            let _ = std::fs::remove_dir_all(&old);
        }
        log::info!(
            plugin = name.as_str();
            "plugin '{name}' {} ({} {}, from {})",
            if replacing { "replaced" } else { "installed" },
            manifest.kind, manifest.version, pkg.source
        );
        inner.entries.insert(
            name.clone(),
            Entry {
                origin: Origin::Installed(Box::new(record)),
                manifest: Some(manifest),
                plugin: Some(plugin),
                load_error: None,
                effective: Some(eff),
            },
        );
        self.publish(&inner);
        let e = Self::entry(&inner, &name)?;
        Ok(self.describe(&inner, &name, e))
    }
}
