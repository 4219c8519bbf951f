//! moed is no confused deputy, and knows its memory limit: `Plugins.Install` and `Models.Info` /
//! `Models.Load` read a path with the caller's permissions (a root-only file's content is never
//! echoed, and a hidden path answers exactly like a missing one); `InstallFd` takes only a
//! bounded regular file (a FIFO is refused at once); a model that would not fit under the
//! service's memory limit (a fake cgroup tree) is refused with the limit, the need and both
//! remedies. After each, a normal greedy request gives the same text as before.

mod serve_util;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use moed_dbus::plugins::PluginsProxy;
use moed_dbus::proxy::EngineProxy;
use moed_dbus::{GenerateOptions, MoedError};
use serve_util::*;

const SECOND: &str = "qwen3_moe";
const SECRET: &str = "SECRET-LINE-4711";
/// The supplementary group given to `nobody` where it should be an administrator.
const ADMINS: &str = "users";

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

async fn greedy_text(engine: &EngineProxy<'_>) -> String {
    let opts = GenerateOptions {
        max_tokens: Some(6),
        temperature: Some(0.0),
        ..GenerateOptions::default()
    };
    let (text, _) = engine
        .complete("The capital of France is", opts.to_dict())
        .await
        .expect("a normal greedy Complete");
    text
}

fn short(err: &MoedError) -> &'static str {
    err.short_name().unwrap_or("not a moed error")
}

/// A call as `nobody` (an administrator when `admin`), on a blocking thread; (ok, stderr).
async fn as_nobody(bus: &TestBus, admin: bool, method: &str, args: &[&str]) -> (bool, String) {
    let address = bus.address.clone();
    let method = method.to_string();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, _, stderr) = gdbus_as_nobody(&address, admin.then_some(ADMINS), &method, &refs);
        (ok, stderr)
    })
    .await
    .expect("client thread")
}

