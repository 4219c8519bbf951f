//! Test harness for `moectl`: a private dbus-daemon, the real `moed serve` on it with fixture
//! model packages, and a runner for the real `moectl` binary (optionally as user `nobody`).
//! The same approach as daemon/tests/serve_util, for a crate that sees moed only as a program.

#![allow(dead_code)] // Each test binary uses a different part of the harness.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[allow(unused_imports)] // Each test binary uses a different part of the harness.
pub use moed_test_harness::{TestBus, is_root, models_dir, ort_library, set_mode};

pub const MODEL: &str = "deepseek_v3";
pub const SECOND: &str = "qwen3_moe";

pub fn moectl_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_moectl"))
}

/// `moed` from the same build: `$MOECTL_TEST_MOED`, else next to moectl (`cargo test --workspace` and
/// `cargo build --workspace` build both; `cargo test -p moectl` alone does not build moed).
pub fn moed_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("MOECTL_TEST_MOED") {
        return PathBuf::from(path);
    }
    let path = moectl_bin()
        .parent()
        .expect("moectl has a directory")
        .join("moed");
    assert!(
        path.is_file(),
        "moed is not built at {}: run `cargo build -p moed` (same profile) or `cargo test --workspace`, or set MOECTL_TEST_MOED",
        path.display()
    );
    path
}

/// A running `moed serve --address BUS` with the fixture models and the group authorizer.
pub struct Daemon {
    child: Child,
    pub work: tempfile::TempDir,
    pub config: PathBuf,
}

impl Daemon {
    /// `access` holds extra lines of the `[access]` table.
    pub fn start(bus: &TestBus, access: &str) -> Daemon {
        let work = tempfile::tempdir().expect("tempdir");
        let (config, child) = moed_test_harness::spawn_fixture_daemon(
            &moed_bin(),
            bus,
            work.path(),
            &[MODEL, SECOND],
            access,
        );
        let daemon = Daemon {
            child,
            work,
            config,
        };
        daemon.wait_ready(bus);
        daemon
    }

    /// Polls `moectl status --json` (itself under test) until the daemon serves.
    fn wait_ready(&self, bus: &TestBus) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let run = Ctl::new(bus).args(["--json", "status"]).run();
            if run.code == 0
                && let Ok(status) = serde_json::from_str::<serde_json::Value>(&run.stdout)
                && status["state"] == "ready"
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "moed did not become ready: {}",
                run.stderr
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The result of one moectl run.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {self:?}"))
    }

    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(self.code, 0, "moectl failed: {self:?}");
        self
    }

    #[track_caller]
    pub fn fails_with(self, code: i32, needle: &str) -> Run {
        assert_eq!(self.code, code, "exit status: {self:?}");
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}: {self:?}"
        );
        self
    }
}

/// One `moectl` command line against a test bus.
pub struct Ctl {
    cmd: Command,
    stdin: Option<String>,
}

impl Ctl {
    pub fn new(bus: &TestBus) -> Ctl {
        Ctl::on(&bus.address)
    }

    pub fn on(address: &str) -> Ctl {
        let mut cmd = Command::new(moectl_bin());
        cmd.args(["--bus", address])
            .env_remove("MOECTL_BUS")
            .env_remove("NO_COLOR");
        Ctl { cmd, stdin: None }
    }

    /// As user `nobody` (65534) with the given supplementary groups (none: `--clear-groups`).
    pub fn as_nobody(bus: &TestBus, groups: Option<&str>) -> Ctl {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534"]);
        match groups {
            Some(g) => cmd.arg(format!("--groups={g}")),
            None => cmd.arg("--clear-groups"),
        };
        cmd.arg(moectl_bin())
            .args(["--bus", &bus.address])
            .env_remove("MOECTL_BUS")
            .env("HOME", "/nonexistent");
        Ctl { cmd, stdin: None }
    }

    pub fn args<I, S>(mut self, args: I) -> Ctl
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.cmd.args(args);
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Ctl {
        self.cmd.env(key, value);
        self
    }

    pub fn stdin(mut self, text: &str) -> Ctl {
        self.stdin = Some(text.to_string());
        self
    }

    pub fn run(mut self) -> Run {
        self.cmd
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = self.cmd.spawn().expect("spawn moectl");
        if let Some(text) = self.stdin.take() {
            let mut stdin = child.stdin.take().expect("stdin");
            stdin.write_all(text.as_bytes()).expect("write stdin");
        }
        let out = child.wait_with_output().expect("wait for moectl");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).to_string(),
        }
    }

    /// Starts moectl and returns the child (for `alerts`, which runs until interrupted).
    pub fn spawn(mut self) -> Child {
        self.cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        self.cmd.spawn().expect("spawn moectl")
    }
}
