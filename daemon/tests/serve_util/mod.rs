//! Test harness for `moed serve`: a private dbus-daemon, a fixture model package, the real daemon
//! binary started on that bus, and client helpers.

#![allow(dead_code)] // Each test binary uses a different part of the harness.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use moed_dbus::proxy::{EngineProxy, ModelsProxy};
pub use nix::sys::signal::Signal;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use zbus::Connection;

#[allow(unused_imports)] // Each test binary uses a different part of the harness.
pub use moed_test_harness::{
    TestBus, is_root, models_dir, ort_library, repo_root, set_mode, tools_models_dir,
};

pub const MODEL: &str = "deepseek_v3";

pub fn moed_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_moed"))
}

/// Settings of one daemon run.
pub struct DaemonSetup {
    pub work: tempfile::TempDir,
    pub models: PathBuf,
    pub extra_config: String,
    pub default_model: bool,
    /// The default model's name when `default_model` (the fixture [`MODEL`] unless changed).
    pub default_name: String,
}

impl DaemonSetup {
    pub fn new() -> DaemonSetup {
        DaemonSetup::with_models(&[MODEL])
    }

    pub fn with_models(archs: &[&str]) -> DaemonSetup {
        let work = tempfile::tempdir().expect("tempdir");
        set_mode(work.path(), 0o755);
        let models = models_dir(work.path(), archs);
        DaemonSetup {
            work,
            models,
            extra_config: String::new(),
            default_model: true,
            default_name: MODEL.to_string(),
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.work.path().join("moed.toml")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.work.path().join("state")
    }

    /// Writes moed.toml: the fixture models, the test bus's group authorizer, and `extra`
    /// (TOML lines appended to the `[service]` table unless they open a table themselves).
    pub fn write_config(&self, service: &str) {
        let default = if self.default_model {
            format!("default = \"{}\"\n", self.default_name)
        } else {
            String::new()
        };
        let text = format!(
            "[models]\ndirs = [\"{}\"]\n{default}\n[engine]\nort_library = \"{}\"\n\n[service]\nstate_directory = \"{}\"\n{service}\n\n[access]\nauthorizer = \"group\"\n{}\n",
            self.models.display(),
            ort_library().display(),
            self.state_dir().display(),
            self.extra_config,
        );
        std::fs::write(self.config_path(), text).expect("write moed.toml");
    }
}

/// A running `moed serve`.
pub struct Daemon {
    pub child: Child,
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Daemon {
    /// Starts `moed serve --address BUS --config FILE` and waits for the name on the bus.
    pub async fn start(bus: &TestBus, setup: &DaemonSetup, service: &str) -> Daemon {
        setup.write_config(service);
        let daemon = Daemon::spawn(bus, setup, &[]);
        daemon.wait_ready(bus).await;
        daemon
    }

    pub fn spawn(bus: &TestBus, setup: &DaemonSetup, extra_args: &[&str]) -> Daemon {
        Daemon::spawn_with_env(bus, setup, extra_args, &[])
    }

    pub fn spawn_with_env(
        bus: &TestBus,
        setup: &DaemonSetup,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> Daemon {
        let mut child = Command::new(moed_bin())
            .args(["serve", "--address", &bus.address, "--config"])
            .arg(setup.config_path())
            .args(extra_args)
            .env_remove("NOTIFY_SOCKET")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn moed serve");
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = log.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[moed] {line}");
                sink.lock().expect("log lock").push(line);
            }
        });
        Daemon {
            child,
            log,
            reader: Some(reader),
        }
    }

    pub async fn wait_ready(&self, bus: &TestBus) {
        let conn = bus.connect().await;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let state = match EngineProxy::new(&conn).await {
                Ok(engine) => engine.state().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if state == "ready" || state == "no-model" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "moed did not become ready; log: {:?}",
                self.log_lines()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().expect("log lock").clone()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.pid()), sig).expect("signal moed");
    }

    /// Waits for the process to exit; returns its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // Every line the process wrote is in the log once its reader is done.
                if let Some(reader) = self.reader.take() {
                    let _ = reader.join();
                }
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "moed did not exit; log: {:?}",
                self.log_lines()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Proxies read properties from the daemon each time: a caching proxy updates its cache from
/// PropertiesChanged in a task of its own, so right after a call it may still hold the old value.
pub async fn engine(conn: &Connection) -> EngineProxy<'static> {
    EngineProxy::builder(conn)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .expect("engine proxy")
}

pub async fn plugins(conn: &Connection) -> moed_dbus::plugins::PluginsProxy<'static> {
    moed_dbus::plugins::PluginsProxy::builder(conn)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .expect("plugins proxy")
}

/// Without root, the test user's primary group is made the admin group (managing calls need
/// it); root is always allowed.
pub fn admin_config() -> String {
    if is_root() {
        return String::new();
    }
    let gid = nix::unistd::getegid();
    let group = nix::unistd::Group::from_gid(gid)
        .ok()
        .flatten()
        .expect("primary group");
    format!("admin_group = \"{}\"\n", group.name)
}

pub async fn models(conn: &Connection) -> ModelsProxy<'static> {
    ModelsProxy::builder(conn)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .expect("models proxy")
}

/// `gdbus call` on the test bus as user `nobody` with the given supplementary groups.
pub fn gdbus_as_nobody(
    address: &str,
    groups: Option<&str>,
    method: &str,
    args: &[&str],
) -> (bool, String, String) {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534"]);
    match groups {
        Some(g) => cmd.arg(format!("--groups={g}")),
        None => cmd.arg("--clear-groups"),
    };
    cmd.args([
        "gdbus",
        "call",
        "--address",
        address,
        "--dest",
        "org.moed.Moed1",
        "--object-path",
        "/org/moed/Moed1",
        "--method",
        method,
    ]);
    cmd.args(args);
    run_tool(&mut cmd)
}

/// Runs a command line client and returns (success, stdout, stderr).
pub fn run_tool(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().expect("run client tool");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// A client connection to the test bus.
pub trait Connect {
    async fn connect(&self) -> Connection;
}

impl Connect for TestBus {
    async fn connect(&self) -> Connection {
        zbus::connection::Builder::address(self.address.as_str())
            .build()
            .await
            .expect("connect to the test bus")
    }
}
