//! Test harness for `moed-http`: a private dbus-daemon, the real `moed serve` on it with the
//! fixture models, the real bridge started by `systemd-socket-activate` (so the `LISTEN_FDS`
//! path is the one tested), curl over the unix socket, and a bus monitor that sees what the
//! daemon told the bridge.

#![allow(dead_code, unused_imports)] // Each test binary uses a different part of the harness.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use moed_dbus::{GenerationInfo, REQUEST_INTERFACE, REQUEST_PATH_PREFIX};
use zbus::{MatchRule, MessageStream, message::Type as MessageType};

pub use moed_test_harness::{TestBus, is_root, models_dir, ort_library, set_mode};

pub const MODEL: &str = "deepseek_v3";
pub const SECOND: &str = "qwen3_moe";
/// The model of `tools_models_dir` whose chat template renders tools.
pub const TOOLS_MODEL: &str = "qwen3_tools";

pub fn bridge_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_moed-http"))
}

/// `moed` from the same build: `$MOED_HTTP_TEST_MOED`, else next to moed-http (`cargo test
/// --workspace` builds both; `cargo test -p moed-http` alone needs `cargo build -p moed`).
pub fn moed_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("MOED_HTTP_TEST_MOED") {
        return PathBuf::from(path);
    }
    let path = bridge_bin()
        .parent()
        .expect("moed-http has a directory")
        .join("moed");
    assert!(
        path.is_file(),
        "moed is not built at {}: run `cargo build -p moed` (same profile) or `cargo test --workspace`, or set MOED_HTTP_TEST_MOED",
        path.display()
    );
    path
}

/// A running `moed serve --address BUS` with the fixture models and the group authorizer.
pub struct Daemon {
    child: Child,
    pub work: tempfile::TempDir,
}

impl Daemon {
    /// `access` holds extra lines of the `[access]` table.
    pub async fn start(bus: &TestBus, access: &str) -> Daemon {
        let work = tempfile::tempdir().expect("tempdir");
        let (_, child) = moed_test_harness::spawn_fixture_daemon(
            &moed_bin(),
            bus,
            work.path(),
            &[MODEL, SECOND],
            access,
        );
        Daemon { child, work }.ready(bus).await
    }

    /// Serving [`TOOLS_MODEL`] (a fixture with Qwen3's chat template, which renders tools; the
    /// default) and [`MODEL`] (whose template renders none).
    pub async fn start_tools(bus: &TestBus) -> Daemon {
        let work = tempfile::tempdir().expect("tempdir");
        let models = moed_test_harness::tools_models_dir(work.path());
        let (_, child) = moed_test_harness::spawn_daemon_serving(
            &moed_bin(),
            bus,
            work.path(),
            &models,
            TOOLS_MODEL,
            "",
        );
        Daemon { child, work }.ready(bus).await
    }

