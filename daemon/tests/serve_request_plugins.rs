//! Per-request plugins in `moed serve` over a private bus: a gate named in `plugins` with
//! `plugin_params` changes Score's logprobs while `topk` equals native routing, and an
//! administrator's default gate routes requests that name none; unknown plugins
//! and bad parameters are refused with the key named; retrieval with `retrieval-embedded` over
//! the embedded document store puts a passage into the prompt and lists it in `sources`,
//! `retrieval=false` and `sources` turn it off or restrict it, a failing retrieval plugin gives
//! an alert (also in the audit log) and still an answer; an output filter catches an e-mail
//! address that reaches it split across the stream's tokens before any `Token` signal carries it.

mod common;
mod serve_util;

use std::collections::HashMap;
use std::path::Path;

use common::plugins_dir;
use moed_dbus::client::{self, RequestEvent};
use moed_dbus::knowledge::{KnowledgeProxy, StoreOptions};
use moed_dbus::{GenerateOptions, GenerationInfo, InstallOptions, MoedError, ScoreOptions};
use serve_util::*;
use zbus::{OwnedVariant, Variant};

async fn install(conn: &zbus::Connection, name: &str, always: Option<bool>, config: Option<&str>) {
    let path = plugins_dir().join(format!("{name}.wasm"));
    let options = InstallOptions {
        always,
        config: config.map(str::to_string),
        ..InstallOptions::default()
    };
    plugins(conn)
        .await
        .install(&path.display().to_string(), options.to_dict())
        .await
        .unwrap_or_else(|e| panic!("installing {name}: {e}"));
}

fn greedy(max_tokens: u32) -> GenerateOptions {
    GenerateOptions {
        max_tokens: Some(max_tokens),
        temperature: Some(0.0),
        seed: Some(7),
        ..GenerateOptions::default()
    }
}

fn logprobs(tokens: &[moed_dbus::ScoredToken]) -> Vec<f64> {
    tokens.iter().map(|t| t.logprob).collect()
}

fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

