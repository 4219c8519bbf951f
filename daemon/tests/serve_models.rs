//! `moed serve` end to end: the Models interface, authorization of managing calls, and state
//! that survives `kill -9`.

mod serve_util;

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt;
use moed_dbus::{GenerateOptions, MoedError};
use serve_util::*;

const SECOND: &str = "qwen3_moe";

fn short(err: &MoedError) -> &'static str {
    err.short_name().unwrap_or("not a moed error")
}

fn opts(model: Option<&str>) -> HashMap<String, zbus::OwnedVariant> {
    GenerateOptions {
        max_tokens: Some(4),
        temperature: Some(0.0),
        model: model.map(str::to_string),
        ..GenerateOptions::default()
    }
    .to_dict()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_info_load_switch_unload_and_statistics() {
    let bus = TestBus::start();
    let mut setup = DaemonSetup::with_models(&[MODEL, SECOND]);
    setup.extra_config = admin_config();
    let _daemon = Daemon::start(&bus, &setup, "").await;
    let conn = bus.connect().await;
    let engine = engine(&conn).await;
    let models = models(&conn).await;
    let mut loaded_signals = models.receive_model_loaded().await.expect("subscribe");

    let list = models.list().await.expect("List");
    let first = list
        .iter()
        .find(|m| m.name == MODEL)
        .expect("fixture listed");
    assert!(
        first.loaded && first.active && first.error.is_none(),
        "{first:?}"
    );
    assert_eq!(first.architecture, "deepseek_v3");
    let second = list
        .iter()
        .find(|m| m.name == SECOND)
        .expect("second listed");
    assert!(!second.loaded && !second.active, "{second:?}");

    let info = models.info(MODEL).await.expect("Info");
    assert!(info.loaded && info.active);
    assert_eq!(info.execution_provider.as_deref(), Some("cpu"));
    assert!(
        info.num_experts > 0 && info.top_k > 0 && info.total_bytes > 0,
        "{info:?}"
    );
    let by_path = models.info(&second.path).await.expect("Info by path");
    assert_eq!(by_path.architecture, "qwen3_moe");
    assert!(!by_path.loaded);

    let mut progress = models
        .receive_load_progress()
        .await
        .expect("subscribe LoadProgress");
    models.load(SECOND).await.expect("Load");
    // Every progress signal precedes the reply: embedding, head, then each layer's graphs.
    let mut steps = Vec::new();
    while let Ok(Some(signal)) =
        tokio::time::timeout(Duration::from_millis(500), progress.next()).await
    {
        let args = signal.args().expect("args");
        assert_eq!(args.name, SECOND);
        steps.push((args.done, args.total));
    }
    let total = steps.last().map(|s| s.1).expect("LoadProgress signals");
    // One step per graph loaded before experts: embedding, head, and each layer's attention, dense
    // MLP, router (unless fused into attention) and shared expert, as the manifest lists them.
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(std::path::Path::new(&second.path).join("manifest.json")).expect("manifest"),
    )
    .expect("manifest JSON");
    let per_layer = |l: &serde_json::Value| {
        ["attn", "mlp", "router", "shared"]
            .iter()
            .filter(|k| l[**k].is_string())
            .count()
    };
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(
        total as usize,
        2 + layers.iter().map(per_layer).sum::<usize>(),
        "{steps:?}"
    );
    assert_eq!(
        steps,
        (1..=total).map(|d| (d, total)).collect::<Vec<_>>(),
        "one signal per graph, in order"
    );
    // The default model's own ModelLoaded, from the daemon's start, may still be on its way (the
    // event watcher sends it after the bus name is taken): wait for SECOND's.
    let signal = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let signal = loaded_signals.next().await.expect("signal");
            let name = signal.args().expect("args").name.to_string();
            if name != MODEL {
                return name;
            }
        }
    })
    .await
    .expect("ModelLoaded in time");
    assert_eq!(signal, SECOND);
    let mut loaded = models.loaded_models().await.expect("LoadedModels");
    loaded.sort();
    assert_eq!(loaded, vec![MODEL.to_string(), SECOND.to_string()]);
    assert_eq!(
        engine.model().await.expect("Model"),
        MODEL,
        "loading does not switch"
    );
    let (_, info) = engine
        .complete("hi", opts(Some(SECOND)))
        .await
        .expect("Complete on the second model");
    assert_eq!(info.model, SECOND);

    models.switch(SECOND).await.expect("Switch");
    assert_eq!(engine.model().await.expect("Model"), SECOND);
    let (_, info) = engine.complete("hi", opts(None)).await.expect("Complete");
    assert_eq!(info.model, SECOND);

    let stats = models.expert_stats("").await.expect("ExpertStats");
    assert_eq!(stats.model, SECOND);
    assert_eq!(stats.requests, 2);
    assert!(!stats.layers.is_empty());
    let routed: u64 = stats.layers.iter().flat_map(|l| l.counts.iter()).sum();
    assert!(routed > 0, "{stats:?}");
    assert!(
        stats.cache_misses > 0,
        "first use of experts misses: {stats:?}"
    );
    // Each miss loaded an expert's file bytes, in measurable time.
    assert!(stats.tokens > 0, "{stats:?}");
    assert!(stats.expert_load_bytes > 0, "{stats:?}");
    assert!(stats.expert_load_nanos > 0, "{stats:?}");
    // "" is the active model, SECOND since the switch.
    models
        .reset_expert_stats("")
        .await
        .expect("ResetExpertStats");
    let err = models
        .reset_expert_stats("no-such-model")
        .await
        .expect_err("a model without statistics");
    assert_eq!(err.short_name(), Some("NotFound"), "{err}");
    let stats = models.expert_stats(SECOND).await.expect("ExpertStats");
    assert_eq!(stats.requests, 0);
    assert_eq!((stats.tokens, stats.expert_load_bytes), (0, 0), "{stats:?}");
    assert_eq!(
        stats
            .layers
            .iter()
            .flat_map(|l| l.counts.iter())
            .sum::<u64>(),
        0
    );

    models.unload(MODEL).await.expect("Unload");
    assert_eq!(
        models.loaded_models().await.expect("LoadedModels"),
        vec![SECOND.to_string()]
    );
    let err = engine
        .complete("hi", opts(Some(MODEL)))
        .await
        .expect_err("unloaded");
    assert_eq!(short(&err), "ModelNotLoaded", "{err}");
    models.unload(SECOND).await.expect("Unload");
    assert_eq!(engine.state().await.expect("State"), "no-model");
    assert_eq!(engine.model().await.expect("Model"), "");
    let err = engine
        .complete("hi", opts(None))
        .await
        .expect_err("nothing loaded");
    assert_eq!(short(&err), "ModelNotLoaded", "{err}");
    assert!(err.message().contains("load one"), "says what to do: {err}");

    models.load(MODEL).await.expect("Load again");
    assert_eq!(engine.state().await.expect("State"), "ready");
    assert_eq!(engine.model().await.expect("Model"), MODEL);

    assert_eq!(
        short(&models.load("no-such-model").await.expect_err("unknown")),
        "NotFound"
    );
    assert_eq!(
        short(&models.load("relative/path").await.expect_err("relative")),
        "InvalidArgument"
    );
    assert_eq!(
        short(&models.unload(SECOND).await.expect_err("not loaded")),
        "NotFound"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unprivileged_callers_are_refused() {
    let bus = TestBus::start();
    let setup = DaemonSetup::new();
    let daemon = Daemon::start(&bus, &setup, "").await;

    if !is_root() {
        // The test user itself is unprivileged here: no admin group is configured.
        let conn = bus.connect().await;
        let err = models(&conn)
            .await
            .unload(MODEL)
            .await
            .expect_err("refused");
        assert_eq!(short(&err), "AccessDenied", "{err}");
        assert!(err.message().contains("org.moed.manage-models"), "{err}");
        return;
    }
    let address = bus.address.clone();
    let results = tokio::task::spawn_blocking(move || {
        (
            gdbus_as_nobody(&address, None, "org.moed.Moed1.Models.List", &[]),
            gdbus_as_nobody(
                &address,
                None,
                "org.moed.Moed1.Engine.Complete",
                &["hi", "{'max_tokens': <2>}"],
            ),
            gdbus_as_nobody(&address, None, "org.moed.Moed1.Models.Unload", &[MODEL]),
            gdbus_as_nobody(
                &address,
                None,
                "org.moed.Moed1.Models.ResetExpertStats",
                &[MODEL],
            ),
        )
    })
    .await
    .expect("clients");
    let (list, complete, unload, reset) = results;
    assert!(list.0, "reads are open to any local user: {}", list.2);
    assert!(
        complete.0,
        "inference is open to any local user: {}",
        complete.2
    );
    for (what, refused) in [("Unload", unload), ("ResetExpertStats", reset)] {
        assert!(!refused.0, "{what} must be refused to nobody");
        assert!(
            refused.2.contains("org.moed.Moed1.Error.AccessDenied"),
            "{what}: {}",
            refused.2
        );
        assert!(
            refused.2.contains("org.moed.manage-models"),
            "{what}: {}",
            refused.2
        );
    }

    // A reloaded configuration (SIGHUP) names admin and allowed groups: membership now decides.
    setup.write_config("");
    let mut text = std::fs::read_to_string(setup.config_path()).expect("config");
    text.push_str("admin_group = \"users\"\nallowed_group = \"users\"\n");
    std::fs::write(setup.config_path(), text).expect("write config");
    daemon.signal(Signal::SIGHUP);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !daemon
        .log_lines()
        .iter()
        .any(|l| l.contains("configuration reloaded"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no reload logged: {:?}",
            daemon.log_lines()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let address = bus.address.clone();
    let (outsider, member, admin) = tokio::task::spawn_blocking(move || {
        (
            gdbus_as_nobody(
                &address,
                None,
                "org.moed.Moed1.Engine.Complete",
                &["hi", "{'max_tokens': <2>}"],
            ),
            gdbus_as_nobody(
                &address,
                Some("users"),
                "org.moed.Moed1.Engine.Complete",
                &["hi", "{'max_tokens': <2>}"],
            ),
            gdbus_as_nobody(
                &address,
                Some("users"),
                "org.moed.Moed1.Models.ResetExpertStats",
                &[MODEL],
            ),
        )
    })
    .await
    .expect("clients");
    assert!(
        !outsider.0 && outsider.2.contains("AccessDenied") && outsider.2.contains("users"),
        "{}",
        outsider.2
    );
    assert!(
        member.0,
        "a member of allowed_group may use moed: {}",
        member.2
    );
    assert!(
        admin.0,
        "a member of admin_group may manage models: {}",
        admin.2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_changes_survive_kill_9() {
    let bus = TestBus::start();
    let mut setup = DaemonSetup::with_models(&[MODEL, SECOND]);
    setup.extra_config = admin_config();
    let mut daemon = Daemon::start(&bus, &setup, "").await;
    let conn = bus.connect().await;
    let engine = engine(&conn).await;
    let models = models(&conn).await;

    engine.complete("one", opts(None)).await.expect("Complete");
    engine.complete("two", opts(None)).await.expect("Complete");
    let before = models.expert_stats(MODEL).await.expect("ExpertStats");
    assert_eq!(before.requests, 2);
    models.switch(SECOND).await.expect("Switch");

    daemon.signal(Signal::SIGKILL);
    daemon.wait_exit(Duration::from_secs(10));
    drop(daemon);

    let _daemon = Daemon::start(&bus, &setup, "").await;
    let conn = bus.connect().await;
    assert_eq!(engine_model(&conn).await, SECOND, "the switch survived");
    let after = models_stats(&conn, MODEL).await;
    assert_eq!(after, before, "the expert statistics survived");
}

/// Writes `text` as the configuration drop-in `name` of `setup`.
fn drop_in(setup: &DaemonSetup, name: &str, text: &str) {
    let dir = setup.work.path().join("moed.toml.d");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join(name), text).expect("write drop-in");
}

async fn engine_model(conn: &zbus::Connection) -> String {
    engine(conn).await.model().await.expect("Model")
}

async fn models_stats(conn: &zbus::Connection, name: &str) -> moed_dbus::ExpertStatistics {
    models(conn)
        .await
        .expert_stats(name)
        .await
        .expect("ExpertStats")
}

/// A model switched to by root by a path outside the model directories comes back after a
/// restart (what is remembered is the path, not a name nothing resolves). Another caller's path
/// was read with that caller's permissions and is not read again by the daemon as itself: the
/// start falls back to the default model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_to_a_path_survives_a_restart() {
    let bus = TestBus::start();
    let mut setup = DaemonSetup::with_models(&[MODEL, SECOND]);
    setup.extra_config = admin_config();
    let elsewhere = setup.work.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).expect("mkdir");
    let path = elsewhere.join("by-path");
    std::os::unix::fs::symlink(setup.models.join(SECOND), &path).expect("symlink");
    let path = path.to_string_lossy().into_owned();

    let mut daemon = Daemon::start(&bus, &setup, "").await;
    let conn = bus.connect().await;
    models(&conn)
        .await
        .switch(&path)
        .await
        .expect("Switch by path");
    assert_eq!(engine_model(&conn).await, "by-path");
    daemon.signal(Signal::SIGTERM);
    daemon.wait_exit(Duration::from_secs(30));
    drop(daemon);

    let _daemon = Daemon::start(&bus, &setup, "").await;
    let conn = bus.connect().await;
    if is_root() {
        assert_eq!(
            engine_model(&conn).await,
            "by-path",
            "the model switched to by path is active again"
        );
    } else {
        assert_eq!(engine_model(&conn).await, MODEL, "the default model");
    }
}

/// A package loaded by path from outside the model directories goes by the name its manifest
/// gives it, not by its folder's (where no other package answers to that name), and, switched
/// to by root, is active again under that name after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_loaded_by_path_goes_by_its_manifest_name() {
    const RENAMED: &str = "renamed-by-manifest";
    let bus = TestBus::start();
    let mut setup = DaemonSetup::with_models(&[MODEL, SECOND]);
    setup.extra_config = admin_config();
    // The second fixture with another name in its manifest, in a folder of an unrelated name.
    let path = setup.work.path().join("elsewhere").join("export-out");
    std::fs::create_dir_all(&path).expect("mkdir");
    let source = setup.models.join(SECOND);
    for entry in std::fs::read_dir(&source).expect("read package") {
        let entry = entry.expect("entry");
        let target = path.join(entry.file_name());
        if entry.file_name() == "manifest.json" {
            let mut manifest: serde_json::Value =
                serde_json::from_slice(&std::fs::read(entry.path()).expect("manifest"))
                    .expect("manifest JSON");
            manifest["name"] = RENAMED.into();
            std::fs::write(&target, manifest.to_string()).expect("write manifest");
        } else {
            std::os::unix::fs::symlink(entry.path(), &target).expect("symlink");
        }
    }
    let path = path.to_string_lossy().into_owned();

    let mut daemon = Daemon::start(&bus, &setup, "").await;
    let conn = bus.connect().await;
    let models = models(&conn).await;
    assert_eq!(
        models.info(&path).await.expect("Info by path").name,
        RENAMED
    );
    models.switch(&path).await.expect("Switch by path");
    assert_eq!(engine_model(&conn).await, RENAMED);
    let listed = models.list().await.expect("List");
    assert!(
        listed
            .iter()
            .any(|m| m.name == RENAMED && m.active && m.path == path),
        "{listed:?}"
    );
    daemon.signal(Signal::SIGTERM);
    daemon.wait_exit(Duration::from_secs(30));
    drop(daemon);

    let _daemon = Daemon::start(&bus, &setup, "").await;
    let conn = bus.connect().await;
    if is_root() {
        assert_eq!(engine_model(&conn).await, RENAMED, "active again");
    } else {
        assert_eq!(engine_model(&conn).await, MODEL, "the default model");
    }
}

/// With `engine.preload_experts`, every expert's session exists once the model has loaded: the
/// first request finds them all resident (no cache miss).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preloaded_experts_are_resident_before_the_first_request() {
    let bus = TestBus::start();
    let setup = DaemonSetup::new();
    drop_in(
        &setup,
        "10-preload.toml",
        "[engine]\npreload_experts = true\n",
    );
    let _daemon = Daemon::start(&bus, &setup, "").await;
    let conn = bus.connect().await;
    let before = models_stats(&conn, MODEL).await;
    assert_eq!(before.requests, 0);
    assert!(before.cache_misses > 0, "experts were loaded: {before:?}");
    engine(&conn)
        .await
        .complete("Count to three", opts(None))
        .await
        .expect("Complete");
    let after = models_stats(&conn, MODEL).await;
    assert_eq!(after.requests, 1);
    assert_eq!(
        after.cache_misses, before.cache_misses,
        "the request found every expert resident"
    );
    assert!(after.cache_hits > before.cache_hits);
}

