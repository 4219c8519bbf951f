//! The crate layering rules, checked on the resolved dependency tree (`cargo tree`).
//!
//! The engine floor must build without any transport, async runtime, plugin host or database, so
//! that it can be linked by small tools and reasoned about alone. See ARCHITECTURE.md.

use std::path::Path;
use std::process::Command;

/// Crates that must not appear among `package`'s normal (non-dev, non-build) dependencies.
fn assert_free_of(package: &str, forbidden: &[&str]) {
    let names = normal_dependencies(package, &[]);
    let found: Vec<&&str> = forbidden.iter().filter(|f| names.contains(**f)).collect();
    assert!(found.is_empty(), "{package} depends on {found:?}");
}

/// The names in `package`'s normal dependency tree (itself included), built with `flags`.
fn normal_dependencies(package: &str, flags: &[&str]) -> std::collections::BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let out = Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "--locked",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .args(flags)
        .args(["--format", "{p}", "-p", package, "--manifest-path"])
        .arg(&manifest)
        .output()
        .expect("run cargo tree");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cargo tree -p {package} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names: std::collections::BTreeSet<String> = stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    assert!(
        names.contains(package),
        "cargo tree did not list {package}: {stdout}"
    );
    names
}

/// What the engine floor and the string rules must never link.
const NOT_IN_THE_FLOOR: &[&str] = &[
    "tokio",
    "zbus",
    "zbus_polkit",
    "wasmtime",
    "sled",
    "rusqlite",
    "tokio-postgres",
    "moed-dbus",
    "moed-plugins",
];

#[test]
fn wire_rules_have_no_runtime_transport_plugin_or_database_dependency() {
    assert_free_of("moed-wire", NOT_IN_THE_FLOOR);
}

#[test]
fn engine_has_no_runtime_transport_plugin_or_database_dependency() {
    assert_free_of("moed-engine", NOT_IN_THE_FLOOR);
}

/// The service core and the plugin host are transport-neutral: D-Bus is the `moed` binary's
/// adapter (`serve/`), and the contract crate is its alone.
const NOT_IN_THE_CORE: &[&str] = &["zbus", "zbus_polkit", "moed-dbus"];

#[test]
fn service_core_has_no_dbus_dependency() {
    assert_free_of("moed-service", NOT_IN_THE_CORE);
}

#[test]
fn plugin_host_has_no_dbus_dependency() {
    assert_free_of("moed-plugins", NOT_IN_THE_CORE);
}

/// The database drivers are the service's features `postgres` and `sqlite`: a build without them
/// links neither.
#[test]
fn service_core_without_its_database_features_links_no_driver() {
    let names = normal_dependencies("moed-service", &["--no-default-features"]);
    for driver in ["tokio-postgres", "rusqlite", "libsqlite3-sys"] {
        assert!(!names.contains(driver), "moed-service links {driver}");
    }
    let with = normal_dependencies("moed-service", &[]);
    assert!(with.contains("tokio-postgres") && with.contains("rusqlite"));
}

/// The code the plugin SDK shares is built for wasm32-wasip2 by the guests: nothing but itself.
#[test]
fn shared_crate_has_no_dependencies() {
    let names = normal_dependencies("moed-shared", &[]);
    assert_eq!(names.into_iter().collect::<Vec<_>>(), ["moed-shared"]);
}

/// The HTTP bridge is a small D-Bus client: no engine, service core, plugin host, ONNX Runtime or
/// database in its process.
#[test]
fn http_bridge_links_no_engine_or_service() {
    assert_free_of(
        "moed-http",
        &[
            "moed",
            "moed-engine",
            "moed-service",
            "moed-plugins",
            "ort",
            "wasmtime",
            "rusqlite",
            "tokio-postgres",
        ],
    );
}
