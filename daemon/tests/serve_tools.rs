//! Tool calls end to end over a private bus: a fixture model with Qwen3's chat template is offered
//! tools; its weights are random, so a required call (`tool_choice`) is what makes it call, and the
//! call must come back parsed, valid under the function's schema, in `info.tool_calls` and never
//! in the streamed text. The turns that carry calls and results render, and bad input is refused
//! by name before generation.

mod serve_util;

use moed_dbus::client::{RequestEvent, generate_chat_turns_dict};
use moed_dbus::{ChatMessage, ChatTurn, GenerateOptions, MoedError, ToolChoice};
use serde_json::Value;
use serve_util::*;

const TOOLS: &str = r#"[{"type": "function", "function": {"name": "get_weather",
  "description": "Current weather in a city",
  "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 10},
    "unit": {"enum": ["celsius", "fahrenheit"]}}, "required": ["city", "unit"],
    "additionalProperties": false}}},
  {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object",
    "properties": {"zone": {"type": "string", "maxLength": 6}}, "required": ["zone"],
    "additionalProperties": false}}}]"#;

fn options(choice: ToolChoice, seed: u64) -> GenerateOptions {
    GenerateOptions {
        max_tokens: Some(160),
        temperature: Some(1.0),
        seed: Some(seed),
        tools: Some(TOOLS.into()),
        tool_choice: Some(choice),
        ..GenerateOptions::default()
    }
}

/// The calls of `info.tool_calls`, checked against the contract's shape; returns (name, args).
fn calls(json: &str, request_id: &str) -> Vec<(String, Value)> {
    let list: Vec<Value> = serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"));
    list.iter()
        .enumerate()
        .map(|(n, c)| {
            assert_eq!(c["id"], format!("call_{request_id}_{n}"), "{json}");
            assert_eq!(c["type"], "function", "{json}");
            let name = c["function"]["name"].as_str().expect("name").to_string();
            let args = c["function"]["arguments"].as_str().expect("arguments text");
            let args: Value = serde_json::from_str(args).expect("arguments parse");
            (name, args)
        })
        .collect()
}

fn check_weather(args: &Value) {
    let city = args["city"].as_str().expect("city");
    assert!(city.chars().count() <= 10, "{args}");
    assert!(
        ["celsius", "fahrenheit"].contains(&args["unit"].as_str().expect("unit")),
        "{args}"
    );
}

