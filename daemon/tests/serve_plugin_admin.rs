//! `org.moed.Moed1.Plugins` on a private bus with the real `moed serve`: installing from a path
//! and from a passed file descriptor, listing, enable/disable and configure changing what a
//! request gets, reload, remove, a hostile plugin refused at install (naming the import) leaving
//! nothing behind, an unprivileged caller refused, `PluginFailed` when a failing filter is
//! disabled, and alerts in the audit log surviving `kill -9`.

mod common;
mod serve_util;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use common::plugins_dir;
use futures_util::StreamExt;
use moed_dbus::plugins::PluginsProxy;
use moed_dbus::proxy::EngineProxy;
use moed_dbus::{GenerateOptions, InstallOptions, MoedError, PluginInfo};
use serve_util::*;
use zbus::OwnedVariant;

fn greedy(max_tokens: u32) -> HashMap<String, OwnedVariant> {
    GenerateOptions {
        max_tokens: Some(max_tokens),
        temperature: Some(0.0),
        seed: Some(7),
        ..GenerateOptions::default()
    }
    .to_dict()
}

const PII_PROMPT: &str = "Write to jane.doe@example.com and charge card 4111 1111 1111 1111.";

/// The alert codes a Complete of `prompt` got, with their sources.
async fn alert_codes(engine: &EngineProxy<'_>, prompt: &str) -> Vec<String> {
    let (_, info) = engine.complete(prompt, greedy(3)).await.expect("Complete");
    info.alerts
        .unwrap_or_default()
        .into_iter()
        .map(|(_, code, _, source)| format!("{source}:{code}"))
        .collect()
}

fn wasm(name: &str) -> String {
    plugins_dir()
        .join(format!("{name}.wasm"))
        .display()
        .to_string()
}

/// `InstallFd` with the manifest beside `NAME.wasm` and the component as a file descriptor.
async fn install_fd(
    plugins: &PluginsProxy<'_>,
    name: &str,
    options: &InstallOptions,
) -> Result<PluginInfo, MoedError> {
    let dir = plugins_dir();
    let manifest =
        std::fs::read_to_string(dir.join(format!("{name}.toml"))).expect("read the manifest");
    let file = std::fs::File::open(dir.join(format!("{name}.wasm"))).expect("open the component");
    let fd = zbus::OwnedFd::from(std::os::fd::OwnedFd::from(file));
    plugins.install_fd(&manifest, fd, options.to_dict()).await
}

fn names(list: &[PluginInfo]) -> Vec<&str> {
    list.iter().map(|p| p.name.as_str()).collect()
}

