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
            ChatTurn::new("system", "be brief"),
            ChatTurn::new("user", "Hi there")
        ])
    );
    assert_eq!(p.options.model.as_deref(), Some("m"));
    assert_eq!(p.options.max_tokens, Some(5), "max_completion_tokens wins");
    assert_eq!(p.options.temperature, Some(0.0));
    assert_eq!(p.options.seed, Some(7));
    assert_eq!(p.options.stop, vec!["\n".to_string()]);
    assert!(p.stream && p.include_usage);
    assert!(!p.options.raw);
    assert_eq!(p.options.tools, None);
    assert_eq!(p.options.tool_choice, None);
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
            json!({"messages": [{"role": "function", "name": "f", "content": "x"}]}),
            "messages[0].role",
            "role tool",
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
            "tools[0].function",
            "must be an object",
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

fn weather_tools() -> Value {
    json!([
        {"type": "function", "function": {
            "name": "get_weather", "description": "The weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            "strict": true, "x-unknown": 1,
        }, "cache_control": {}},
        {"function": {"name": "get_time"}},
    ])
}

fn user(extra: Value) -> Value {
    let mut body = json!({"messages": [{"role": "user", "content": "x"}]});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    body
}

#[test]
fn tools_and_tool_choice_become_options() {
    use moed_dbus::ToolChoice;
    let p = chat(&user(json!({
        "tools": weather_tools(),
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": false,
    })))
    .expect("valid");
    assert_eq!(
        p.options.tool_choice,
        Some(ToolChoice::Function("get_weather".into()))
    );
    let sent: Value =
        serde_json::from_str(p.options.tools.as_deref().expect("tools")).expect("JSON");
    // The fields moed reads, the rest left out; the type OpenAI defaults to is written.
    assert_eq!(
        sent,
        json!([
            {"type": "function", "function": {
                "name": "get_weather", "description": "The weather in a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
                "strict": true,
            }},
            {"type": "function", "function": {"name": "get_time"}},
        ])
    );
    for (choice, expected) in [
        ("auto", ToolChoice::Auto),
        ("none", ToolChoice::None),
        ("required", ToolChoice::Required),
    ] {
        let p = chat(&user(
            json!({"tools": weather_tools(), "tool_choice": choice}),
        ))
        .expect(choice);
        assert_eq!(p.options.tool_choice, Some(expected));
    }
    // No tools: an empty list is none, and auto/none need none.
    let p = chat(&user(
        json!({"tools": [], "tool_choice": "none", "parallel_tool_calls": null}),
    ))
    .expect("valid");
    assert_eq!(p.options.tools, None);
    assert_eq!(p.options.tool_choice, Some(ToolChoice::None));
}

#[test]
fn tool_calls_and_results_become_turn_extras() {
    let p = chat(&json!({"messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": null, "refusal": null, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}},
            {"id": "call_2", "function": {"name": "get_time", "arguments": {"tz": "CET"}}},
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "sunny"}]},
        {"role": "tool", "tool_call_id": "call_2", "name": "get_time", "content": "noon"},
    ]}))
    .expect("valid");
    let Input::Chat(turns) = p.input else {
        panic!("a chat")
    };
    assert_eq!(turns[0], ChatTurn::new("user", "Weather in Paris?"));
    assert_eq!(turns[1].role, "assistant");
    assert_eq!(turns[1].content, "");
    assert_eq!(turns[1].extras.len(), 1);
    let calls: Value = serde_json::from_str(&turns[1].extras["tool_calls"]).expect("JSON");
    assert_eq!(
        calls,
        json!([
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}},
            {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{\"tz\":\"CET\"}"}},
        ])
    );
    assert_eq!(
        turns[2],
        ChatTurn::new("tool", "sunny").with("tool_call_id", "call_1")
    );
    assert_eq!(
        turns[3],
        ChatTurn::new("tool", "noon")
            .with("tool_call_id", "call_2")
            .with("name", "get_time")
    );
    // An empty tool_calls list is no calls; a user's participant name is OpenAI's label only.
    let p = chat(&json!({"messages": [
        {"role": "user", "name": "any name at all", "content": "x"},
        {"role": "assistant", "content": "y", "tool_calls": []},
    ]}))
    .expect("valid");
    let Input::Chat(turns) = p.input else {
        panic!("a chat")
    };
    assert!(turns.iter().all(|t| t.extras.is_empty()), "{turns:?}");
}

