//! `moed serve` end to end over a private bus: the Engine interface, streaming requests,
//! cancellation, scheduling limits, bad arguments, foreign clients and the introspection XML.

mod serve_util;

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use moed_dbus::client::{self, RequestEvent};
use moed_dbus::{ChatMessage, GenerateOptions, MoedError};
use serve_util::*;
use zbus::OwnedVariant;

fn greedy(max_tokens: u32) -> GenerateOptions {
    GenerateOptions {
        max_tokens: Some(max_tokens),
        temperature: Some(0.0),
        seed: Some(7),
        ..GenerateOptions::default()
    }
}

/// A request that runs its full length (no early end of sequence).
fn long(max_tokens: u32) -> GenerateOptions {
    GenerateOptions {
        ignore_eos: true,
        ..greedy(max_tokens)
    }
}

fn name_of(err: &MoedError) -> &'static str {
    err.short_name().unwrap_or("not a moed error")
}

fn is_unknown_object(err: &MoedError) -> bool {
    matches!(
        err,
        MoedError::ZBus(zbus::Error::FDO(e)) if matches!(**e, zbus::fdo::Error::UnknownObject(_))
    )
}

/// Collects a stream to its end: (answer text, thinking text, finish reason, info).
async fn collect(
    mut stream: client::RequestStream,
) -> (String, String, String, moed_dbus::GenerationInfo) {
    let (mut text, mut thinking) = (String::new(), String::new());
    while let Some(event) = stream.next().await {
        match event.expect("stream event") {
            RequestEvent::Token {
                text: t,
                thinking: true,
            } => thinking.push_str(&t),
            RequestEvent::Token {
                text: t,
                thinking: false,
            } => text.push_str(&t),
            RequestEvent::Alert { .. } => {}
            RequestEvent::Finished { reason, info } => return (text, thinking, reason, info),
        }
    }
    panic!("the stream ended without Finished");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete_chat_score_and_properties() {
    let bus = TestBus::start();
    let setup = DaemonSetup::new();
    let _daemon = Daemon::start(&bus, &setup, "").await;
    let conn = bus.connect().await;
    let engine = engine(&conn).await;

    assert_eq!(
        engine.version().await.expect("Version"),
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(engine.model().await.expect("Model"), MODEL);
    assert_eq!(
        engine
            .execution_provider()
            .await
            .expect("ExecutionProvider"),
        "cpu"
    );
    assert_eq!(engine.state().await.expect("State"), "ready");
    assert_eq!(engine.active_requests().await.expect("ActiveRequests"), 0);

    let (text, info) = engine
        .complete("Hello there", greedy(6).to_dict())
        .await
        .expect("Complete");
    assert_eq!(info.model, MODEL);
    assert_eq!(text, info.text);
    assert!(
        info.completion_tokens >= 1 && info.completion_tokens <= 6,
        "{info:?}"
    );
    assert_eq!(info.token_ids.len() as u32, info.completion_tokens);
    assert!(info.prompt_tokens > 0);
    assert!(
        ["max_tokens", "eos", "stop"].contains(&info.finish_reason.as_str()),
        "{info:?}"
    );
    // Greedy decoding repeats itself exactly.
    let (again, _) = engine
        .complete("Hello there", greedy(6).to_dict())
        .await
        .expect("Complete");
    assert_eq!(text, again);

    let raw = GenerateOptions {
        raw: true,
        ..greedy(4)
    };
    let (_, raw_info) = engine
        .complete("Hello there", raw.to_dict())
        .await
        .expect("raw Complete");
    assert!(
        raw_info.prompt_tokens < info.prompt_tokens,
        "the chat template adds tokens: {raw_info:?} vs {info:?}"
    );

    let messages = [
        ChatMessage::new("system", "Be brief."),
        ChatMessage::new("user", "Hi"),
    ];
    let (chat_text, chat_info) = engine
        .chat(&messages, greedy(5).to_dict())
        .await
        .expect("Chat");
    assert_eq!(chat_text, chat_info.text);
    assert!(chat_info.completion_tokens >= 1);

    let tokens = engine
        .score("Hello world", HashMap::new())
        .await
        .expect("Score");
    assert!(tokens.len() >= 2);
    assert!(!tokens[0].has_logprob);
    for t in &tokens[1..] {
        assert!(
            t.has_logprob && t.logprob.is_finite() && t.logprob < 0.0,
            "{t:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_streams_tokens_then_finished() {
    let bus = TestBus::start();
    let setup = DaemonSetup::new();
    let _daemon = Daemon::start(&bus, &setup, "").await;
    let conn = bus.connect().await;

    let stream = client::generate(&conn, "Tell me a story", &greedy(12))
        .await
        .expect("Generate");
    let path = stream.path().clone();
    assert!(path.as_str().starts_with("/org/moed/Moed1/request/"));
    let (text, thinking, reason, info) = collect(stream).await;
    assert_eq!(reason, info.finish_reason);
    assert_eq!(text, info.text, "streamed answer equals the final one");
    assert_eq!(thinking, info.thinking);
    assert_eq!(
        path.as_str().rsplit('/').next(),
        Some(info.request_id.as_str())
    );

    // The streamed text equals a blocking Complete with the same options.
    let (complete_text, _) = engine(&conn)
        .await
        .complete("Tell me a story", greedy(12).to_dict())
        .await
        .expect("Complete");
    assert_eq!(text, complete_text);

    // The request object is gone once finished.
    let proxy = moed_dbus::proxy::RequestProxy::builder(&conn)
        .path(path)
        .build()
        .await
        .expect("proxy");
    assert!(
        proxy.cancel().await.is_err(),
        "a finished request has no object"
    );

    let chat = client::generate_chat(&conn, &[ChatMessage::new("user", "Hi")], &greedy(4))
        .await
        .expect("GenerateChat");
    let (_, _, reason, _) = collect(chat).await;
    assert_ne!(reason, "error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_running_request() {
    let bus = TestBus::start();
    let setup = DaemonSetup::new();
    let _daemon = Daemon::start(&bus, &setup, "").await;
    let conn = bus.connect().await;

    // Cancel right away: 230 forward passes usually take far longer than one round trip, but
    // on a loaded machine the client may be descheduled until the request is over; then the
    // request object is gone (NotFound) and the attempt is repeated.
    for attempt in 1..=5 {
        let stream = client::generate(&conn, "Count", &long(230))
            .await
            .expect("Generate");
        match stream.cancel().await {
            Ok(()) => {
                let (_, _, reason, info) = collect(stream).await;
                assert_eq!(reason, "cancelled", "{info:?}");
                assert!(info.completion_tokens < 230, "{info:?}");
                return;
            }
            // Finished before Cancel arrived: either moed answers NotFound, or the request's
            // object is already gone and the bus answers UnknownObject.
            Err(err) if name_of(&err) == "NotFound" || is_unknown_object(&err) => {
                eprintln!("attempt {attempt}: the request finished before Cancel arrived: {err}");
                let _ = collect(stream).await;
            }
            Err(err) => panic!("Cancel: {err:?}"),
        }
    }
    panic!("no request was still running when Cancel arrived, in 5 attempts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_past_the_queue_and_concurrent_clients() {
    let bus = TestBus::start();
    let setup = DaemonSetup::new();
    // One user fills both places here: the per-user share (half by default) is lifted.
    let _daemon = Daemon::start(
        &bus,
        &setup,
        "max_concurrent = 1\nqueue_depth = 1\nmax_requests_per_user = 2",
    )
    .await;
    let conn = bus.connect().await;
    let engine = engine(&conn).await;
    assert_eq!(engine.max_concurrent().await.expect("MaxConcurrent"), 1);

    // Both places taken, a third request is refused. On a loaded machine this client may be
    // descheduled until the first request is over (the third then finds a place): try again.
    let mut refused = false;
    for attempt in 1..=5 {
        let first = client::generate(&conn, "one", &long(230))
            .await
            .expect("first runs");
        let second = client::generate(&conn, "two", &long(230))
            .await
            .expect("second queues");
        let third = engine.complete("three", greedy(2).to_dict()).await;
        for stream in [&first, &second] {
            match stream.cancel().await {
                Err(err) if name_of(&err) != "NotFound" => panic!("Cancel: {err:?}"),
                _ => {}
            }
        }
        let (_, _, r1, _) = collect(first).await;
        let (_, _, r2, _) = collect(second).await;
        match third {
            Err(err) => {
                assert_eq!(name_of(&err), "Busy", "{err}");
                assert!(err.message().contains("queue"), "{err}");
                // Cancelled, unless it ended on its own while the refusal was checked.
                for reason in [&r1, &r2] {
                    assert!(
                        ["cancelled", "max_tokens"].contains(&reason.as_str()),
                        "{reason}"
                    );
                }
                refused = true;
                break;
            }
            Ok(_) => {
                eprintln!("attempt {attempt}: a place was free again before the third request")
            }
        }
    }
    assert!(
        refused,
        "the third request was never refused, in 5 attempts"
    );

    // Two clients at once (one runs, one waits), each on its own connection: both answered, and
    // the same as alone.
    let expected = engine
        .complete("same prompt", greedy(8).to_dict())
        .await
        .expect("alone")
        .0;
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let address = bus.address.clone();
        tasks.push(tokio::spawn(async move {
            let conn = zbus::connection::Builder::address(address.as_str())
                .build()
                .await
                .expect("connect");
            let engine = moed_dbus::proxy::EngineProxy::new(&conn)
                .await
                .expect("proxy");
            engine.complete("same prompt", greedy(8).to_dict()).await
        }));
    }
    for task in tasks {
        let (text, _) = task.await.expect("task").expect("concurrent Complete");
        assert_eq!(text, expected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_has_its_requests_cancelled() {
    let bus = TestBus::start();
    let setup = DaemonSetup::new();
    let daemon = Daemon::start(&bus, &setup, "").await;
    let observer = bus.connect().await;
    let engine = engine(&observer).await;

    // On a loaded machine the request may be over before the client has left: then nothing is
    // cancelled and the attempt is repeated.
    for attempt in 1..=5 {
        let leaving = bus.connect().await;
        let leaving_name = leaving.unique_name().expect("unique name").to_string();
        let stream = client::generate(&leaving, "Count", &long(230))
            .await
            .expect("Generate");
        drop(stream);
        leaving.close().await.expect("close");

        let wanted = format!("client {leaving_name} left the bus: cancelled 1 requests");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while engine.active_requests().await.expect("ActiveRequests") != 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the request kept running"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The line is logged before the request ends; its capture from stderr may lag a little.
        let grace = std::time::Instant::now() + Duration::from_secs(2);
        while std::time::Instant::now() < grace {
            if daemon.log_lines().iter().any(|l| l.contains(&wanted)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        eprintln!("attempt {attempt}: the request ended before its client left");
    }
    panic!(
        "no request was cancelled when its client left, in 5 attempts; log: {:?}",
        daemon.log_lines()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_arguments_are_named_errors() {
    let bus = TestBus::start();
    let setup = DaemonSetup::new();
    let _daemon = Daemon::start(&bus, &setup, "").await;
    let conn = bus.connect().await;
    let engine = engine(&conn).await;

    let opts = |key: &str, value: OwnedVariant| HashMap::from([(key.to_string(), value)]);
    let cases: Vec<(HashMap<String, OwnedVariant>, &str, &str)> = vec![
        (
            opts("max_tokens", OwnedVariant::from(zbus::Str::from("ten"))),
            "InvalidArgument",
            "max_tokens",
        ),
        (
            opts("max_tokens", OwnedVariant::from(0u32)),
            "InvalidArgument",
            "max_tokens",
        ),
        (
            opts("top_p", OwnedVariant::from(2.0f64)),
            "InvalidArgument",
            "top_p",
        ),
        (
            opts("temperature", OwnedVariant::from(-1.0f64)),
            "InvalidArgument",
            "temperature",
        ),
        (
            opts("colour", OwnedVariant::from(true)),
            "InvalidArgument",
            "colour",
        ),
        (
            opts("model", OwnedVariant::from(zbus::Str::from("nope"))),
            "ModelNotLoaded",
            "nope",
        ),
        (
            opts("plugins", OwnedVariant::from(zbus::Str::from("pii-redact"))),
            "NotFound",
            "pii-redact",
        ),
    ];
    for (options, name, mentions) in cases {
        let err = engine
            .complete("hi", options.clone())
            .await
            .expect_err("an error");
        assert_eq!(name_of(&err), name, "{err}");
        assert!(err.message().contains(mentions), "{err}");
        let err = engine
            .generate("hi", options)
            .await
            .expect_err("Generate refuses it too");
        assert_eq!(name_of(&err), name, "{err}");
    }

    let err = engine
        .chat(&[], HashMap::new())
        .await
        .expect_err("empty chat");
    assert_eq!(name_of(&err), "InvalidArgument");
    let err = engine
        .chat(&[ChatMessage::new("robot", "x")], HashMap::new())
        .await
        .expect_err("bad role");
    assert!(err.message().contains("robot"), "{err}");
    let long = "word ".repeat(400);
    let err = engine
        .complete(&long, greedy(2).to_dict())
        .await
        .expect_err("over the context");
    assert_eq!(name_of(&err), "InvalidArgument", "{err}");
    assert!(err.message().contains("context length"), "{err}");
    let err = engine
        .score("hi", opts("max_tokens", OwnedVariant::from(3u32)))
        .await
        .expect_err("score option");
    assert_eq!(name_of(&err), "InvalidArgument");
    let err = models(&conn)
        .await
        .info("no-such-model")
        .await
        .expect_err("unknown model");
    assert_eq!(name_of(&err), "NotFound");
}

/// `busctl` and `gdbus`, clients nobody here wrote, call the daemon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busctl_and_gdbus_clients() {
    let bus = TestBus::start();
    let setup = DaemonSetup::new();
    let _daemon = Daemon::start(&bus, &setup, "").await;
    let address = bus.address.clone();
    let results = tokio::task::spawn_blocking(move || {
        let busctl = run_tool(Command::new("busctl").args([
            &format!("--address={address}"),
            "call",
            "org.moed.Moed1",
            "/org/moed/Moed1",
            "org.moed.Moed1.Engine",
            "Complete",
            "sa{sv}",
            "Hello",
            "2",
            "max_tokens",
            "u",
            "3",
            "temperature",
            "d",
            "0",
        ]));
        let gdbus = run_tool(Command::new("gdbus").args([
            "call",
            "--address",
            &address,
            "--dest",
            "org.moed.Moed1",
            "--object-path",
            "/org/moed/Moed1",
            "--method",
            "org.moed.Moed1.Engine.Chat",
            "[('user', 'Hi')]",
            "{'max_tokens': <3>}",
        ]));
        let gdbus_err = run_tool(Command::new("gdbus").args([
            "call",
            "--address",
            &address,
            "--dest",
            "org.moed.Moed1",
            "--object-path",
            "/org/moed/Moed1",
            "--method",
            "org.moed.Moed1.Engine.Complete",
            "Hi",
            "{'top_k': <'many'>}",
        ]));
        (busctl, gdbus, gdbus_err)
    })
    .await
    .expect("tools");
    let (busctl, gdbus, gdbus_err) = results;
    assert!(busctl.0, "busctl failed: {}", busctl.2);
    assert!(busctl.1.starts_with("sa{sv} "), "{}", busctl.1);
    assert!(
        busctl.1.contains("\"completion_tokens\" u 3"),
        "{}",
        busctl.1
    );
    assert!(gdbus.0, "gdbus failed: {}", gdbus.2);
    assert!(gdbus.1.contains("'finish_reason'"), "{}", gdbus.1);
    assert!(!gdbus_err.0);
    assert!(
        gdbus_err.2.contains("org.moed.Moed1.Error.InvalidArgument"),
        "{}",
        gdbus_err.2
    );
    assert!(gdbus_err.2.contains("top_k"), "{}", gdbus_err.2);
}

/// Extracts `<interface name="NAME">...</interface>` from introspection XML.
fn interface_block(xml: &str, name: &str) -> Option<String> {
    let start = xml.find(&format!("<interface name=\"{name}\">"))?;
    let end = xml[start..].find("</interface>")? + start + "</interface>".len();
    Some(
        xml[start..end]
            .lines()
            .map(str::trim)
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

/// The committed XML under daemon/contract/xml/ is what the daemon serves. With
/// UPDATE_DBUS_XML=1 the test rewrites the files instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_matches_committed_xml() {
    let bus = TestBus::start();
    let setup = DaemonSetup::new();
    let _daemon = Daemon::start(&bus, &setup, "").await;
    let conn = bus.connect().await;
    let introspect = |path: String| {
        let conn = conn.clone();
        async move {
            zbus::fdo::IntrospectableProxy::builder(&conn)
                .destination("org.moed.Moed1")
                .path(path)
                .build()
                .await
                .expect("proxy")
                .introspect()
                .await
                .expect("Introspect")
        }
    };
    let main = introspect("/org/moed/Moed1".to_string()).await;
    // A request object exists only while it runs; on a loaded machine it may be over before it is
    // introspected: try again.
    let mut request = String::new();
    for _ in 0..5 {
        let stream = client::generate(&conn, "x", &long(230))
            .await
            .expect("Generate");
        request = introspect(stream.path().to_string()).await;
        match stream.cancel().await {
            Err(err) if name_of(&err) != "NotFound" => panic!("Cancel: {err:?}"),
            _ => {}
        }
        let _ = collect(stream).await;
        if interface_block(&request, "org.moed.Moed1.Request").is_some() {
            break;
        }
    }

    let xml_dir = repo_root().join("daemon/contract/xml");
    let update = std::env::var_os("UPDATE_DBUS_XML").is_some();
    for (name, xml) in [
        ("org.moed.Moed1.Engine", &main),
        ("org.moed.Moed1.Models", &main),
        ("org.moed.Moed1.Knowledge", &main),
        ("org.moed.Moed1.Plugins", &main),
        ("org.moed.Moed1.Request", &request),
    ] {
        let served =
            interface_block(xml, name).unwrap_or_else(|| panic!("{name} is not served: {xml}"));
        let file = xml_dir.join(format!("{name}.xml"));
        let served_doc = format!(
            "<!DOCTYPE node PUBLIC \"-//freedesktop//DTD D-BUS Object Introspection 1.0//EN\"\n \"http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd\">\n<node>\n{served}\n</node>\n"
        );
        if update {
            std::fs::write(&file, &served_doc).expect("write xml");
            continue;
        }
        let committed = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_DBUS_XML=1 writes it)", file.display()));
        let committed = interface_block(&committed, name).expect("interface in committed file");
        assert_eq!(
            served,
            committed,
            "{name} differs from {}; run with UPDATE_DBUS_XML=1 and review",
            file.display()
        );
    }
}