fn installed_dirs(setup: &DaemonSetup) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(setup.state_dir().join("plugins"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_enable_disable_configure_reload_remove() {
    let bus = TestBus::start();
    let setup = DaemonSetup::new();
    let _daemon = Daemon::start(&bus, &setup, "").await;
    let conn = bus.connect().await;
    let engine = engine(&conn).await;
    let plugins = PluginsProxy::new(&conn).await.expect("plugins proxy");

    assert!(plugins.list().await.expect("List").is_empty());
    assert!(alert_codes(&engine, PII_PROMPT).await.is_empty());

    let info = plugins
        .install(&wasm("pii-redact"), HashMap::new())
        .await
        .expect("Install from a path");
    assert_eq!(
        (info.name.as_str(), info.kind.as_str(), info.status.as_str()),
        ("pii-redact", "filter", "active")
    );
    assert!(info.always && info.enabled);
    assert_eq!(info.origin, "installed");
    assert_eq!(info.granted, ["alerts"]);
    let info = install_fd(&plugins, "input-check", &InstallOptions::default())
        .await
        .expect("InstallFd");
    assert_eq!(
        (info.source.as_str(), info.status.as_str()),
        ("fd", "active")
    );
    assert_eq!(
        names(&plugins.list().await.expect("List")),
        ["input-check", "pii-redact"]
    );
    assert_eq!(installed_dirs(&setup), ["input-check", "pii-redact"]);

    // The installed filter acts on the next request.
    assert_eq!(
        alert_codes(&engine, PII_PROMPT).await,
        ["pii-redact:pii.card", "pii-redact:pii.email"]
    );

    let info = plugins.disable("pii-redact").await.expect("Disable");
    assert_eq!(info.status, "disabled");
    assert!(alert_codes(&engine, PII_PROMPT).await.is_empty());
    plugins.enable("pii-redact").await.expect("Enable");
    assert_eq!(alert_codes(&engine, PII_PROMPT).await.len(), 2);

    // A configuration key the schema does not know is named; a known one changes behaviour.
    let err = plugins
        .configure("pii-redact", "{\"emails\": false}")
        .await
        .expect_err("unknown key");
    let MoedError::InvalidArgument(message) = &err else {
        panic!("expected InvalidArgument, got {err:?}");
    };
    assert!(message.contains("'emails'"), "{message}");
    let err = plugins
        .configure("pii-redact", "{\"window\": 1}")
        .await
        .expect_err("out of range");
    assert!(err.message().contains("'window'"), "{err:?}");
    let info = plugins
        .configure("pii-redact", "{\"email\": false}")
        .await
        .expect("Configure");
    assert!(info.config.contains("\"email\":false"), "{}", info.config);
    assert_eq!(
        alert_codes(&engine, PII_PROMPT).await,
        ["pii-redact:pii.card"]
    );

    let info = plugins.reload("pii-redact").await.expect("Reload");
    assert_eq!(info.status, "active");
    assert!(info.config.contains("\"email\":false"), "{}", info.config);
    assert_eq!(alert_codes(&engine, PII_PROMPT).await.len(), 1);

    plugins.remove("pii-redact").await.expect("Remove");
    assert!(matches!(
        plugins.info("pii-redact").await,
        Err(MoedError::NotFound(_))
    ));
    assert!(matches!(
        plugins.enable("pii-redact").await,
        Err(MoedError::NotFound(_))
    ));
    assert_eq!(names(&plugins.list().await.expect("List")), ["input-check"]);
    assert_eq!(installed_dirs(&setup), ["input-check"]);
    assert!(alert_codes(&engine, PII_PROMPT).await.is_empty());

    // Installing again over an installed plugin needs `replace`.
    let err = install_fd(&plugins, "input-check", &InstallOptions::default())
        .await
        .expect_err("already installed");
    assert!(err.message().contains("replace"), "{err:?}");
    install_fd(
        &plugins,
        "input-check",
        &InstallOptions {
            replace: true,
            ..InstallOptions::default()
        },
    )
    .await
    .expect("replace");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_and_unauthorized_installs_are_refused() {
    let bus = TestBus::start();
    let setup = DaemonSetup::new();
    let _daemon = Daemon::start(&bus, &setup, "").await;
    let conn = bus.connect().await;
    let plugins = PluginsProxy::new(&conn).await.expect("plugins proxy");

    // Imports wasi:sockets, the clocks and a key-value store that nothing grants.
    for result in [
        plugins
            .install(&wasm("hostile-forbidden"), HashMap::new())
            .await,
        install_fd(&plugins, "hostile-forbidden", &InstallOptions::default()).await,
    ] {
        let err = result.expect_err("forbidden imports");
        let MoedError::InvalidArgument(message) = &err else {
            panic!("expected InvalidArgument, got {err:?}");
        };
        assert!(
            message.contains("wasi:sockets") && message.contains("forbidden"),
            "{message}"
        );
    }
    // Built against an interface this host does not link.
    let err = plugins
        .install(&wasm("hostile-future-version"), HashMap::new())
        .await
        .expect_err("future version");
    assert!(err.message().contains("0.9"), "{err:?}");
    // Unknown option keys and relative paths are named.
    let mut bad = HashMap::new();
    bad.insert("enable".to_string(), OwnedVariant::from(true));
    let err = plugins
        .install(&wasm("pii-redact"), bad)
        .await
        .expect_err("unknown option");
    assert!(err.message().contains("'enable'"), "{err:?}");
    let err = plugins
        .install("pii-redact.wasm", HashMap::new())
        .await
        .expect_err("relative path");
    assert!(err.message().contains("absolute"), "{err:?}");
    assert!(plugins.list().await.expect("List").is_empty());
    assert!(installed_dirs(&setup).is_empty());

    if !is_root() {
        eprintln!("skipping the unprivileged caller: needs root to run gdbus as nobody");
        return;
    }
    let (ok, _, stderr) = gdbus_as_nobody(
        &bus.address,
        None,
        "org.moed.Moed1.Plugins.Install",
        &[&wasm("pii-redact"), "{}"],
    );
    assert!(!ok);
    assert!(
        stderr.contains("org.moed.Moed1.Error.AccessDenied")
            && stderr.contains("org.moed.manage-plugins"),
        "{stderr}"
    );
    let (ok, _, stderr) = gdbus_as_nobody(
        &bus.address,
        None,
        "org.moed.Moed1.Plugins.RecentAlerts",
        &["5"],
    );
    assert!(!ok && stderr.contains("AccessDenied"), "{stderr}");
    let (ok, stdout, stderr) =
        gdbus_as_nobody(&bus.address, None, "org.moed.Moed1.Plugins.List", &[]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("@aa{sv} []"), "{stdout}");
    assert!(plugins.list().await.expect("List").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_filter_is_disabled_and_signalled() {
    let bus = TestBus::start();
    let setup = DaemonSetup::new();
    let _daemon = Daemon::start(&bus, &setup, "").await;
    let conn = bus.connect().await;
    let engine = engine(&conn).await;
    let plugins = PluginsProxy::new(&conn).await.expect("plugins proxy");
    let mut failed = plugins
        .receive_plugin_failed()
        .await
        .expect("subscribe to PluginFailed");

    let info = plugins
        .install(
            &wasm("hostile-filter-misbehave"),
            InstallOptions {
                config: Some("{\"mode\": \"trap\"}".into()),
                ..InstallOptions::default()
            }
            .to_dict(),
        )
        .await
        .expect("install the trapping filter");
    assert_eq!(info.name, "filter-misbehave");

    // Filters fail closed: every request is refused, naming the plugin.
    for _ in 0..5 {
        let err = engine
            .complete("Hello there", greedy(2))
            .await
            .expect_err("refused");
        let MoedError::PluginFailed(message) = &err else {
            panic!("expected PluginFailed, got {err:?}");
        };
        assert!(message.contains("filter-misbehave"), "{message}");
    }
    let disabled = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let signal = failed.next().await.expect("signal stream");
            let args = signal.args().expect("PluginFailed args");
            assert_eq!(
                (args.name(), args.kind()),
                (&"filter-misbehave".to_string(), &"filter".to_string())
            );
            if *args.disabled() {
                return args.message().clone();
            }
        }
    })
    .await
    .expect("PluginFailed with disabled = true");
    assert!(disabled.contains("trapped"), "{disabled}");

    let info = plugins.info("filter-misbehave").await.expect("Info");
    assert_eq!(info.status, "failing");
    assert!(
        info.disabled_reason
            .is_some_and(|r| r.contains("consecutive"))
    );
    assert_eq!(info.consecutive_failures, 5);
    // Still fail closed while it is failing; switched off by the administrator, requests pass.
    assert!(matches!(
        engine.complete("Hello there", greedy(2)).await,
        Err(MoedError::PluginFailed(_))
    ));
    plugins.disable("filter-misbehave").await.expect("Disable");
    engine
        .complete("Hello there", greedy(2))
        .await
        .expect("passes without the filter");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installed_plugins_and_alerts_survive_kill_9() {
    let bus = TestBus::start();
    let setup = DaemonSetup::new();
    let daemon = Daemon::start(&bus, &setup, "").await;
    let conn = bus.connect().await;
    let plugins = PluginsProxy::new(&conn).await.expect("plugins proxy");
    install_fd(&plugins, "input-check", &InstallOptions::default())
        .await
        .expect("InstallFd");
    plugins
        .install(
            &wasm("pii-redact"),
            InstallOptions {
                enabled: Some(false),
                ..InstallOptions::default()
            }
            .to_dict(),
        )
        .await
        .expect("Install disabled");
    let para = "Please summarise the quarterly report for the board meeting tomorrow.";
    let (_, info) = engine(&conn)
        .await
        .complete(&format!("{para}\n{para}"), greedy(2))
        .await
        .expect("Complete");
    assert_eq!(info.alerts.as_ref().map(|a| a.len()), Some(1), "{info:?}");
    // Acknowledged: the reply came after the flush. No clean shutdown.
    daemon.signal(Signal::SIGKILL);
    drop(daemon);

    let daemon = Daemon::start(&bus, &setup, "").await;
    let conn = bus.connect().await;
    let plugins = PluginsProxy::new(&conn).await.expect("plugins proxy");
    let list = plugins.list().await.expect("List");
    let states: Vec<(&str, &str)> = list
        .iter()
        .map(|p| (p.name.as_str(), p.status.as_str()))
        .collect();
    assert_eq!(
        states,
        [("input-check", "active"), ("pii-redact", "disabled")]
    );
    assert!(list.iter().all(|p| p.compiled_from_cache), "{list:?}");
    let log = plugins.recent_alerts(10).await.expect("RecentAlerts");
    assert_eq!(log.len(), 1, "{log:?}");
    let entry = &log[0];
    assert_eq!(
        (entry.plugin.as_str(), entry.code.as_str()),
        ("input-check", "input.repeated")
    );
    assert_eq!(entry.request_id.as_deref(), Some(info.request_id.as_str()));
    assert_eq!(entry.uid, Some(nix::unistd::geteuid().as_raw()));
    assert!(entry.time > 1.0e9 && !entry.message.is_empty());
    assert!(Path::new(&setup.state_dir().join("plugins/input-check/plugin.wasm")).is_file());
    drop(daemon);
}