#[test]
fn tool_refusals_name_the_field_and_quote_short() {
    let long = "f".repeat(100_000);
    let call = |f: Value| {
        json!({"messages": [
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": "", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "ok", "arguments": "{}"}}, f]},
        ]})
    };
    let many_tools: Vec<_> = (0..129)
        .map(|i| json!({"type": "function", "function": {"name": format!("f{i}")}}))
        .collect();
    let many_calls: Vec<_> = (0..129).map(|i| json!({"id": i})).collect();
    let cases = [
        (user(json!({"tools": {"a": 1}})), "tools", "must be a list"),
        (
            user(json!({"tools": many_tools})),
            "tools",
            "129 tools, at most 128",
        ),
        (user(json!({"tools": [7]})), "tools[0]", "must be an object"),
        (
            user(
                json!({"tools": [{"type": "function", "function": {"name": "a"}}, {"type": "web_search"}]}),
            ),
            "tools[1].type",
            "not supported",
        ),
        (
            user(
                json!({"tools": [{"type": "function", "function": {"name": "a"}}, {"type": "function", "function": "a"}]}),
            ),
            "tools[1].function",
            "must be an object",
        ),
        (
            user(json!({"tools": [{"function": {"name": long.clone()}}]})),
            "tools[0].function.name",
            "not a function name",
        ),
        (
            user(json!({"tools": [{"function": {"name": "get weather"}}]})),
            "tools[0].function.name",
            "not a function name",
        ),
        (
            user(json!({"tools": [{"function": {}}]})),
            "tools[0].function.name",
            "required",
        ),
        (
            user(json!({"tools": [{"function": {"name": "a"}}, {"function": {"name": "a"}}]})),
            "tools[1].function.name",
            "also tools[0]",
        ),
        (
            user(json!({"tools": [{"function": {"name": "a", "parameters": "{}"}}]})),
            "tools[0].function.parameters",
            "JSON schema",
        ),
        (
            user(json!({"tools": [{"function": {"name": "a", "description": "a\u{0}"}}]})),
            "tools[0].function.description",
            "NUL",
        ),
        (
            user(json!({"tools": [{"function": {"name": "a", "strict": "yes"}}]})),
            "tools[0].function.strict",
            "true or false",
        ),
        (
            user(
                json!({"tools": [{"function": {"name": "a", "description": "d".repeat(300_000)}}]}),
            ),
            "tools",
            "at most 262144",
        ),
        (
            user(json!({"tool_choice": "required"})),
            "tool_choice",
            "no tools",
        ),
        (
            user(json!({"tool_choice": {"type": "function", "function": {"name": "a"}}})),
            "tool_choice",
            "no tools",
        ),
        (
            user(json!({"tools": weather_tools(), "tool_choice": "always"})),
            "tool_choice",
            "not auto, none or required",
        ),
        (
            user(
                json!({"tools": weather_tools(), "tool_choice": {"type": "function", "function": {"name": long.clone()}}}),
            ),
            "tool_choice.function.name",
            "not a function name",
        ),
        (
            user(
                json!({"tools": weather_tools(), "tool_choice": {"type": "function", "function": {"name": "get_news"}}}),
            ),
            "tool_choice.function.name",
            "not among tools",
        ),
        (
            user(json!({"tools": weather_tools(), "tool_choice": {"type": "allowed_tools"}})),
            "tool_choice.type",
            "not supported",
        ),
        (
            user(json!({"tools": weather_tools(), "tool_choice": {"type": "function"}})),
            "tool_choice.function",
            "must be an object",
        ),
        (
            user(json!({"parallel_tool_calls": 1})),
            "parallel_tool_calls",
            "true or false",
        ),
        (
            user(json!({"functions": [{"name": "f"}]})),
            "functions",
            "send tools",
        ),
        (
            user(json!({"function_call": "auto"})),
            "function_call",
            "send tool_choice",
        ),
        (
            json!({"messages": [{"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}}]}),
            "messages[0].function_call",
            "send tool_calls",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x", "tool_calls": [{"id": "c"}]}]}),
            "messages[0].tool_calls",
            "only assistant",
        ),
        (
            json!({"messages": [{"role": "assistant", "content": "x", "tool_calls": {"id": "c"}}]}),
            "messages[0].tool_calls",
            "must be a list",
        ),
        (
            json!({"messages": [{"role": "assistant", "content": "", "tool_calls": many_calls}]}),
            "messages[0].tool_calls",
            "129 calls, at most 128",
        ),
        (
            call(json!({"type": "function", "function": {"name": "f", "arguments": "{}"}})),
            "messages[1].tool_calls[1].id",
            "must be a string",
        ),
        (
            call(json!({"id": long.clone(), "function": {"name": "f", "arguments": "{}"}})),
            "messages[1].tool_calls[1].id",
            "too long",
        ),
        (
            call(
                json!({"id": "c2", "type": "custom", "function": {"name": "f", "arguments": "{}"}}),
            ),
            "messages[1].tool_calls[1].type",
            "not supported",
        ),
        (
            call(json!({"id": "c2", "function": {"name": "f f", "arguments": "{}"}})),
            "messages[1].tool_calls[1].function.name",
            "not a function name",
        ),
        (
            call(json!({"id": "c2", "function": {"name": "f"}})),
            "messages[1].tool_calls[1].function.arguments",
            "required",
        ),
        (
            call(json!({"id": "c2", "function": {"name": "f", "arguments": "{\"a\": \"\u{0}\"}"}})),
            "messages[1].tool_calls[1].function.arguments",
            "NUL",
        ),
        (
            call(json!({"id": "c2", "function": {"name": "f", "arguments": [1]}})),
            "messages[1].tool_calls[1].function.arguments",
            "string of JSON",
        ),
        (
            json!({"messages": [{"role": "tool", "content": "sunny"}]}),
            "messages[0].tool_call_id",
            "is required",
        ),
        (
            json!({"messages": [{"role": "tool", "tool_call_id": "", "content": "sunny"}]}),
            "messages[0].tool_call_id",
            "empty",
        ),
        (
            json!({"messages": [{"role": "tool", "tool_call_id": "c\u{0}", "content": "sunny"}]}),
            "messages[0].tool_call_id",
            "NUL",
        ),
        (
            json!({"messages": [{"role": "tool", "tool_call_id": 5, "content": "sunny"}]}),
            "messages[0].tool_call_id",
            "must be a string",
        ),
        (
            json!({"messages": [{"role": "tool", "tool_call_id": "c", "name": long.clone(), "content": "sunny"}]}),
            "messages[0].name",
            "not a function name",
        ),
        (
            json!({"messages": [{"role": "tool", "tool_call_id": "c", "content": "\u{0}"}]}),
            "messages[0].content",
            "NUL",
        ),
        (
            json!({"messages": [{"role": "user", "tool_call_id": "c", "content": "x"}]}),
            "messages[0].tool_call_id",
            "only tool messages",
        ),
    ];
    for (body, param, needle) in cases {
        let err = refused(chat(&body));
        assert_eq!(err.param.as_deref(), Some(param), "{}", err.message);
        assert!(err.message.contains(needle), "{param}: {}", err.message);
        assert!(
            !err.message.contains(&"f".repeat(65)),
            "echoed: {}",
            err.message
        );
        assert!(err.message.len() < 400, "{}", err.message.len());
        assert_eq!(err.status.as_u16(), 400);
    }
}