    async fn ready(self, bus: &TestBus) -> Daemon {
        let conn = connect(bus).await;
        let engine = moed_dbus::proxy::EngineProxy::builder(&conn)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .expect("engine proxy");
        let deadline = Instant::now() + Duration::from_secs(120);
        while engine.state().await.ok().as_deref() != Some("ready") {
            assert!(Instant::now() < deadline, "moed did not become ready");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn connect(bus: &TestBus) -> zbus::Connection {
    zbus::connection::Builder::address(bus.address.as_str())
        .build()
        .await
        .expect("connect to the test bus")
}

/// The bridge under `systemd-socket-activate`, listening on `dir/http.sock` (mode 0666, so
/// that other users may connect), optionally run as user `nobody`.
pub struct Bridge {
    child: Child,
    pub socket: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl Bridge {
    pub fn start(bus: &TestBus, extra: &[&str]) -> Bridge {
        Bridge::start_as(bus, extra, None)
    }

    /// `nobody_groups`: run the bridge as `nobody` with these supplementary groups (`""`: none).
    pub fn start_as(bus: &TestBus, extra: &[&str], nobody_groups: Option<&str>) -> Bridge {
        let dir = tempfile::tempdir().expect("tempdir");
        set_mode(dir.path(), 0o755);
        let socket = dir.path().join("http.sock");
        let mut cmd = Command::new("systemd-socket-activate");
        cmd.arg("--listen").arg(&socket);
        if let Some(groups) = nobody_groups {
            // The activator binds as root; the bridge it runs drops to nobody.
            cmd.args(["setpriv", "--reuid=65534", "--regid=65534"]);
            if groups.is_empty() {
                cmd.arg("--clear-groups");
            } else {
                cmd.arg(format!("--groups={groups}"));
            }
        }
        cmd.arg(bridge_bin())
            .args(["--bus", &bus.address, "--log-level", "debug"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let child = cmd
            .spawn()
            .expect("systemd-socket-activate (package systemd) must be installed");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "the socket was not created");
            std::thread::sleep(Duration::from_millis(20));
        }
        set_mode(&socket, 0o666);
        Bridge {
            child,
            socket,
            _dir: Some(dir),
        }
    }
}

impl Bridge {
    /// The bridge on a loopback TCP port (systemd passes it like the unix one), accepting the
    /// tokens in `token_file`. Returns the bridge and its port.
    pub fn start_tcp(bus: &TestBus, token_file: &Path) -> (Bridge, u16) {
        // A free port, released for the activator to bind (another process may take it in
        // between; then the activator fails and the test says so).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("systemd-socket-activate")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg(bridge_bin())
            .args(["--bus", &bus.address, "--token-file"])
            .arg(token_file)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("systemd-socket-activate");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nothing listens on port {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        (
            Bridge {
                child,
                socket: PathBuf::new(),
                _dir: None,
            },
            port,
        )
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP exchange by curl: status and body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not one JSON document ({e}): {self:?}"))
    }

    /// The OpenAI error object, checked for its four fields.
    #[track_caller]
    pub fn error(&self, status: u16) -> serde_json::Value {
        assert_eq!(self.status, status, "{self:?}");
        let body = self.json();
        let err = body["error"].clone();
        for key in ["message", "type", "param", "code"] {
            assert!(err.get(key).is_some(), "no {key}: {body}");
        }
        err
    }
}

/// curl over the unix socket, optionally as `nobody` with the given groups.
pub struct Curl {
    cmd: Command,
}

impl Curl {
    pub fn new(socket: &Path) -> Curl {
        Curl::as_user(socket, None)
    }

    /// curl to a TCP port on loopback (`post`/`get` paths are relative to it).
    pub fn tcp(port: u16) -> Curl {
        let mut cmd = Command::new("curl");
        cmd.args(["--silent", "--show-error", "--no-buffer", "--connect-to"])
            .arg(format!("localhost:80:127.0.0.1:{port}"))
            .args(["--write-out", "\n%{http_code}"]);
        Curl { cmd }
    }

    /// As `nobody` (65534) with these supplementary groups (`Some("")`: none).
    pub fn as_nobody(socket: &Path, groups: &str) -> Curl {
        Curl::as_user(socket, Some(groups))
    }

    fn as_user(socket: &Path, nobody_groups: Option<&str>) -> Curl {
        let mut cmd = match nobody_groups {
            None => Command::new("curl"),
            Some(groups) => {
                let mut c = Command::new("setpriv");
                c.args(["--reuid=65534", "--regid=65534"]);
                if groups.is_empty() {
                    c.arg("--clear-groups");
                } else {
                    c.arg(format!("--groups={groups}"));
                }
                c.arg("curl");
                c
            }
        };
        cmd.args(["--silent", "--show-error", "--no-buffer", "--unix-socket"])
            .arg(socket)
            .args(["--write-out", "\n%{http_code}"]);
        Curl { cmd }
    }

    pub fn post(mut self, path: &str, body: &str) -> Curl {
        self.cmd
            .args([
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                body,
            ])
            .arg(format!("http://localhost{path}"));
        self
    }

    pub fn get(mut self, path: &str) -> Curl {
        self.cmd.arg(format!("http://localhost{path}"));
        self
    }

    pub fn arg(mut self, arg: &str) -> Curl {
        self.cmd.arg(arg);
        self
    }

    pub fn run(mut self) -> Reply {
        let out: Output = self.cmd.output().expect("curl must be installed");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        Reply {
            status: code.trim().parse().unwrap_or_else(|_| {
                panic!(
                    "curl gave no status: {text:?} {}",
                    String::from_utf8_lossy(&out.stderr)
                )
            }),
            body: body.to_string(),
        }
    }

    pub fn spawn(mut self) -> Child {
        self.cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("curl")
    }
}

/// Sees every request's signals on the bus (a monitor: the test runs as root).
pub struct Monitor {
    stream: MessageStream,
    _conn: zbus::Connection,
}

/// A request signal as the monitor saw it.
#[derive(Debug)]
pub enum Seen {
    Token,
    Finished(String, Box<GenerationInfo>),
}

impl Monitor {
    pub async fn start(bus: &TestBus) -> Monitor {
        let conn = connect(bus).await;
        let rule = MatchRule::builder()
            .msg_type(MessageType::Signal)
            .interface(REQUEST_INTERFACE)
            .path_namespace(REQUEST_PATH_PREFIX)
            .build()
            .expect("match rule");
        let stream = MessageStream::from(&conn);
        zbus::fdo::MonitoringProxy::new(&conn)
            .await
            .expect("monitoring proxy")
            .become_monitor(&[rule], 0)
            .await
            .expect("BecomeMonitor (the tests run as root)");
        Monitor {
            stream,
            _conn: conn,
        }
    }

    /// The next request signal (within 60 s).
    pub async fn next(&mut self) -> Seen {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(60), self.stream.next())
                .await
                .expect("a request signal within 60 s")
                .expect("the monitor connection is open")
                .expect("a message");
            let header = msg.header();
            match header.member().map(|m| m.as_str()) {
                Some("Token") => return Seen::Token,
                Some("Finished") => {
                    let (reason, info): (String, GenerationInfo) =
                        msg.body().deserialize().expect("Finished's body");
                    return Seen::Finished(reason, Box::new(info));
                }
                _ => continue,
            }
        }
    }

    /// Skips tokens up to the next `Finished`.
    pub async fn finished(&mut self) -> (String, GenerationInfo) {
        loop {
            if let Seen::Finished(reason, info) = self.next().await {
                return (reason, *info);
            }
        }
    }
}