fn invalid(result: Result<(String, moed_dbus::GenerationInfo), MoedError>) -> String {
    match result {
        Err(err) if err.short_name() == Some("InvalidArgument") => err.to_string(),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_required_call_comes_back_parsed_and_its_result_renders() {
    let bus = TestBus::start();
    let mut setup = DaemonSetup::new();
    setup.models = tools_models_dir(setup.work.path());
    setup.default_name = "qwen3_tools".into();
    let _daemon = Daemon::start(&bus, &setup, "").await;
    let conn = bus.connect().await;
    let engine = engine(&conn).await;
    let user = [ChatTurn::new("user", "What is the weather in Oslo?")];

    // A named function: through ChatTurns and Chat alike, sampled, always a valid call.
    for seed in 1..=3 {
        let (text, info) = engine
            .chat_turns(
                &user,
                options(ToolChoice::Function("get_weather".into()), seed).to_dict(),
            )
            .await
            .expect("ChatTurns");
        assert_eq!(info.finish_reason, "tool_calls", "{info:?}");
        assert_eq!(text, "", "the call is not text: {text:?}");
        let got = calls(
            info.tool_calls.as_deref().expect("tool_calls"),
            &info.request_id,
        );
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, "get_weather");
        check_weather(&got[0].1);
    }
    let (_, info) = engine
        .chat(
            &[ChatMessage::new("user", "Time in Tokyo?")],
            options(ToolChoice::Required, 7).to_dict(),
        )
        .await
        .expect("Chat");
    let got = calls(
        info.tool_calls.as_deref().expect("tool_calls"),
        &info.request_id,
    );
    assert!(
        ["get_weather", "get_time"].contains(&got[0].0.as_str()),
        "{got:?}"
    );

    // Streamed: no Token carries call text; Finished carries the call.
    let mut stream = generate_chat_turns_dict(
        &conn,
        &user,
        options(ToolChoice::Function("get_weather".into()), 4).to_dict(),
    )
    .await
    .expect("GenerateChatTurns");
    let mut streamed = String::new();
    let info = loop {
        match stream.next().await.expect("event").expect("signal") {
            RequestEvent::Token { text, .. } => streamed.push_str(&text),
            RequestEvent::Finished { info, .. } => break info,
            RequestEvent::Alert { .. } => {}
        }
    };
    assert_eq!(info.finish_reason, "tool_calls", "{info:?}");
    assert!(!streamed.contains("<tool_call>"), "{streamed:?}");
    check_weather(&calls(info.tool_calls.as_deref().expect("calls"), &info.request_id)[0].1);

    // The call and its result go back as turns; `none` shows no tools and parses nothing.
    let call_json = info.tool_calls.expect("calls");
    let first_id = calls(&call_json, &info.request_id);
    assert_eq!(first_id.len(), 1);
    let id = format!("call_{}_0", info.request_id);
    let turns = [
        user[0].clone(),
        ChatTurn::new("assistant", "").with("tool_calls", call_json.clone()),
        ChatTurn::new("tool", r#"{"temperature": 3}"#)
            .with("tool_call_id", id)
            .with("name", "get_weather"),
    ];
    let (_, info) = engine
        .chat_turns(
            &turns,
            GenerateOptions {
                max_tokens: Some(8),
                ..options(ToolChoice::None, 5)
            }
            .to_dict(),
        )
        .await
        .expect("answer after the result");
    assert_eq!(info.tool_calls, None);
    assert!(info.prompt_tokens > 20, "{info:?}");

    // Refused by name, before generation.
    let hostile = [
        (
            vec![ChatTurn::new("user", "x").with("tool_calls", "[]")],
            options(ToolChoice::Auto, 1),
            "messages[0].tool_calls: only a turn of role assistant",
        ),
        (
            vec![ChatTurn::new("user", "x").with("color", "red")],
            options(ToolChoice::Auto, 1),
            "messages[0]: unknown extra 'color'",
        ),
        (
            vec![ChatTurn::new("assistant", "").with("tool_calls", r#"[{"function": 1}]"#)],
            options(ToolChoice::Auto, 1),
            "messages[0].tool_calls[0].function",
        ),
        (
            user.to_vec(),
            GenerateOptions {
                tools: Some(r#"[{"type": "function", "function": {"name": "a b"}}]"#.into()),
                ..options(ToolChoice::Auto, 1)
            },
            "option 'tools': tools[0].function.name",
        ),
        (
            user.to_vec(),
            GenerateOptions {
                tools: Some(
                    r##"[{"type": "function", "function": {"name": "f"}}, {"type": "function", "function": {"name": "g", "parameters": {"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}}}}]"##
                        .into(),
                ),
                ..options(ToolChoice::Required, 1)
            },
            "option 'tools': tools[1].function.parameters",
        ),
        (
            user.to_vec(),
            options(ToolChoice::Function("send_mail".into()), 1),
            "option 'tool_choice': 'send_mail' is not among the tools",
        ),
        (
            user.to_vec(),
            GenerateOptions {
                model: Some("deepseek_v3".into()),
                ..options(ToolChoice::Auto, 1)
            },
            "ModelNotLoaded",
        ),
    ];
    for (turns, opts, expected) in hostile {
        let result = engine.chat_turns(&turns, opts.to_dict()).await;
        let msg = match result {
            Err(err) if expected == "ModelNotLoaded" => format!("{:?}", err.short_name()),
            other => invalid(other),
        };
        assert!(msg.contains(expected), "{expected}: {msg}");
    }
    let msg = invalid(
        engine
            .complete("x", options(ToolChoice::Auto, 1).to_dict())
            .await,
    );
    assert!(msg.contains("option 'tools' applies to Chat"), "{msg}");

    // Refusals are the client's: counted as rejected, never as errors, also the grammar that
    // failed only once the request was running.
    let metrics = engine.metrics().await.expect("Metrics");
    let count = |outcome: &str| metrics.requests.get(outcome).copied().unwrap_or(0);
    assert_eq!(count("error"), 0, "{:?}", metrics.requests);
    assert!(count("rejected") >= 6, "{:?}", metrics.requests);
}

/// The default fixture's template renders no tools: offering them is refused by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_without_tools_refuses_them() {
    let bus = TestBus::start();
    let setup = DaemonSetup::new();
    let _daemon = Daemon::start(&bus, &setup, "").await;
    let conn = bus.connect().await;
    let engine = engine(&conn).await;
    let msg = invalid(
        engine
            .chat(
                &[ChatMessage::new("user", "x")],
                options(ToolChoice::Auto, 1).to_dict(),
            )
            .await,
    );
    assert!(
        msg.contains(
            "option 'tools': the chat template of model 'deepseek_v3' does not render tools"
        ),
        "{msg}"
    );
    // `none` needs no support: the tools are not shown.
    let (_, info) = engine
        .chat(
            &[ChatMessage::new("user", "x")],
            GenerateOptions {
                max_tokens: Some(2),
                ..options(ToolChoice::None, 1)
            }
            .to_dict(),
        )
        .await
        .expect("none");
    assert_eq!(info.tool_calls, None);
}