const SCORED: &str = "The quick brown fox jumps over the lazy dog near the river bank.";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_per_request_routes_score_and_generation() {
    let bus = TestBus::start();
    let mut setup = DaemonSetup::new();
    setup.extra_config = admin_config();
    let daemon = Daemon::start(&bus, &setup, "").await;
    let conn = bus.connect().await;
    install(&conn, "expert-budget", None, None).await;
    install(&conn, "topk", None, None).await;
    let engine = engine(&conn).await;
    let score = |opts: ScoreOptions| {
        let engine = engine.clone();
        async move { engine.score(SCORED, opts.to_dict()).await }
    };

    let native = score(ScoreOptions::default()).await.expect("native Score");
    assert!(native.len() > 4);
    // topk re-implements the model's rule: bit-identical logprobs.
    let topk = score(ScoreOptions {
        plugins: vec!["topk".into()],
        ..ScoreOptions::default()
    })
    .await
    .expect("Score with topk");
    assert_eq!(logprobs(&topk), logprobs(&native));
    // expert-budget without parameters keeps the model's top-k: the same numbers too.
    let top = score(ScoreOptions {
        plugins: vec!["expert-budget".into()],
        ..ScoreOptions::default()
    })
    .await
    .expect("Score with expert-budget");
    assert_eq!(logprobs(&top), logprobs(&native));
    // One expert per token, from this request's parameters: other logprobs, same tokens.
    let k1 = score(ScoreOptions {
        plugins: vec!["expert-budget".into()],
        plugin_params: params(&[("expert_budget.k", "1")]),
        ..ScoreOptions::default()
    })
    .await
    .expect("Score with k=1");
    assert_eq!(k1.len(), native.len());
    assert_eq!(
        k1.iter().map(|t| t.id).collect::<Vec<_>>(),
        native.iter().map(|t| t.id).collect::<Vec<_>>()
    );
    assert_ne!(logprobs(&k1), logprobs(&native));
    // Masking experts per request also changes them, differently.
    let masked = score(ScoreOptions {
        plugins: vec!["expert-budget".into()],
        plugin_params: params(&[("expert_budget.masked", "[0, 1, 2]")]),
        ..ScoreOptions::default()
    })
    .await
    .expect("Score with masked experts");
    assert_ne!(logprobs(&masked), logprobs(&native));
    assert_ne!(logprobs(&masked), logprobs(&k1));
    // And the request after them is native again: the gate was this request's only.
    let again = score(ScoreOptions::default()).await.expect("native again");
    assert_eq!(logprobs(&again), logprobs(&native));

    // Generation with the gate: an answer, and routing by k=1 shows in the expert statistics.
    let models = models(&conn).await;
    let before = models.expert_stats("").await.expect("stats");
    let mut opts = greedy(4);
    opts.ignore_eos = true;
    opts.plugins = vec!["expert-budget".into()];
    opts.plugin_params = params(&[("expert_budget.k", "1")]);
    let (_, info) = engine
        .complete("Hello there", opts.to_dict())
        .await
        .expect("Complete with a gate");
    assert_eq!(info.completion_tokens, 4);
    let after = models.expert_stats("").await.expect("stats");
    let routed = |s: &moed_dbus::ExpertStatistics| -> u64 {
        s.layers.iter().flat_map(|l| l.counts.iter()).sum()
    };
    let moe_layers = after.layers.len() as u64;
    // Prompt tokens plus 3 decode steps, one expert each per MoE layer.
    let tokens = u64::from(info.prompt_tokens) + 3;
    assert_eq!(routed(&after) - routed(&before), tokens * moe_layers);

    // A parameter the plugin refuses is the client's error: the request fails naming the key
    // (it is not answered with the gate quietly left out), for Complete and for Score.
    for value in ["99", "\"abc\""] {
        let mut opts = greedy(2);
        opts.plugins = vec!["expert-budget".into()];
        opts.plugin_params = params(&[("expert_budget.k", value)]);
        let err = engine
            .complete("Hello there", opts.to_dict())
            .await
            .expect_err("a refused parameter fails the request");
        assert!(matches!(err, MoedError::InvalidArgument(_)), "{err:?}");
        assert!(
            err.message()
                .contains("option 'plugin_params.expert_budget.k'"),
            "{err:?}"
        );
    }
    let err = score(ScoreOptions {
        plugins: vec!["expert-budget".into()],
        plugin_params: params(&[("expert_budget.pinned", "[9999]")]),
        ..ScoreOptions::default()
    })
    .await
    .expect_err("a refused parameter fails Score");
    assert!(
        matches!(&err, MoedError::InvalidArgument(m) if m.contains("expert_budget.pinned")),
        "{err:?}"
    );

    // A gate failing for its own reasons (its configuration pins an expert the model lacks):
    // routed natively, the request still answers, and a gate.fallback alert reaches the client
    // and the audit log.
    plugins(&conn)
        .await
        .configure("expert-budget", "{\"pinned\": [9999]}")
        .await
        .expect("Configure");
    let mut opts = greedy(2);
    opts.plugins = vec!["expert-budget".into()];
    let (_, info) = engine
        .complete("Hello there", opts.to_dict())
        .await
        .expect("Complete with a failing gate");
    let alerts = info.alerts.clone().expect("alerts");
    assert!(
        alerts.iter().any(|(sev, code, msg, src)| sev == "warning"
            && code == "gate.fallback"
            && src == "expert-budget"
            && msg.contains("pinned expert 9999")),
        "{alerts:?}"
    );
    let log = plugins(&conn)
        .await
        .recent_alerts(20)
        .await
        .expect("alerts");
    assert!(
        log.iter().any(|a| a.code == "gate.fallback"
            && a.request_id.as_deref() == Some(info.request_id.as_str())),
        "{log:?}"
    );
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_gate_routes_the_requests_that_name_no_gate() {
    let bus = TestBus::start();
    let mut setup = DaemonSetup::new();
    setup.extra_config = admin_config();
    let _daemon = Daemon::start(&bus, &setup, "").await;
    let conn = bus.connect().await;
    let engine = engine(&conn).await;
    let native = engine
        .score(SCORED, ScoreOptions::default().to_dict())
        .await
        .expect("native Score");
    // The administrator's default gate: expert-budget configured to one expert per token.
    install(&conn, "expert-budget", Some(true), Some(r#"{"k": 1}"#)).await;
    install(&conn, "topk", None, None).await;
    let default = engine
        .score(SCORED, ScoreOptions::default().to_dict())
        .await
        .expect("Score under the default gate");
    assert_ne!(logprobs(&default), logprobs(&native));
    // A gate named by the request replaces the default for that request.
    let named = engine
        .score(
            SCORED,
            ScoreOptions {
                plugins: vec!["topk".into()],
                ..ScoreOptions::default()
            }
            .to_dict(),
        )
        .await
        .expect("Score with topk named");
    assert_eq!(logprobs(&named), logprobs(&native));
    // The request's parameters reach the default gate too (k=2 is the model's top-k).
    let mut dict = ScoreOptions::default().to_dict();
    let mut p: HashMap<String, OwnedVariant> = HashMap::new();
    p.insert("expert_budget.k".into(), OwnedVariant::from(2u32));
    dict.insert(
        "plugin_params".into(),
        OwnedVariant::try_from(Variant::from(p)).expect("a{sv}"),
    );
    let k2 = engine.score(SCORED, dict).await.expect("Score with k=2");
    assert_eq!(logprobs(&k2), logprobs(&native));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_options_are_checked_and_name_the_problem() {
    let bus = TestBus::start();
    let mut setup = DaemonSetup::new();
    setup.extra_config = admin_config();
    let _daemon = Daemon::start(&bus, &setup, "").await;
    let conn = bus.connect().await;
    install(&conn, "expert-budget", None, None).await;
    install(&conn, "topk", None, None).await;
    install(&conn, "pii-redact", Some(false), None).await;
    let engine = engine(&conn).await;

    let mut opts = greedy(2);
    opts.plugins = vec!["nope".into()];
    let err = engine
        .complete("Hello", opts.to_dict())
        .await
        .expect_err("unknown plugin");
    let MoedError::NotFound(m) = &err else {
        panic!("expected NotFound, got {err:?}")
    };
    assert!(
        m.contains("'nope'") && m.contains("moectl plugins list"),
        "{m}"
    );
    let err = engine
        .score(
            "Hello",
            ScoreOptions {
                plugins: vec!["nope".into()],
                ..ScoreOptions::default()
            }
            .to_dict(),
        )
        .await
        .expect_err("unknown plugin in Score");
    assert!(matches!(err, MoedError::NotFound(_)), "{err:?}");

    // A disabled plugin cannot be chosen either.
    plugins(&conn).await.disable("topk").await.expect("disable");
    let mut opts = greedy(2);
    opts.plugins = vec!["topk".into()];
    let err = engine
        .complete("Hello", opts.to_dict())
        .await
        .expect_err("disabled plugin");
    assert!(matches!(err, MoedError::NotFound(_)), "{err:?}");

    // plugin_params: not JSON, not a dictionary, a type without a JSON form.
    let mut text: HashMap<String, String> = HashMap::new();
    text.insert("expert_budget.k".into(), "one".into());
    let mut dict = greedy(2).to_dict();
    dict.insert(
        "plugin_params".into(),
        OwnedVariant::try_from(Variant::from(text)).expect("a{ss}"),
    );
    let err = engine
        .complete("Hello", dict)
        .await
        .expect_err("bad plugin_params");
    let MoedError::InvalidArgument(m) = &err else {
        panic!("expected InvalidArgument, got {err:?}")
    };
    assert!(m.contains("plugin_params.expert_budget.k"), "{m}");
    let mut dict = greedy(2).to_dict();
    dict.insert("plugin_params".into(), OwnedVariant::from(5u32));
    let err = engine
        .complete("Hello", dict)
        .await
        .expect_err("plugin_params not a dictionary");
    assert!(
        matches!(&err, MoedError::InvalidArgument(m) if m.contains("'plugin_params'")),
        "{err:?}"
    );
    // A filter refusing a parameter of the request: the client's error naming the key, however
    // often it comes, and the filter stays enabled for everyone (the limit is 5 failures in a row).
    for _ in 0..7 {
        let mut opts = greedy(2);
        opts.plugins = vec!["pii-redact".into()];
        opts.plugin_params = params(&[("pii_redact.skip", "[\"bogus\"]")]);
        let err = engine
            .complete("mail a.b@example.org", opts.to_dict())
            .await
            .expect_err("a refused filter parameter");
        assert!(
            matches!(&err, MoedError::InvalidArgument(m)
                if m.contains("option 'plugin_params.pii_redact.skip': filter plugin 'pii-redact' refused it")
                    && m.contains("unknown kind 'bogus'")),
            "{err:?}"
        );
    }
    let mut opts = greedy(2);
    opts.plugins = vec!["pii-redact".into()];
    opts.plugin_params = params(&[("pii_redact.skip", "[\"ip\"]")]);
    engine
        .complete("mail a.b@example.org", opts.to_dict())
        .await
        .expect("pii-redact still answers after its callers' mistakes");

    // Two gates, a filter in Score, an unknown source label.
    let mut opts = greedy(2);
    opts.plugins = vec!["expert-budget".into(), "topk".into()];
    plugins(&conn).await.enable("topk").await.expect("enable");
    let err = engine
        .complete("Hello", opts.to_dict())
        .await
        .expect_err("two gates");
    assert!(
        matches!(&err, MoedError::InvalidArgument(m) if m.contains("at most one gate")),
        "{err:?}"
    );
    let err = engine
        .score(
            "Hello",
            ScoreOptions {
                plugins: vec!["pii-redact".into()],
                ..ScoreOptions::default()
            }
            .to_dict(),
        )
        .await
        .expect_err("a filter in Score");
    assert!(
        matches!(&err, MoedError::InvalidArgument(m) if m.contains("gate plugins only")),
        "{err:?}"
    );
    let mut opts = greedy(2);
    opts.sources = vec!["no-such-source".into()];
    let err = engine
        .complete("Hello", opts.to_dict())
        .await
        .expect_err("unknown source");
    assert!(
        matches!(&err, MoedError::NotFound(m) if m.contains("no-such-source")),
        "{err:?}"
    );
    let mut dict = greedy(2).to_dict();
    dict.insert("retrieval".into(), OwnedVariant::from(1u32));
    let err = engine
        .complete("Hello", dict)
        .await
        .expect_err("retrieval not a boolean");
    assert!(
        matches!(&err, MoedError::InvalidArgument(m) if m.contains("'retrieval'")),
        "{err:?}"
    );
}

const HANDBOOK: &str =
    "Every employee of the Kellynch estate has twenty-seven vacation days a year.";
const OFFICE: &str = "The office of the Kellynch estate opens at eight in the morning.";
const OLD_HANDBOOK: &str = "In former years every employee had twenty vacation days a year.";
const QUESTION: &str = "How many vacation days does an employee have?";

/// Two embedded stores: `documents` (what retrieval-embedded is granted) and `archive`.
fn knowledge_config() -> String {
    "\n[knowledge.sources.documents]\nkind = \"embedded\"\n\n[knowledge.sources.archive]\nkind = \"embedded\"\n".into()
}

async fn add_documents(conn: &zbus::Connection, dir: &Path, label: &str, docs: &[(&str, &str)]) {
    let mut fds = Vec::new();
    for (name, text) in docs {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write document");
        let file = std::fs::File::open(&path).expect("open document");
        fds.push((
            name.to_string(),
            zbus::OwnedFd::from(std::os::fd::OwnedFd::from(file)),
        ));
    }
    let knowledge = KnowledgeProxy::new(conn).await.expect("knowledge proxy");
    let options = StoreOptions {
        source: Some(label.to_string()),
    };
    knowledge
        .add_documents(fds, options.to_dict())
        .await
        .expect("AddDocuments");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrieval_puts_passages_into_the_prompt_and_lists_their_sources() {
    let bus = TestBus::start();
    let mut setup = DaemonSetup::new();
    setup.extra_config = admin_config() + &knowledge_config();
    let _daemon = Daemon::start(&bus, &setup, "").await;
    let conn = bus.connect().await;
    add_documents(
        &conn,
        setup.work.path(),
        "documents",
        &[("handbook.txt", HANDBOOK), ("office.txt", OFFICE)],
    )
    .await;
    add_documents(
        &conn,
        setup.work.path(),
        "archive",
        &[("old-handbook.txt", OLD_HANDBOOK)],
    )
    .await;
    // A retrieval plugin applies to every request by default.
    install(&conn, "retrieval-embedded", None, None).await;
    let engine = engine(&conn).await;

    let (_, with) = engine
        .complete(QUESTION, greedy(4).to_dict())
        .await
        .expect("Complete with retrieval");
    let sources = with.sources.clone().expect("sources in info");
    assert_eq!(sources[0].0, "handbook.txt", "{sources:?}");
    assert!(with.alerts.is_none(), "{:?}", with.alerts);

    // A parameter the retrieval plugin refuses is the client's error, named; it does not
    // disable retrieval for everyone however often it comes (the limit is 5 in a row).
    for _ in 0..7 {
        let mut bad = greedy(4);
        bad.plugin_params = params(&[("retrieval.source", "5")]);
        let err = engine
            .complete(QUESTION, bad.to_dict())
            .await
            .expect_err("a refused retrieval parameter");
        assert!(
            matches!(&err, MoedError::InvalidArgument(m)
                if m.contains("option 'plugin_params.retrieval.source': retrieval plugin 'retrieval-embedded' refused it")),
            "{err:?}"
        );
    }
    let (_, again) = engine
        .complete(QUESTION, greedy(4).to_dict())
        .await
        .expect("Complete with retrieval after the bad requests");
    assert_eq!(again.sources, with.sources);
    // Engine.Metrics: each configured source with its searches (the store the plugin is granted
    // was searched; the other one was not).
    let m = engine.metrics().await.expect("Metrics");
    let of = |label: &str| {
        m.source_searches
            .iter()
            .find(|s| s.0 == label)
            .unwrap_or_else(|| panic!("no source {label}: {m:?}"))
            .clone()
    };
    let docs = of("documents");
    assert!(docs.1 >= 2 && docs.2 == 0 && docs.3 >= 0.0, "{docs:?}");
    assert_eq!(of("archive").1, 0, "{m:?}");

    // Off for one request: no sources, a shorter prompt.
    let mut off = greedy(4);
    off.retrieval = Some(false);
    let (_, without) = engine
        .complete(QUESTION, off.to_dict())
        .await
        .expect("Complete without retrieval");
    assert_eq!(without.sources, None);
    assert!(with.prompt_tokens > without.prompt_tokens + 20);

    // The passage went in as a system message under the documented template: the same request
    // with that system message written by hand gives the same prompt and the same answer.
    let hits = KnowledgeProxy::new(&conn)
        .await
        .expect("knowledge proxy")
        .search(QUESTION, HashMap::new())
        .await
        .expect("Search")
        .0;
    let mut block = String::from(
        "Answer with the help of these documents where they are relevant, and name the sources you used.\n",
    );
    for (i, (source, id)) in sources.iter().enumerate() {
        let hit = hits
            .iter()
            .find(|h| &h.source == source && &h.id == id)
            .expect("the source is a hit of Search");
        block.push_str(&format!(
            "\n[{}] source: {source} (id {id})\n{}\n",
            i + 1,
            hit.text.trim()
        ));
    }
    let mut by_hand = greedy(4);
    by_hand.retrieval = Some(false);
    by_hand.system = Some(block.trim_end().to_string());
    let (_, manual) = engine
        .complete(QUESTION, by_hand.to_dict())
        .await
        .expect("Complete with the passages by hand");
    assert_eq!(manual.prompt_tokens, with.prompt_tokens);
    assert_eq!(manual.token_ids, with.token_ids);

    // Restricted to the granted store: the same; to the archive: none, although it holds a
    // matching document (the plugin is not granted that label, so it searches nothing).
    let mut only = greedy(4);
    only.sources = vec!["documents".into()];
    let (_, restricted) = engine
        .complete(QUESTION, only.to_dict())
        .await
        .expect("Complete with sources=documents");
    assert_eq!(restricted.sources, with.sources);
    let mut other = greedy(4);
    other.sources = vec!["archive".into()];
    let (_, elsewhere) = engine
        .complete(QUESTION, other.to_dict())
        .await
        .expect("Complete with sources=archive");
    assert_eq!(elsewhere.sources, None);

    // A conversation: the last user message is the query; Generate's Finished carries sources.
    let messages = vec![
        moed_dbus::ChatMessage {
            role: "user".into(),
            content: "When does the office open?".into(),
        },
        moed_dbus::ChatMessage {
            role: "assistant".into(),
            content: "At eight.".into(),
        },
        moed_dbus::ChatMessage {
            role: "user".into(),
            content: QUESTION.into(),
        },
    ];
    let (_, chat) = engine
        .chat(&messages, greedy(4).to_dict())
        .await
        .expect("Chat with retrieval");
    assert_eq!(
        chat.sources.as_ref().map(|s| s[0].0.as_str()),
        Some("handbook.txt")
    );
    let finished = finished_info(&conn, QUESTION, &greedy(4)).await;
    assert_eq!(finished.sources, with.sources);
}

async fn finished_info(
    conn: &zbus::Connection,
    prompt: &str,
    opts: &GenerateOptions,
) -> GenerationInfo {
    let mut stream = client::generate(conn, prompt, opts)
        .await
        .expect("Generate");
    loop {
        match stream.next().await.expect("stream open").expect("event") {
            RequestEvent::Finished { info, .. } => return info,
            _ => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_retrieval_plugin_gives_an_alert_and_an_answer() {
    let bus = TestBus::start();
    let mut setup = DaemonSetup::new();
    setup.extra_config = admin_config();
    let _daemon = Daemon::start(&bus, &setup, "").await;
    let conn = bus.connect().await;
    // Answers with a NaN score: an invalid answer, so retrieval fails (open).
    install(&conn, "hostile-retrieval-misbehave", None, None).await;
    let engine = engine(&conn).await;
    let (text, info) = engine
        .complete(QUESTION, greedy(4).to_dict())
        .await
        .expect("an answer despite the failing plugin");
    assert_eq!(info.text, text);
    assert!(info.completion_tokens > 0);
    assert_eq!(info.sources, None);
    let alerts = info.alerts.clone().expect("alerts");
    assert!(
        alerts.iter().any(|(sev, code, msg, src)| sev == "warning"
            && code == "retrieval.failed"
            && src == "retrieval-misbehave"
            && msg.contains("without documents")),
        "{alerts:?}"
    );
    // Streaming: the Alert signal before Finished.
    let mut stream = client::generate(&conn, QUESTION, &greedy(4))
        .await
        .expect("Generate");
    let mut signalled = Vec::new();
    let reason = loop {
        match stream.next().await.expect("stream open").expect("event") {
            RequestEvent::Alert { code, .. } => signalled.push(code),
            RequestEvent::Token { .. } => {}
            RequestEvent::Finished { reason, .. } => break reason,
        }
    };
    assert_ne!(reason, "error");
    assert_eq!(signalled, ["retrieval.failed"]);
    // The audit log has them, with the request ids.
    let log = plugins(&conn)
        .await
        .recent_alerts(10)
        .await
        .expect("alerts");
    let ours: Vec<_> = log
        .iter()
        .filter(|a| a.code == "retrieval.failed" && a.plugin == "retrieval-misbehave")
        .collect();
    assert_eq!(ours.len(), 2, "{log:?}");
    assert_eq!(
        ours[0].request_id.as_deref(),
        Some(info.request_id.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_split_across_streamed_tokens_is_redacted_before_it_reaches_the_client() {
    // moe-mini, the default model: the stream's tokens are a real model's.
    let bus = TestBus::start();
    let mut setup = DaemonSetup::new();
    setup.models = repo_root().join("models");
    setup.default_model = false;
    setup.extra_config = admin_config();
    setup.write_config("");
    let daemon = Daemon::spawn(&bus, &setup, &["--model", "moe-mini"]);
    daemon.wait_ready(&bus).await;
    let conn = bus.connect().await;
    // The leak: a filter that splices an e-mail address into the answer, three bytes per
    // model token; pii-redact after it in the chain must see the address whole.
    install(
        &conn,
        "hostile-filter-misbehave",
        Some(false),
        Some(r#"{"mode": "inject-email"}"#),
    )
    .await;
    install(&conn, "pii-redact", Some(false), None).await;
    let secret = "anne.elliot@kellynch.org";

    let mut opts = greedy(24);
    opts.ignore_eos = true;
    opts.plugins = vec!["filter-misbehave".into()];
    // Without pii-redact the address reaches the client, in pieces (so the test can fail).
    let (leaked, pieces) = stream_text(&conn, "It was a fine morning", &opts).await;
    assert!(leaked.contains(secret), "{leaked}");
    assert!(
        pieces.iter().all(|p| !p.contains(secret)),
        "the address must arrive split across tokens: {pieces:?}"
    );

    opts.plugins = vec!["filter-misbehave".into(), "pii-redact".into()];
    let mut stream = client::generate(&conn, "It was a fine morning", &opts)
        .await
        .expect("Generate");
    let mut shown = String::new();
    let mut alerts = Vec::new();
    let info = loop {
        match stream.next().await.expect("stream open").expect("event") {
            RequestEvent::Token { text, .. } => shown.push_str(&text),
            RequestEvent::Alert { code, source, .. } => alerts.push((code, source)),
            RequestEvent::Finished { info, .. } => break info,
        }
    };
    assert!(!shown.contains("elliot@"), "{shown}");
    assert!(!shown.contains("@kellynch"), "{shown}");
    assert!(
        shown.starts_with("Write to [REDACTED:email] today. "),
        "{shown}"
    );
    // The model's own text follows, as released without the filters.
    let model_text = leaked.replacen(&format!("Write to {secret} today. "), "", 1);
    assert!(!model_text.is_empty());
    assert_eq!(
        shown,
        format!("Write to [REDACTED:email] today. {model_text}")
    );
    assert_eq!(info.text, shown);
    assert_eq!(
        alerts,
        [("pii.email".to_string(), "pii-redact".to_string())]
    );
}

/// The streamed text of a request and its `Token` pieces.
async fn stream_text(
    conn: &zbus::Connection,
    prompt: &str,
    opts: &GenerateOptions,
) -> (String, Vec<String>) {
    let mut stream = client::generate(conn, prompt, opts)
        .await
        .expect("Generate");
    let mut pieces = Vec::new();
    loop {
        match stream.next().await.expect("stream open").expect("event") {
            RequestEvent::Token { text, .. } => pieces.push(text),
            RequestEvent::Finished { reason, info } => {
                assert_ne!(reason, "error", "{info:?}");
                return (pieces.concat(), pieces);
            }
            RequestEvent::Alert { .. } => {}
        }
    }
}
