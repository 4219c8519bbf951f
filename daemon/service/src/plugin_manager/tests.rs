//! The plugin manager on a real state store with the plugins plugins/build.sh builds: install,
//! refusals that leave nothing behind, settings, configuration, enable/disable, removal and
//! reopening.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use moed_plugins::{Kind, Sources};

use super::settings::grant_words;
use super::{InstallOptions, Package, PluginDetails, PluginManager, PluginState};
use crate::ServiceError;
use crate::config::{GrantSettings, PluginSettings, PluginsConfig};
use crate::state::StateStore;

/// target/plugins, built once per test binary (a no-op when nothing changed).
fn built() -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    BUILT
        .get_or_init(|| {
            let out = std::process::Command::new(repo.join("plugins/build.sh"))
                .output()
                .map_err(|e| format!("plugins/build.sh: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "plugins/build.sh failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            Ok(repo.join("target/plugins"))
        })
        .clone()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn kind(info: &PluginDetails) -> Option<Kind> {
    info.manifest.as_ref().map(|m| m.kind)
}

fn granted(info: &PluginDetails) -> Vec<String> {
    info.granted.as_ref().map(grant_words).unwrap_or_default()
}

fn package(file: &str) -> Package {
    Package::from_path(&built().join(file), None).expect("read the built plugin")
}

struct Fixture {
    dir: tempfile::TempDir,
    state: StateStore,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateStore::open(dir.path()).expect("state");
        Fixture { dir, state }
    }

    fn open(&self, config: &PluginsConfig) -> PluginManager {
        PluginManager::open(
            &self.state,
            config,
            Arc::new(Sources::default()),
            self.dir.path().join("cache"),
        )
        .expect("manager")
        .0
    }

    fn cache_files(&self) -> usize {
        std::fs::read_dir(self.dir.path().join("cache"))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    fn plugin_dirs(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.path().join("plugins"))
            .expect("plugins dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().to_string())
            .collect();
        names.sort();
        names
    }
}

fn invalid(r: Result<impl std::fmt::Debug, ServiceError>) -> String {
    match r {
        Err(ServiceError::InvalidArgument(m)) => m,
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

#[test]
fn install_configure_disable_remove() {
    let f = Fixture::new();
    let m = f.open(&PluginsConfig::default());
    let info = m
        .install(package("pii-redact.wasm"), &InstallOptions::default())
        .expect("install");
    assert_eq!(
        (kind(&info), info.state, info.always),
        (Some(Kind::Filter), PluginState::Active, true)
    );
    assert_eq!(granted(&info), ["alerts"]);
    assert_eq!(f.plugin_dirs(), ["pii-redact"]);
    assert!(m.set().get("pii-redact").is_some());
    assert_eq!(m.set().always_filters().len(), 1);

    let again = invalid(m.install(package("pii-redact.wasm"), &InstallOptions::default()));
    assert!(again.contains("already installed"), "{again}");

    let e = invalid(m.configure("pii-redact", "{\"emial\": false}"));
    assert!(e.contains("'emial'") && e.contains("email"), "{e}");
    let e = invalid(m.configure("pii-redact", "[1]"));
    assert!(e.contains("JSON object"), "{e}");
    let info = m
        .configure("pii-redact", "{\"email\": false}")
        .expect("configure");
    let config = info.config.expect("its configuration");
    assert_eq!(config["email"], serde_json::Value::Bool(false));
    assert_eq!(config["phone"], serde_json::Value::Bool(true));

    let before = m.set().get("pii-redact").map(|p| p.plugin.clone());
    let info = m.set_enabled("pii-redact", false).expect("disable");
    assert_eq!(info.state, PluginState::Disabled);
    assert!(m.set().get("pii-redact").is_none());
    m.set_enabled("pii-redact", true).expect("enable");
    // The same loaded plugin comes back: enabling does not reload.
    let after = m.set().get("pii-redact").map(|p| p.plugin.clone());
    assert!(before.zip(after).is_some_and(|(a, b)| a.same(&b)));

    m.reload("pii-redact").expect("reload");
    assert!(matches!(m.reload("nope"), Err(ServiceError::NotFound(_))));

    m.remove("pii-redact").expect("remove");
    assert!(m.list().is_empty());
    assert!(m.set().plugins.is_empty());
    assert!(f.plugin_dirs().is_empty());
    assert!(f.state.plugin_records().expect("records").is_empty());
}

#[test]
fn refused_installs_leave_nothing_behind() {
    let f = Fixture::new();
    let m = f.open(&PluginsConfig::default());
    // Imports a socket, the clock and a key-value store without a grant.
    let e = invalid(m.install(
        package("hostile-forbidden.wasm"),
        &InstallOptions::default(),
    ));
    assert!(e.contains("wasi:sockets"), "{e}");
    // Narrowing the grant below what the plugin imports refuses it, naming the import.
    let narrowed = InstallOptions {
        grant: GrantSettings {
            alerts: Some(false),
            ..GrantSettings::default()
        },
        ..InstallOptions::default()
    };
    let e = invalid(m.install(package("pii-redact.wasm"), &narrowed));
    assert!(e.contains("moed:plugin/alerts"), "{e}");
    let e = invalid(m.install(
        package("input-check.wasm"),
        &InstallOptions {
            config: Some("{\"max_chars\": \"many\"}".into()),
            ..InstallOptions::default()
        },
    ));
    assert!(e.contains("'max_chars'"), "{e}");
    let e = invalid(m.install(
        package("hostile-kv-hog.wasm"),
        &InstallOptions {
            grant: GrantSettings {
                kv_quota: Some(u64::MAX),
                ..GrantSettings::default()
            },
            ..InstallOptions::default()
        },
    ));
    assert!(e.contains("grant.kv_quota"), "{e}");
    let e = invalid(m.install(
        Package {
            manifest_text: "[plugin]\nname = \"x\"\n".into(),
            wasm: Vec::new(),
            source: "test".into(),
        },
        &InstallOptions::default(),
    ));
    assert!(e.contains("manifest"), "{e}");

    assert!(m.list().is_empty());
    assert!(f.plugin_dirs().is_empty());
    assert_eq!(f.cache_files(), 0);
    assert!(f.state.plugin_records().expect("records").is_empty());
    assert!(!f.state.plugin_kv_exists("kv-hog"));
}

#[test]
fn configuration_settings_are_fixed_and_installed_plugins_come_back() {
    let f = Fixture::new();
    let mut config = PluginsConfig::default();
    config.settings.insert(
        "input-check".into(),
        PluginSettings {
            enabled: Some(false),
            config: Some(serde_json::Map::from_iter([(
                "max_chars".to_string(),
                serde_json::Value::from(100),
            )])),
            ..PluginSettings::default()
        },
    );
    config.settings.insert(
        "pii-redact".into(),
        PluginSettings {
            grant: Some(GrantSettings {
                alerts: Some(false),
                ..GrantSettings::default()
            }),
            ..PluginSettings::default()
        },
    );
    {
        let m = f.open(&config);
        let info = m
            .install(package("input-check.wasm"), &InstallOptions::default())
            .expect("install");
        assert!(
            !info.enabled && info.pinned == ["enabled", "config"],
            "{info:?}"
        );
        let effective = info.config.clone().expect("its configuration");
        assert_eq!(effective["max_chars"], 100, "{effective:?}");
        let e = invalid(m.set_enabled("input-check", true));
        assert!(e.contains("plugins.input-check.enabled"), "{e}");
        let e = invalid(m.configure("input-check", "{}"));
        assert!(e.contains("plugins.input-check.config"), "{e}");
        // The configuration's grant takes alerts away: pii-redact imports them, so it is refused.
        let e = invalid(m.install(package("pii-redact.wasm"), &InstallOptions::default()));
        assert!(e.contains("moed:plugin/alerts"), "{e}");
        m.install(package("hostile-kv-hog.wasm"), &InstallOptions::default())
            .expect("install kv-hog");
        // Without the file's setting, input-check is enabled again after a SIGHUP.
        let mut relaxed = config.settings.clone();
        relaxed.remove("input-check");
        m.apply_settings(&relaxed);
        assert!(m.set().get("input-check").is_some());
        m.apply_settings(&config.settings);
        assert!(m.set().get("input-check").is_none());
    }
    // Reopened (as after a restart): the installed plugins load again with their settings.
    let m = f.open(&config);
    let names: Vec<(String, PluginState)> =
        m.list().into_iter().map(|i| (i.name, i.state)).collect();
    assert_eq!(
        names,
        [
            ("input-check".to_string(), PluginState::Disabled),
            ("kv-hog".to_string(), PluginState::Active)
        ]
    );
    let kv_hog = m.info("kv-hog").expect("info");
    assert!(kv_hog.host.is_some_and(|s| s.compiled_from_cache));
}

#[test]
fn a_broken_installed_plugin_does_not_stop_the_others() {
    let f = Fixture::new();
    {
        let m = f.open(&PluginsConfig::default());
        m.install(package("pii-redact.wasm"), &InstallOptions::default())
            .expect("install");
        m.install(package("input-check.wasm"), &InstallOptions::default())
            .expect("install");
    }
    std::fs::write(
        f.dir.path().join("plugins/pii-redact/plugin.wasm"),
        b"not a component",
    )
    .expect("break it");
    let m = f.open(&PluginsConfig::default());
    let info = m.info("pii-redact").expect("info");
    assert_eq!(info.state, PluginState::Broken);
    assert!(info.load_error.is_some_and(|e| e.contains("pii-redact")));
    assert!(m.set().get("input-check").is_some());
    assert!(m.set().get("pii-redact").is_none());
    assert!(matches!(
        m.set_enabled("pii-redact", true),
        Err(ServiceError::PluginFailed(_))
    ));
    // Installing it again over the broken one repairs it.
    m.install(
        package("pii-redact.wasm"),
        &InstallOptions {
            replace: true,
            ..InstallOptions::default()
        },
    )
    .expect("replace");
    assert_eq!(
        m.info("pii-redact").expect("info").state,
        PluginState::Active
    );
    assert_eq!(f.plugin_dirs(), ["input-check", "pii-redact"]);
}
