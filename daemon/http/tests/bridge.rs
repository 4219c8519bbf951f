//! `moed-http` against the real `moed serve` on a private bus, started by systemd's socket
//! activator: curl and the `openai` package over the unix socket, whole and streamed answers,
//! OpenAI error objects, cancellation when the client hangs up, and the caller's identity.

mod util;

use std::io::{BufRead, BufReader};

use serde_json::json;
use util::*;

fn chat_body(extra: serde_json::Value) -> String {
    let mut body =
        json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "temperature": 0});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    body.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_whole_streamed_and_refused() {
    let bus = TestBus::start();
    let _daemon = Daemon::start(&bus, "").await;
    let bridge = Bridge::start(&bus, &["--max-body-bytes", "65536"]);
    let sock = &bridge.socket;

    let models = Curl::new(sock).get("/v1/models").run();
    assert_eq!(models.status, 200, "{models:?}");
    let ids: Vec<String> = models.json()["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|m| m["id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        ids.contains(&MODEL.to_string()) && ids.contains(&SECOND.to_string()),
        "{ids:?}"
    );

    // Whole: OpenAI's shape, moed's counts.
    let whole = Curl::new(sock)
        .post(
            "/v1/chat/completions",
            &chat_body(json!({"model": MODEL, "ignore_eos": true})),
        )
        .run();
    assert_eq!(whole.status, 200, "{whole:?}");
    let answer = whole.json();
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(answer["model"], MODEL);
    assert_eq!(answer["choices"][0]["message"]["role"], "assistant");
    assert_eq!(answer["choices"][0]["finish_reason"], "length");
    assert_eq!(answer["usage"]["completion_tokens"], 4);
    let text = answer["choices"][0]["message"]["content"]
        .as_str()
        .expect("content")
        .to_string();

    // Streamed: data lines with deltas, a last chunk with the reason, usage, [DONE].
    let streamed = Curl::new(sock)
        .post(
            "/v1/chat/completions",
            &chat_body(json!({"ignore_eos": true, "stream": true, "stream_options": {"include_usage": true}})),
        )
        .run();
    assert_eq!(streamed.status, 200, "{streamed:?}");
    let events: Vec<&str> = streamed
        .body
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            e.strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not an SSE data event: {e:?}"))
        })
        .collect();
    assert_eq!(events.last(), Some(&"[DONE]"), "{events:?}");
    let chunks: Vec<serde_json::Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).expect("a JSON chunk"))
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let streamed_text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(streamed_text, text, "greedy: streamed as whole");
    let usage = chunks.last().expect("usage chunk");
    assert_eq!(usage["usage"]["completion_tokens"], 4, "{usage}");
    assert_eq!(
        chunks[chunks.len() - 2]["choices"][0]["finish_reason"],
        "length"
    );
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );

    // Refusals: OpenAI's error object, a fitting status, the field named, nothing echoed.
    let err = Curl::new(sock)
        .post("/v1/chat/completions", "{\"messages\": [")
        .run()
        .error(400);
    assert_eq!(err["param"], "body");
    assert!(
        err["message"]
            .as_str()
            .unwrap_or_default()
            .contains("not valid JSON"),
        "{err}"
    );
    let secret = "s3cr3t-".repeat(40);
    let err = Curl::new(sock)
        .post(
            "/v1/chat/completions",
            &json!({"messages": [{"role": secret, "content": "x"}]}).to_string(),
        )
        .run()
        .error(400);
    assert_eq!(err["param"], "messages[0].role");
    assert!(
        !err["message"]
            .as_str()
            .unwrap_or_default()
            .contains(&secret),
        "echoed: {err}"
    );
    let err = Curl::new(sock)
        .post(
            "/v1/chat/completions",
            "{\"messages\": [{\"role\": \"user\", \"content\": \"a\\u0000b\"}]}",
        )
        .run()
        .error(400);
    assert_eq!(err["param"], "messages[0].content");
    assert!(
        err["message"].as_str().unwrap_or_default().contains("NUL"),
        "{err}"
    );
    let err = Curl::new(sock)
        .post(
            "/v1/chat/completions",
            &chat_body(json!({"model": "nonexistent"})),
        )
        .run()
        .error(404);
    assert_eq!(err["code"], "model_not_found");
    let err = Curl::new(sock)
        .post(
            "/v1/completions",
            &json!({"prompt": "x", "top_p": 2}).to_string(),
        )
        .run()
        .error(400);
    assert_eq!(
        err["code"], "invalid_argument",
        "moed's InvalidArgument: {err}"
    );
    let big = json!({"prompt": "x".repeat(100_000)}).to_string();
    let err = Curl::new(sock)
        .post("/v1/completions", &big)
        .run()
        .error(413);
    assert_eq!(err["code"], "request_too_large");
    let err = Curl::new(sock)
        .post("/v1/embeddings", &json!({"input": "x"}).to_string())
        .run()
        .error(501);
    assert_eq!(err["code"], "unsupported");
    Curl::new(sock).get("/v1/nothing").run().error(404);
    Curl::new(sock).get("/v1/chat/completions").run().error(405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_package_over_the_unix_socket() {
    let bus = TestBus::start();
    let _daemon = Daemon::start(&bus, "").await;
    let bridge = Bridge::start(&bus, &[]);
    python_client("openai_client.py", &bridge, MODEL);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_calls_whole_streamed_and_continued() {
    let bus = TestBus::start();
    let _daemon = Daemon::start_tools(&bus).await;
    let bridge = Bridge::start(&bus, &[]);
    let sock = &bridge.socket;
    let weather = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 10}},
            "required": ["city"], "additionalProperties": false}}}]);
    let body = |extra: serde_json::Value| {
        let mut body = json!({
            "model": TOOLS_MODEL, "messages": [{"role": "user", "content": "Weather in Oslo?"}],
            "tools": weather, "tool_choice": "required", "temperature": 0, "max_tokens": 96,
        });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        body.to_string()
    };

    // The exact JSON: no content but the call, whose arguments keep to the schema.
    let whole = Curl::new(sock)
        .post("/v1/chat/completions", &body(json!({})))
        .run();
    assert_eq!(whole.status, 200, "{whole:?}");
    let answer = whole.json();
    let choice = &answer["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{answer}");
    assert!(choice["message"]["content"].is_null(), "{answer}");
    let calls = choice["message"]["tool_calls"]
        .as_array()
        .expect("tool_calls");
    assert_eq!(calls.len(), 1, "{answer}");
    let call = &calls[0];
    assert!(
        call["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("call_")),
        "{call}"
    );
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    let args: serde_json::Value = serde_json::from_str(
        call["function"]["arguments"]
            .as_str()
            .expect("arguments text"),
    )
    .expect("arguments are JSON");
    let city = args["city"].as_str().expect("city is a string");
    assert!(city.chars().count() <= 10, "{args}");
    assert_eq!(args.as_object().map(|o| o.len()), Some(1), "{args}");

    // Streamed: one chunk with the whole call, then the finish chunk.
    let streamed = Curl::new(sock)
        .post("/v1/chat/completions", &body(json!({"stream": true})))
        .run();
    assert_eq!(streamed.status, 200, "{streamed:?}");
    let chunks: Vec<serde_json::Value> = streamed
        .body
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str(e).expect("a JSON chunk"))
        .collect();
    let with_calls: Vec<&serde_json::Value> = chunks
        .iter()
        .filter(|c| !c["choices"][0]["delta"]["tool_calls"].is_null())
        .collect();
    assert_eq!(with_calls.len(), 1, "{chunks:?}");
    let delta = &with_calls[0]["choices"][0]["delta"]["tool_calls"][0];
    assert_eq!(delta["index"], 0, "{delta}");
    assert_eq!(delta["function"], call["function"], "greedy: as whole");
    let last = chunks.last().expect("chunks");
    assert_eq!(last["choices"][0]["finish_reason"], "tool_calls", "{last}");

    // A model whose template renders no tools: moed's own refusal, naming the option.
    moed_dbus::proxy::ModelsProxy::new(&connect(&bus).await)
        .await
        .expect("models proxy")
        .load(MODEL)
        .await
        .expect("load the second model");
    let err = Curl::new(sock)
        .post("/v1/chat/completions", &body(json!({"model": MODEL})))
        .run()
        .error(400);
    assert_eq!(err["code"], "invalid_argument", "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap_or_default()
            .contains("tools"),
        "{err}"
    );

    python_client("tools_client.py", &bridge, TOOLS_MODEL);
}

