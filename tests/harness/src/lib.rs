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

/// Qwen3's published chat template, which renders `tools` and writes `<tool_call>` blocks.
pub const QWEN3_TEMPLATE: &str =
    include_str!("../../../daemon/engine/src/text/testdata/qwen3_chat_template.jinja");

/// A models directory in `work` for tool-call tests: `qwen3_tools`, the qwen3_moe fixture package
/// with Qwen3's chat template in its manifest and a 2048-token context, and `deepseek_v3` as it is (its template renders
/// no tools).
pub fn tools_models_dir(work: &Path) -> PathBuf {
    let fixtures = models_dir(work, &["qwen3_moe", "deepseek_v3"]);
    let dir = work.join("tool-models");
    for (from, to) in [("qwen3_moe", "qwen3_tools"), ("deepseek_v3", "deepseek_v3")] {
        copy_dir(&fixtures.join(from), &dir.join(to));
    }
    let manifest_path = dir.join("qwen3_tools/manifest.json");
    let text = std::fs::read_to_string(&manifest_path).expect("read manifest");
    let mut manifest: serde_json::Value = serde_json::from_str(&text).expect("manifest json");
    manifest["chat_template"] = QWEN3_TEMPLATE.into();
    manifest["name"] = "qwen3_tools".into();
    // Qwen3's tools section alone is ~700 tokens of the fixture's 512-token vocabulary; rope is
    // computed from positions in the graphs, so a longer context is only the manifest's limit.
    manifest["dims"]["context_length"] = 2048.into();
    std::fs::write(&manifest_path, manifest.to_string()).expect("write manifest");
    set_mode(work, 0o755);
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
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
    let default = archs.first().copied().unwrap_or_default();
    spawn_daemon_serving(moed, bus, work, &models, default, access)
}

/// As [`spawn_fixture_daemon`], serving the packages in `models` (a directory such as
/// [`tools_models_dir`] makes) with `default` the default model.
pub fn spawn_daemon_serving(
    moed: &Path,
    bus: &TestBus,
    work: &Path,
    models: &Path,
    default: &str,
    access: &str,
) -> (PathBuf, Child) {
    set_mode(work, 0o755);
    let config = work.join("moed.toml");
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
