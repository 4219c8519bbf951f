use serde_json::json;

use super::*;

#[test]
fn a_chat_request_becomes_messages_and_options() {
    let p = chat(&json!({
        "model": "m",
        "messages": [
            {"role": "developer", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]},
        ],
        "max_completion_tokens": 5, "max_tokens": 99,
        "temperature": 0, "top_p": 0.5, "seed": 7, "stop": "\n",
        "stream": true, "stream_options": {"include_usage": true},
        "presence_penalty": 0, "n": 1, "user": "ignored", "logit_bias": {}
    }))
    .expect("valid");
    assert_eq!(
        p.input,
        Input::Chat(vec![
            ChatMessage::new("system", "be brief"),
            ChatMessage::new("user", "Hi there")
        ])
    );
    assert_eq!(p.options.model.as_deref(), Some("m"));
    assert_eq!(p.options.max_tokens, Some(5), "max_completion_tokens wins");
    assert_eq!(p.options.temperature, Some(0.0));
    assert_eq!(p.options.seed, Some(7));
    assert_eq!(p.options.stop, vec!["\n".to_string()]);
    assert!(p.stream && p.include_usage);
    assert!(!p.options.raw);
}

#[test]
fn a_completion_is_raw_text() {
    let p = completion(&json!({"prompt": ["Once"], "max_tokens": 3})).expect("valid");
    assert_eq!(p.input, Input::Prompt("Once".into()));
    assert!(p.options.raw);
    assert_eq!(p.options.max_tokens, Some(3));
    assert!(!p.stream);
}

fn refused(result: Result<Prepared, ApiError>) -> ApiError {
    result.expect_err("refused")
}

#[test]
fn refusals_name_the_field_and_never_echo_it() {
    let long = "x".repeat(100_000);
    let cases = [
        (json!({"prompt": "a\u{0}b"}), "prompt", "NUL"),
        (json!({"prompt": [1, 2]}), "prompt", "one prompt"),
        (json!({"prompt": "a", "n": 2}), "n", "n = 1"),
        (
            json!({"prompt": "a", "max_tokens": 0}),
            "max_tokens",
            "integer from 1",
        ),
        (
            json!({"prompt": "a", "max_tokens": -3}),
            "max_tokens",
            "integer from 1",
        ),
        (
            json!({"prompt": "a", "temperature": "hot"}),
            "temperature",
            "number",
        ),
        (json!({"prompt": "a", "stop": [""]}), "stop", "empty"),
        (
            json!({"prompt": "a", "stop": vec!["s"; 17]}),
            "stop",
            "at most 16",
        ),
        (
            json!({"prompt": "a", "stop": [long.clone()]}),
            "stop",
            "too long",
        ),
        (
            json!({"prompt": "a", "model": long.clone()}),
            "model",
            "too long",
        ),
        (
            json!({"prompt": "a", "frequency_penalty": 1.5}),
            "frequency_penalty",
            "not supported",
        ),
        (
            json!({"prompt": "a", "echo": true}),
            "echo",
            "not supported",
        ),
        (
            json!({"prompt": "a", "stream": "yes"}),
            "stream",
            "true or false",
        ),
        (json!([1]), "body", "object"),
    ];
    for (body, param, needle) in cases {
        let err = refused(completion(&body));
        assert_eq!(err.param.as_deref(), Some(param), "{body}");
        assert!(err.message.contains(needle), "{}", err.message);
        assert!(err.message.len() < 400, "{}", err.message.len());
        assert_eq!(err.status.as_u16(), 400);
    }
}

#[test]
fn chat_refusals() {
    let too_many: Vec<_> = (0..1025)
        .map(|_| json!({"role": "user", "content": "x"}))
        .collect();
    let cases = [
        (json!({}), "messages", "required"),
        (json!({"messages": []}), "messages", "empty"),
        (json!({"messages": too_many}), "messages", "at most 1024"),
        (
            json!({"messages": [{"role": "pirate", "content": "x"}]}),
            "messages[0].role",
            "not a role",
        ),
        (
            json!({"messages": [{"role": "tool", "content": "x"}]}),
            "messages[0].role",
            "not supported",
        ),
        (
            json!({"messages": [{"role": "user", "content": "ok"}, {"role": "user", "content": "\u{0}"}]}),
            "messages[1].content",
            "NUL",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}),
            "messages[0].content[0]",
            "not supported",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}),
            "tools",
            "not supported",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "grammar"}}),
            "response_format.type",
            "not supported",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_schema"}}),
            "response_format.json_schema",
            "is required",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": [1]}}}),
            "response_format.json_schema.schema",
            "must be a JSON schema",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"description": "a".repeat(70_000)}}}}),
            "response_format.json_schema.schema",
            "at most 65536",
        ),
    ];
    for (body, param, needle) in cases {
        let err = refused(chat(&body));
        assert_eq!(err.param.as_deref(), Some(param), "{body}");
        assert!(err.message.contains(needle), "{}", err.message);
    }
}

#[test]
fn response_format_becomes_the_output_constraint() {
    use moed_dbus::OutputConstraint;
    let with = |format: Value| {
        chat(&json!({"messages": [{"role": "user", "content": "x"}], "response_format": format}))
            .expect("accepted")
            .options
            .constraint
    };
    assert_eq!(with(json!({"type": "text"})), None);
    assert_eq!(with(Value::Null), None);
    assert_eq!(
        with(json!({"type": "json_object"})),
        Some(OutputConstraint::JsonObject)
    );
    let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
    let Some(OutputConstraint::JsonSchema(text)) = with(json!({
        "type": "json_schema",
        "json_schema": {"name": "thing", "schema": schema, "strict": true}
    })) else {
        panic!("expected a json_schema constraint");
    };
    assert_eq!(serde_json::from_str::<Value>(&text).expect("JSON"), schema);
}