/// A directory only root may enter, inside a directory everyone may.
fn root_only_dir(setup: &DaemonSetup) -> std::path::PathBuf {
    let dir = setup.work.path().join("root-only");
    std::fs::create_dir(&dir).expect("mkdir");
    chmod(&dir, 0o700);
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_paths_are_read_with_the_callers_permissions() {
    if !is_root() {
        eprintln!("SKIPPED: setpriv needs root to become nobody");
        return;
    }
    let bus = TestBus::start();
    let mut setup = DaemonSetup::new();
    setup.extra_config = format!("admin_group = \"{ADMINS}\"\n");
    let _daemon = Daemon::start(&bus, &setup, "").await;
    let conn = bus.connect().await;
    let engine = engine(&conn).await;
    let plugins = PluginsProxy::new(&conn).await.expect("plugins proxy");
    let before = greedy_text(&engine).await;

    // A manifest that is not TOML, whose first line is a secret, where only root can read it.
    let hidden = root_only_dir(&setup);
    std::fs::write(hidden.join("p.toml"), format!("{SECRET} is not toml\n")).expect("write");
    std::fs::write(hidden.join("p.wasm"), b"\0asm").expect("write");
    let existing = hidden.join("p.wasm").display().to_string();
    let missing = hidden.join("q.wasm").display().to_string();
    let (ok, on_existing) = as_nobody(
        &bus,
        true,
        "org.moed.Moed1.Plugins.Install",
        &[existing.as_str(), "{}"],
    )
    .await;
    assert!(
        !ok,
        "an administrator who is not root read a root-only file"
    );
    assert!(!on_existing.contains(SECRET), "{on_existing}");
    assert!(
        on_existing.contains("org.moed.Moed1.Error.InvalidArgument"),
        "{on_existing}"
    );
    let (ok, on_missing) = as_nobody(
        &bus,
        true,
        "org.moed.Moed1.Plugins.Install",
        &[missing.as_str(), "{}"],
    )
    .await;
    assert!(!ok);
    assert_eq!(
        on_existing.replace(&existing, "PATH"),
        on_missing.replace(&missing, "PATH"),
        "a hidden file and a missing one must answer alike"
    );

    // Root may read it, but the parse error names the place, not the text.
    let err = plugins
        .install(&existing, HashMap::new())
        .await
        .expect_err("not TOML");
    assert_eq!(short(&err), "InvalidArgument", "{err}");
    assert!(!err.message().contains(SECRET), "{err}");
    assert!(err.message().contains("line 1"), "{err}");

    // What the caller may read is read: the same files in the open get as far as compilation.
    let open = setup.work.path().join("open");
    std::fs::create_dir(&open).expect("mkdir");
    chmod(&open, 0o755);
    std::fs::write(
        open.join("p.toml"),
        "[plugin]\nname = \"p\"\nversion = \"1.0.0\"\nkind = \"filter\"\n",
    )
    .expect("write");
    std::fs::write(open.join("p.wasm"), b"\0asm").expect("write");
    chmod(&open.join("p.toml"), 0o644);
    chmod(&open.join("p.wasm"), 0o644);
    let readable = open.join("p.wasm").display().to_string();
    let (ok, stderr) = as_nobody(
        &bus,
        true,
        "org.moed.Moed1.Plugins.Install",
        &[readable.as_str(), "{}"],
    )
    .await;
    assert!(!ok, "not a component, yet installed");
    assert!(!stderr.contains("may not read it"), "{stderr}");

    assert_eq!(greedy_text(&engine).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_paths_tell_nothing_about_what_the_caller_cannot_read() {
    if !is_root() {
        eprintln!("SKIPPED: setpriv needs root to become nobody");
        return;
    }
    let bus = TestBus::start();
    let mut setup = DaemonSetup::with_models(&[MODEL, SECOND]);
    setup.extra_config = format!("admin_group = \"{ADMINS}\"\n");
    let _daemon = Daemon::start(&bus, &setup, "").await;
    let conn = bus.connect().await;
    let engine = engine(&conn).await;
    let before = greedy_text(&engine).await;

    let hidden = root_only_dir(&setup);
    let package = hidden.join("pkg");
    std::fs::create_dir(&package).expect("mkdir");
    std::fs::write(
        package.join("manifest.json"),
        format!("{{\"{SECRET}\": 1}}"),
    )
    .expect("write");
    std::os::unix::fs::symlink(setup.models.join(SECOND), hidden.join("real")).expect("ln");
    let missing = hidden.join("nothing").display().to_string();

    for (method, admin) in [
        ("org.moed.Moed1.Models.Info", false),
        ("org.moed.Moed1.Models.Load", true),
    ] {
        let (ok, on_missing) = as_nobody(&bus, admin, method, &[missing.as_str()]).await;
        assert!(!ok, "{method}: {on_missing}");
        assert!(on_missing.contains("NotFound"), "{method}: {on_missing}");
        for existing in [&package, &hidden.join("real")] {
            let existing = existing.display().to_string();
            let (ok, answer) = as_nobody(&bus, admin, method, &[existing.as_str()]).await;
            assert!(!ok, "{method} {existing}: {answer}");
            assert!(!answer.contains(SECRET), "{answer}");
            assert_eq!(
                answer.replace(&existing, "PATH"),
                on_missing.replace(&missing, "PATH"),
                "{method}: a hidden package and a missing one must answer alike"
            );
        }
    }

    // A package in the open whose tokenizer is a link to a root-only file: every file the
    // manifest lists is checked, so not even the hidden file's size comes back.
    let linked = setup.work.path().join("linked");
    std::fs::create_dir(&linked).expect("mkdir");
    chmod(&linked, 0o755);
    for entry in std::fs::read_dir(setup.models.join(SECOND)).expect("read package") {
        let entry = entry.expect("entry");
        let name = entry.file_name();
        let target = if name == "tokenizer.json" {
            let secret = hidden.join("tokenizer.json");
            std::fs::write(&secret, SECRET).expect("write");
            secret
        } else {
            entry.path()
        };
        std::os::unix::fs::symlink(target, linked.join(name)).expect("ln");
    }
    let shown = linked.display().to_string();
    let (ok, answer) =
        as_nobody(&bus, false, "org.moed.Moed1.Models.Info", &[shown.as_str()]).await;
    assert!(!ok, "{answer}");
    assert_eq!(
        answer.replace(&shown, "PATH"),
        as_nobody(
            &bus,
            false,
            "org.moed.Moed1.Models.Info",
            &[missing.as_str()]
        )
        .await
        .1
        .replace(&missing, "PATH"),
    );
    // Root reads it, and is told the file is the wrong size.
    let err = models(&conn)
        .await
        .info(&shown)
        .await
        .expect_err("wrong size");
    assert!(err.message().contains("tokenizer.json"), "{err}");

    // A package the caller can read is still found by path.
    let readable = setup.models.join(SECOND).display().to_string();
    let (ok, stderr) = as_nobody(
        &bus,
        false,
        "org.moed.Moed1.Models.Info",
        &[readable.as_str()],
    )
    .await;
    assert!(ok, "{stderr}");
    // Root keeps its own answers.
    let models = models(&conn).await;
    let err = models
        .info(&package.display().to_string())
        .await
        .expect_err("not a package");
    assert!(!err.message().contains(SECRET), "{err}");

    assert_eq!(greedy_text(&engine).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_fd_takes_only_a_bounded_regular_file() {
    let bus = TestBus::start();
    let setup = DaemonSetup::new();
    let _daemon = Daemon::start(&bus, &setup, "").await;
    let conn = bus.connect().await;
    let engine = engine(&conn).await;
    let plugins = PluginsProxy::new(&conn).await.expect("plugins proxy");
    let before = greedy_text(&engine).await;
    let manifest = "[plugin]\nname = \"p\"\nversion = \"1.0.0\"\nkind = \"filter\"\n";

    // A FIFO with no writer: reading it would wait forever. Opened read-write so that the test
    // itself does not wait for a reader.
    let fifo = setup.work.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo)
        .expect("open fifo");
    let fd = zbus::OwnedFd::from(std::os::fd::OwnedFd::from(file));
    let err = tokio::time::timeout(
        Duration::from_secs(60),
        plugins.install_fd(manifest, fd, HashMap::new()),
    )
    .await
    .expect("InstallFd of a FIFO must answer")
    .expect_err("a FIFO is refused");
    assert_eq!(short(&err), "InvalidArgument", "{err}");
    assert!(err.message().contains("not a regular file"), "{err}");

    // The same for a path: a manifest that is a FIFO is refused, not waited on.
    let named = setup.work.path().join("f.toml");
    nix::unistd::mkfifo(&named, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    std::fs::write(setup.work.path().join("f.wasm"), b"\0asm").expect("write");
    let err = tokio::time::timeout(
        Duration::from_secs(60),
        plugins.install(
            &setup.work.path().join("f.wasm").display().to_string(),
            HashMap::new(),
        ),
    )
    .await
    .expect("Install of a FIFO manifest must answer")
    .expect_err("a FIFO is refused");
    assert_eq!(short(&err), "InvalidArgument", "{err}");
    assert!(err.message().contains("not a regular file"), "{err}");

    // A (sparse) file past the component limit is refused from its size, before any read.
    let big = setup.work.path().join("big.wasm");
    let file = std::fs::File::create(&big).expect("create");
    file.set_len((64 << 20) + 1).expect("set_len");
    let fd = zbus::OwnedFd::from(std::os::fd::OwnedFd::from(file));
    let err = plugins
        .install_fd(manifest, fd, HashMap::new())
        .await
        .expect_err("too large");
    assert_eq!(short(&err), "InvalidArgument", "{err}");
    assert!(
        err.message()
            .contains(&format!("{} bytes", (64u64 << 20) + 1))
            && err.message().contains(&format!("{} bytes", 64u64 << 20)),
        "{err}"
    );
    assert!(plugins.list().await.expect("List").is_empty());
    assert_eq!(greedy_text(&engine).await, before);
}

/// The daemon's cgroup path, as the fake tree must repeat it (the daemon inherits the test's).
fn own_cgroup() -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim().trim_start_matches('/').to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_past_the_memory_limit_is_refused_at_load() {
    let Some(own) = own_cgroup() else {
        eprintln!("SKIPPED: no cgroup v2 line in /proc/self/cgroup");
        return;
    };
    let bus = TestBus::start();
    let mut setup = DaemonSetup::with_models(&[MODEL, SECOND]);
    if !is_root() {
        let gid = nix::unistd::getegid();
        let group = nix::unistd::Group::from_gid(gid)
            .ok()
            .flatten()
            .expect("primary group");
        setup.extra_config = format!("admin_group = \"{}\"\n", group.name);
    }
    let cgroups = setup.work.path().join("cgroup");
    let unit = cgroups.join(&own);
    std::fs::create_dir_all(&unit).expect("mkdir");
    let max = unit.join("memory.max");
    std::fs::write(&max, "max\n").expect("write");
    setup.write_config("");
    let cgroup_root = cgroups.display().to_string();
    let daemon = Daemon::spawn_with_env(
        &bus,
        &setup,
        &[],
        &[("TEST_MOED_CGROUP_ROOT", cgroup_root.as_str())],
    );
    daemon.wait_ready(&bus).await;
    let conn = bus.connect().await;
    let engine = engine(&conn).await;
    let models = models(&conn).await;
    let before = greedy_text(&engine).await;

    // 64 MiB: less than the daemon holds already, so no model fits.
    std::fs::write(&max, format!("{}\n", 64u64 << 20)).expect("write");
    let err = models.load(SECOND).await.expect_err("past the limit");
    let text = err.message();
    eprintln!("refused as expected: {err}");
    for part in [
        "64.0 MiB",
        "memory.max",
        "resident",
        "engine.expert_memory_budget",
        "MemoryMax=",
    ] {
        assert!(text.contains(part), "{part} missing: {err}");
    }
    assert!(
        !models
            .loaded_models()
            .await
            .expect("LoadedModels")
            .contains(&SECOND.to_string())
    );
    assert_eq!(greedy_text(&engine).await, before);

    // Without the limit the same model loads: the refusal was the limit's.
    std::fs::write(&max, "max\n").expect("write");
    models.load(SECOND).await.expect("Load without a limit");
    assert_eq!(greedy_text(&engine).await, before);
}