/// Runs `daemon/http/tests/SCRIPT SOCKET MODEL` with the `openai` package of `$MOE_VENV`.
fn python_client(script: &str, bridge: &Bridge, model: &str) {
    let venv = std::env::var_os("MOE_VENV")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| moed_test_harness::repo_root().join(".venv"));
    let python = venv.join("bin/python3");
    let path = moed_test_harness::repo_root()
        .join("daemon/http/tests")
        .join(script);
    let out = std::process::Command::new(&python)
        .arg(&path)
        .arg(&bridge.socket)
        .arg(model)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}; tests/setup.sh installs daemon/http/tests/requirements.txt into $MOE_VENV",
                python.display()
            )
        });
    assert!(
        out.status.success(),
        "{script} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts a long request with curl, waits until the daemon emits its first token (seen by a
/// bus monitor), kills curl, and returns how the daemon finished the request.
async fn hang_up_during(bridge: &Bridge, monitor: &mut Monitor, stream: bool) -> (String, u32) {
    let body = json!({
        "prompt": "Count", "max_tokens": 230, "ignore_eos": true, "stream": stream,
    })
    .to_string();
    let mut curl = Curl::new(&bridge.socket)
        .post("/v1/completions", &body)
        .spawn();
    if stream {
        // The response has begun: the first event reached the client.
        let mut line = String::new();
        BufReader::new(curl.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read");
        assert!(line.starts_with("data: "), "{line:?}");
    }
    // The daemon is generating for this request.
    match monitor.next().await {
        Seen::Token => {}
        Seen::Finished(reason, info) => {
            panic!("finished before its first token: {reason} {info:?}")
        }
    }
    curl.kill().expect("kill curl");
    let _ = curl.wait();
    let (reason, info) = monitor.finished().await;
    (reason, info.completion_tokens)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_has_its_request_cancelled() {
    let bus = TestBus::start();
    let _daemon = Daemon::start(&bus, "").await;
    let bridge = Bridge::start(&bus, &[]);
    let mut monitor = Monitor::start(&bus).await;
    for stream in [true, false] {
        // On a loaded machine all 230 tokens may be out before curl is gone: then try again.
        let mut cancelled = false;
        for attempt in 1..=5 {
            let (reason, tokens) = hang_up_during(&bridge, &mut monitor, stream).await;
            if reason == "cancelled" {
                assert!(tokens < 230, "{tokens}");
                cancelled = true;
                break;
            }
            assert_eq!(reason, "max_tokens", "stream {stream}");
            eprintln!(
                "attempt {attempt} (stream {stream}): the request ended before curl was gone"
            );
        }
        assert!(cancelled, "stream {stream}: never cancelled in 5 attempts");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_serves_the_socket_peer_not_the_bridge() {
    if !is_root() {
        eprintln!("skipped: switching to user nobody needs root");
        return;
    }
    let bus = TestBus::start();
    // Only group root may use moed. The bridge runs as root, so if moed served the bridge's
    // identity every client would be let in.
    let _daemon = Daemon::start(&bus, "allowed_group = \"root\"\n").await;
    let bridge = Bridge::start(&bus, &[]);
    let body = chat_body(json!({}));

    let outsider = Curl::as_nobody(&bridge.socket, "")
        .post("/v1/chat/completions", &body)
        .run();
    let err = outsider.error(403);
    assert_eq!(err["type"], "permission_error");
    assert!(
        err["message"]
            .as_str()
            .unwrap_or_default()
            .contains("access.allowed_group"),
        "{err}"
    );
    let member = Curl::as_nobody(&bridge.socket, "0")
        .post("/v1/chat/completions", &body)
        .run();
    assert_eq!(member.status, 200, "{member:?}");
    let root = Curl::new(&bridge.socket)
        .post("/v1/chat/completions", &body)
        .run();
    assert_eq!(root.status, 200, "{root:?}");

    // User A (nobody) runs a bridge of its own and user B (root) connects to it: A holds a
    // socket whose peer is B, but moed takes sockets only from root and access.bridge_group.
    let rogue = Bridge::start_as(&bus, &[], Some(""));
    let err = Curl::new(&rogue.socket)
        .post("/v1/chat/completions", &body)
        .run()
        .error(403);
    assert!(
        err["message"]
            .as_str()
            .unwrap_or_default()
            .contains("access.bridge_group"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_group_member_may_pass_sockets() {
    if !is_root() {
        eprintln!("skipped: switching to user nobody needs root");
        return;
    }
    let bus = TestBus::start();
    // nobody in group 0 (`root`, here the bridge group) relays; each client is served as itself.
    let _daemon = Daemon::start(&bus, "bridge_group = \"root\"\nallowed_group = \"root\"\n").await;
    let bridge = Bridge::start_as(&bus, &[], Some("0"));
    let body = chat_body(json!({}));
    let relayed = Curl::new(&bridge.socket)
        .post("/v1/chat/completions", &body)
        .run();
    assert_eq!(relayed.status, 200, "{relayed:?}");
    let outsider = Curl::as_nobody(&bridge.socket, "")
        .post("/v1/chat/completions", &body)
        .run();
    outsider.error(403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_clients_need_a_configured_token() {
    let bus = TestBus::start();
    let _daemon = Daemon::start(&bus, "").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = dir.path().join("tokens");
    let token = "0123456789abcdef0123456789abcdef";
    std::fs::write(&tokens, format!("# test token\n{token}\n")).expect("write tokens");
    let (_bridge, port) = Bridge::start_tcp(&bus, &tokens);
    let body = chat_body(json!({}));

    let err = Curl::tcp(port)
        .post("/v1/chat/completions", &body)
        .run()
        .error(401);
    assert_eq!(err["type"], "authentication_error");
    let err = Curl::tcp(port)
        .arg("-H")
        .arg("Authorization: Bearer 0123456789abcdef0123456789abcdeX")
        .post("/v1/chat/completions", &body)
        .run()
        .error(401);
    assert_eq!(err["code"], "invalid_api_key");
    let ok = Curl::tcp(port)
        .arg("-H")
        .arg(&format!("Authorization: Bearer {token}"))
        .post("/v1/chat/completions", &body)
        .run();
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.json()["object"], "chat.completion");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_openmetrics_and_count_requests() {
    let bus = TestBus::start();
    let _daemon = Daemon::start(&bus, "").await;
    let bridge = Bridge::start(&bus, &[]);
    let body = chat_body(json!({"max_tokens": 3, "ignore_eos": true}));
    for _ in 0..2 {
        let r = Curl::new(&bridge.socket)
            .post("/v1/chat/completions", &body)
            .run();
        assert_eq!(r.status, 200, "{r:?}");
    }
    // Refused at admission: no such model.
    Curl::new(&bridge.socket)
        .post(
            "/v1/chat/completions",
            &chat_body(json!({"model": "nonexistent"})),
        )
        .run()
        .error(404);

    let venv = std::env::var_os("MOE_VENV")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| moed_test_harness::repo_root().join(".venv"));
    let script = moed_test_harness::repo_root().join("daemon/http/tests/metrics_client.py");
    let out = std::process::Command::new(venv.join("bin/python3"))
        .arg(&script)
        .arg(&bridge.socket)
        .output()
        .expect("python3 of $MOE_VENV");
    assert!(
        out.status.success(),
        "metrics_client.py failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let types = &parsed["types"];
    assert_eq!(types["moed_requests"], "counter", "{parsed}");
    assert_eq!(
        types["moed_time_to_first_token_seconds"], "histogram",
        "{parsed}"
    );
    assert_eq!(types["moed_active_requests"], "gauge", "{parsed}");
    let s = &parsed["samples"];
    let value = |key: &str| {
        s[key]
            .as_f64()
            .unwrap_or_else(|| panic!("no sample {key}: {parsed}"))
    };
    assert_eq!(value("moed_requests_total{outcome=length}"), 2.0);
    assert_eq!(value("moed_requests_total{outcome=rejected}"), 1.0);
    assert_eq!(value("moed_requests_total{outcome=stop}"), 0.0);
    assert_eq!(value("moed_requests_total{outcome=cancelled}"), 0.0);
    assert_eq!(value("moed_completion_tokens_total{}"), 6.0);
    assert!(value("moed_prompt_tokens_total{}") >= 2.0);
    assert_eq!(value("moed_time_to_first_token_seconds_count{}"), 2.0);
    assert_eq!(
        value("moed_time_to_first_token_seconds_bucket{le=+Inf}"),
        2.0
    );
    assert!(value("moed_time_to_first_token_seconds_sum{}") > 0.0);
    assert_eq!(value("moed_active_requests{}"), 0.0);
    assert_eq!(value("moed_queued_requests{}"), 0.0);
    // Two requests ran (the refused one never queued); three tokens each, so two intervals each.
    assert_eq!(types["moed_queue_wait_seconds"], "histogram", "{parsed}");
    assert_eq!(value("moed_queue_wait_seconds_count{}"), 2.0);
    assert_eq!(
        types["moed_token_interval_seconds"], "histogram",
        "{parsed}"
    );
    assert_eq!(value("moed_token_interval_seconds_count{}"), 4.0);
    assert!(value("moed_token_interval_seconds_sum{}") > 0.0);
    // Per model: cache counters, and activations per layer and expert that add up to the
    // tokens routed (each token to top-k experts in each MoE layer).
    assert_eq!(types["moed_expert_cache_hits"], "counter", "{parsed}");
    let hits = value(&format!("moed_expert_cache_hits_total{{model={MODEL}}}"));
    let misses = value(&format!("moed_expert_cache_misses_total{{model={MODEL}}}"));
    assert!(hits + misses > 0.0, "{parsed}");
    let routed: f64 = s
        .as_object()
        .expect("samples")
        .iter()
        .filter(|(k, _)| {
            k.starts_with("moed_expert_activations_total{")
                && k.ends_with(&format!("model={MODEL}}}"))
        })
        .filter_map(|(_, v)| v.as_f64())
        .sum();
    assert!(routed > 0.0, "{parsed}");
    // Families with no member here (no data source or plugin configured) are still declared.
    assert_eq!(types["moed_source_searches"], "counter", "{parsed}");
    assert_eq!(types["moed_plugin_calls"], "counter", "{parsed}");
}
