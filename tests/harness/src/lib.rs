//! Shared by moed's and moectl's integration tests: the repository paths, the ONNX Runtime
//! library, a private dbus-daemon, the fixture model packages, and a throwaway PostgreSQL cluster
//! (postgres.rs).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub mod postgres;

/// The workspace root (this crate is `tests/harness/`).
pub fn repo_root() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::canonicalize(&p).unwrap_or(p)
}

/// target/plugins, built once per test binary by plugins/build.sh (a no-op when nothing changed).
pub fn plugins_dir() -> PathBuf {
    static BUILT: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    let r = BUILT.get_or_init(|| {
        let script = repo_root().join("plugins/build.sh");
        let out = std::process::Command::new(&script)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        if !out.status.success() {
            return Err(format!(
                "{} failed:\n{}{}",
                script.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(repo_root().join("target/plugins"))
    });
    r.clone().unwrap_or_else(|e| panic!("{e}"))
}

pub fn ort_library() -> PathBuf {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        return PathBuf::from(p);
    }
    let dir = repo_root().join("target/onnxruntime");
    std::fs::read_dir(&dir)
        .ok()
        .and_then(|entries| {
            entries.filter_map(|e| e.ok().map(|e| e.path())).find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("libonnxruntime.so."))
            })
        })
        .unwrap_or_else(|| {
            panic!(
                "no ONNX Runtime in {}: run packaging/onnxruntime/provision.sh",
                dir.display()
            )
        })
}

pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A private bus every local user may connect to (the access tests connect as `nobody`).
pub struct TestBus {
    pub address: String,
    pid: i32,
    _dir: tempfile::TempDir,
}

impl TestBus {
    pub fn start() -> TestBus {
        let dir = tempfile::tempdir().expect("tempdir");
        set_mode(dir.path(), 0o755);
        let conf = dir.path().join("bus.conf");
        std::fs::write(
            &conf,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:dir={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
                dir.path().display()
            ),
        )
        .expect("write bus.conf");
        let out = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", conf.display()))
            .args(["--fork", "--print-address=1", "--print-pid=1"])
            .output()
            .expect("dbus-daemon must be installed (apt-get install dbus)");
        assert!(
            out.status.success(),
            "dbus-daemon failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let mut lines = text.lines();
        let address = lines.next().expect("address line").trim().to_string();
        let pid: i32 = lines.next().expect("pid line").trim().parse().expect("pid");
        TestBus {
            address,
            pid,
            _dir: dir,
        }
    }

    /// Ends the bus itself, as when dbus-daemon dies under a running service.
    pub fn stop(&self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
}

impl Drop for TestBus {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The fixture packages: the CI-built ones under $MOE_FIXTURE_PACKAGES
/// (else target/fixture-packages), else exported into
/// `work` by `python3 -m moe_export`.
pub fn models_dir(work: &Path, archs: &[&str]) -> PathBuf {
    let prebuilt = std::env::var_os("MOE_FIXTURE_PACKAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/fixture-packages"));
    if archs
        .iter()
        .all(|a| prebuilt.join(a).join("manifest.json").is_file())
    {
        return prebuilt;
    }
    let dir = work.join("models");
    for arch in archs {
        let out = Command::new("python3")
            .args(["-m", "moe_export"])
            .arg(repo_root().join("models/fixtures").join(arch))
            .arg(dir.join(arch))
            .args(["--quiet", "--force"])
            .env("PYTHONPATH", repo_root().join("models/export"))
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "moe_export {arch} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    dir
}

/// A `moed serve` for client-side tests (moectl, moed-http): `moed.toml` in `work` serving the
/// fixture packages `archs` (the first one the default) with its state under `work/state` and
/// the group authorizer; `access` holds extra lines of the `[access]` table. Returns the config
/// path and the child, which the caller waits on for readiness in its own way.
pub fn spawn_fixture_daemon(
    moed: &Path,
    bus: &TestBus,
    work: &Path,
    archs: &[&str],
    access: &str,
) -> (PathBuf, Child) {
    set_mode(work, 0o755);
    let models = models_dir(work, archs);
    let config = work.join("moed.toml");
    let default = archs.first().copied().unwrap_or_default();
    std::fs::write(
        &config,
        format!(
            "[models]\ndirs = [\"{}\"]\ndefault = \"{default}\"\n\n[engine]\nort_library = \"{}\"\n\n[service]\nstate_directory = \"{}\"\n\n[access]\nauthorizer = \"group\"\n{access}\n",
            models.display(),
            ort_library().display(),
            work.join("state").display(),
        ),
    )
    .expect("write moed.toml");
    let child = Command::new(moed)
        .args(["serve", "--address", &bus.address, "--config"])
        .arg(&config)
        .env_remove("NOTIFY_SOCKET")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn moed serve");
    (config, child)
}
