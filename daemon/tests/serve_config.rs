//! Configuration and lifecycle of the real binary: `moed check-config`, refused configurations,
//! sd_notify readiness, SIGHUP reload, SIGTERM draining in-flight requests, and exit on a lost bus.

mod serve_util;

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moed_dbus::GenerateOptions;
use moed_dbus::client::{self, RequestEvent};
use serve_util::*;

fn check_config(dir: &std::path::Path, env: &[(&str, &str)]) -> (bool, String, String) {
    run_tool(
        Command::new(moed_bin())
            .arg("check-config")
            .arg("--config")
            .arg(dir.join("moed.toml"))
            .envs(env.iter().copied()),
    )
}

#[test]
fn check_config_prints_the_effective_configuration() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("moed.toml"),
        "[service]\nmax_concurrent = 3\nqueue_depth = 4\n",
    )
    .expect("write");
    std::fs::create_dir(dir.path().join("moed.toml.d")).expect("mkdir");
    std::fs::write(
        dir.path().join("moed.toml.d/50-more.toml"),
        "[service]\nmax_concurrent = 6\n",
    )
    .expect("write");
    let (ok, out, err) = check_config(dir.path(), &[("MOED_SERVICE__QUEUE_DEPTH", "9")]);
    assert!(ok, "{err}");
    assert!(
        out.contains("max_concurrent = 6"),
        "the drop-in wins over the file: {out}"
    );
    assert!(
        out.contains("queue_depth = 9"),
        "the environment wins over both: {out}"
    );
    assert!(
        out.contains("50-more.toml"),
        "the files read are listed: {out}"
    );
    assert!(
        out.contains("authorizer = \"polkit\""),
        "defaults are shown: {out}"
    );
    // What the execution providers need, as comments: the CPU-only wheel is named as the reason.
    assert!(out.contains("# provider cpu: usable"), "{out}");
    assert!(
        out.contains("# provider cuda: unusable: ") && out.contains("CPU-only build"),
        "{out}"
    );
}

#[test]
fn bad_configurations_are_refused_naming_the_key() {
    let cases = [
        ("[service]\nmax_concurrent = 0\n", "service.max_concurrent"),
        ("[engine]\nproviders = [\"npu\"]\n", "engine.providers"),
        ("[service]\nqueue_depht = 3\n", "queue_depht"),
        (
            "[access]\nadmin_group = \"no-such-group-here\"\n",
            "access.admin_group",
        ),
        ("[models\n", "moed.toml"),
    ];
    for (text, key) in cases {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("moed.toml"), text).expect("write");
        let (ok, _, err) = check_config(dir.path(), &[]);
        assert!(!ok, "{text} was accepted");
        assert!(
            err.contains(key),
            "the error for {text:?} names {key}: {err}"
        );
    }
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("moed.toml"), "").expect("write");
    let (ok, _, err) = check_config(dir.path(), &[("MOED_ENGINE__EXPERT_MEMORY_BUDGET", "huge")]);
    assert!(!ok && err.contains("engine.expert_memory_budget"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_bad_configuration_and_missing_models() {
    let bus = TestBus::start();
    let mut setup = DaemonSetup::new();
    setup.write_config("max_concurrent = -2");
    let mut daemon = Daemon::spawn(&bus, &setup, &[]);
    let status = tokio::task::block_in_place(|| daemon.wait_exit(Duration::from_secs(20)));
    assert!(!status.success());
    assert!(
        daemon
            .log_lines()
            .iter()
            .any(|l| l.contains("service.max_concurrent")),
        "{:?}",
        daemon.log_lines()
    );

    setup.default_model = false;
    setup.write_config("");
    let mut daemon = Daemon::spawn(&bus, &setup, &["--model", "no-such-model"]);
    let status = tokio::task::block_in_place(|| daemon.wait_exit(Duration::from_secs(20)));
    assert!(!status.success());
    assert!(
        daemon
            .log_lines()
            .iter()
            .any(|l| l.contains("no-such-model") && l.contains("model directories")),
        "{:?}",
        daemon.log_lines()
    );
}

/// sd_notify datagrams received, with their arrival time.
type Messages = Arc<Mutex<Vec<(Instant, String)>>>;

/// Collects sd_notify datagrams sent to a socket of ours.
fn notify_socket(dir: &std::path::Path) -> (String, Messages) {
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind notify socket");
    let messages = Arc::new(Mutex::new(Vec::new()));
    let sink = messages.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 4096];
        while let Ok(n) = socket.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            sink.lock().expect("lock").push((Instant::now(), text));
        }
    });
    (path.display().to_string(), messages)
}