/// Under an expert budget, a model loaded again after a restart holds the hottest experts of its
/// persisted statistics before any request, and next-layer guesses are counted and scored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hottest_experts_are_held_after_a_restart_and_guesses_are_scored() {
    let bus = TestBus::start();
    let setup = DaemonSetup::new();
    // 16 experts of about 25 KB: half of 200 KB held at most, the rest for the others.
    drop_in(
        &setup,
        "10-budget.toml",
        "[engine]\nexpert_memory_budget = \"200KB\"\n",
    );
    let held = |daemon: &Daemon| {
        daemon
            .log_lines()
            .into_iter()
            .find(|l| l.contains("most activated experts"))
    };

    let mut daemon = Daemon::start(&bus, &setup, "").await;
    let conn = bus.connect().await;
    engine(&conn)
        .await
        .complete("Count to three", opts(None))
        .await
        .expect("Complete");
    let stats = models_stats(&conn, MODEL).await;
    assert!(
        stats.prefetch_guessed > 0 && stats.prefetch_chosen > 0,
        "later tokens had guesses: {stats:?}"
    );
    assert!(stats.prefetch_guessed_right <= stats.prefetch_guessed.min(stats.prefetch_chosen));
    assert_eq!(
        held(&daemon),
        None,
        "no statistics to hold from on the first start"
    );
    daemon.signal(Signal::SIGTERM);
    daemon.wait_exit(Duration::from_secs(30));
    drop(daemon);

    let daemon = Daemon::start(&bus, &setup, "").await;
    let mut line = held(&daemon);
    for _ in 0..50 {
        if line.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        line = held(&daemon);
    }
    let line = line.expect("the restarted daemon holds experts");
    let count: u32 = line
        .split("holding the ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!((1..=4).contains(&count), "{line}");
    let conn = bus.connect().await;
    engine(&conn)
        .await
        .complete("Count to three", opts(None))
        .await
        .expect("Complete after the restart");
}