fn received(messages: &Messages, what: &str) -> bool {
    messages
        .lock()
        .expect("lock")
        .iter()
        .any(|(_, m)| m.lines().any(|l| l == what))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_after_load_reload_on_sighup_and_drain_on_sigterm() {
    let bus = TestBus::start();
    let setup = DaemonSetup::new();
    setup.write_config("max_concurrent = 1\nqueue_depth = 4");
    let (socket, messages) = notify_socket(setup.work.path());
    let mut daemon = Daemon::spawn_with_env(
        &bus,
        &setup,
        &[],
        // WatchdogSec=0.2s as systemd would pass it.
        &[
            ("NOTIFY_SOCKET", socket.as_str()),
            ("WATCHDOG_USEC", "200000"),
        ],
    );

    // READY=1 arrives, and at that moment the name is owned and the model loaded.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !received(&messages, "READY=1") {
        assert!(
            Instant::now() < deadline,
            "no READY=1; log: {:?}",
            daemon.log_lines()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let conn = bus.connect().await;
    let engine = engine(&conn).await;
    assert_eq!(engine.model().await.expect("Model"), MODEL);
    assert_eq!(engine.state().await.expect("State"), "ready");
    let statuses: Vec<String> = messages
        .lock()
        .expect("lock")
        .iter()
        .map(|(_, m)| m.clone())
        .collect();
    let loading = statuses
        .iter()
        .position(|m| m.contains("STATUS=loading model"));
    let ready = statuses.iter().position(|m| m.contains("READY=1"));
    assert!(
        loading.is_some() && loading < ready,
        "STATUS=loading before READY=1: {statuses:?}"
    );
    assert!(
        statuses
            .iter()
            .any(|m| m.contains(&format!("STATUS=serving {MODEL}"))),
        "{statuses:?}"
    );

    // SIGHUP applies new limits without a restart.
    setup.write_config("max_concurrent = 2\nqueue_depth = 4");
    daemon.signal(Signal::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while engine.max_concurrent().await.expect("MaxConcurrent") != 2 {
        assert!(
            Instant::now() < deadline,
            "reload not applied: {:?}",
            daemon.log_lines()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // SIGTERM: running requests finish normally, new ones are refused, then the process exits 0.
    let long = GenerateOptions {
        max_tokens: Some(200),
        ignore_eos: true,
        temperature: Some(0.0),
        ..GenerateOptions::default()
    };
    let mut first = client::generate(&conn, "one", &long)
        .await
        .expect("Generate");
    let second = client::generate(&conn, "two", &long)
        .await
        .expect("Generate");
    match first.next().await.expect("event").expect("ok") {
        RequestEvent::Token { .. } => {}
        other => panic!("expected a token, got {other:?}"),
    }
    daemon.signal(Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    while engine.state().await.expect("State") != "draining" {
        assert!(Instant::now() < deadline, "not draining");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let refused = engine
        .complete("late", long.to_dict())
        .await
        .expect_err("refused while draining");
    assert_eq!(refused.short_name(), Some("ShuttingDown"), "{refused}");
    for stream in [first, second] {
        let mut stream = stream;
        let mut reason = None;
        // Bounded: a Finished lost when the daemon exits must fail the test, not hang it.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while let Some(event) = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap_or_else(|_| panic!("no Finished: log {:?}", daemon.log_lines()))
        {
            if let RequestEvent::Finished { reason: r, .. } = event.expect("event") {
                reason = Some(r);
            }
        }
        let reason = reason.expect("Finished");
        assert_ne!(reason, "cancelled", "drained, not cancelled");
        assert_ne!(reason, "error");
    }
    let status = tokio::task::block_in_place(|| daemon.wait_exit(Duration::from_secs(30)));
    assert!(status.success(), "{status:?}");
    assert!(received(&messages, "STOPPING=1"));
    let pings = messages
        .lock()
        .expect("lock")
        .iter()
        .filter(|(_, m)| m.contains("WATCHDOG=1"))
        .count();
    assert!(
        pings >= 2,
        "watchdog pings at half of WATCHDOG_USEC: {pings}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exits_with_failure_when_the_bus_goes_away() {
    let bus = TestBus::start();
    let setup = DaemonSetup::new();
    let mut daemon = Daemon::start(&bus, &setup, "").await;
    bus.stop();
    // A daemon nobody can reach must end, non-zero, so systemd's Restart=on-failure restarts it.
    let status = daemon.wait_exit(Duration::from_secs(30));
    assert!(!status.success(), "exit status {status:?}");
    assert!(
        daemon
            .log_lines()
            .iter()
            .any(|l| l.contains("the connection to the bus was lost")),
        "log: {:?}",
        daemon.log_lines()
    );
}
