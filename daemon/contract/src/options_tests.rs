//! Unit tests of option parsing (options.rs).

use super::*;

fn dict(pairs: Vec<(&str, OwnedVariant)>) -> OptionDict {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

fn err_of(pairs: Vec<(&str, OwnedVariant)>) -> String {
    match GenerateOptions::from_dict(&dict(pairs)) {
        Err(MoedError::InvalidArgument(m)) => m,
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

#[test]
fn integers_of_any_width_and_round_trip() {
    let opts = GenerateOptions::from_dict(&dict(vec![
        ("max_tokens", OwnedVariant::from(12i32)),
        ("top_k", OwnedVariant::from(5u8)),
        ("seed", OwnedVariant::from(9i64)),
        ("temperature", OwnedVariant::from(1i32)),
        ("stop", OwnedVariant::from(Str::from("END"))),
    ]))
    .expect("valid");
    assert_eq!(opts.max_tokens, Some(12));
    assert_eq!(opts.top_k, Some(5));
    assert_eq!(opts.seed, Some(9));
    assert_eq!(opts.temperature, Some(1.0));
    assert_eq!(opts.stop, vec!["END".to_string()]);
    let full = GenerateOptions {
        max_tokens: Some(3),
        temperature: Some(0.5),
        top_p: Some(0.9),
        top_k: Some(4),
        min_p: Some(0.1),
        repetition_penalty: Some(1.1),
        seed: Some(u64::MAX),
        stop: vec!["a".into(), "b".into()],
        raw: true,
        system: Some("sys".into()),
        model: Some("m".into()),
        plugins: vec!["p".into()],
        ignore_eos: true,
        plugin_params: vec![
            ("expert_budget.k".into(), "1".into()),
            ("expert_budget.masked".into(), "[3,5]".into()),
        ],
        retrieval: Some(false),
        sources: vec!["handbook".into()],
        constraint: Some(OutputConstraint::JsonSchema(r#"{"type":"object"}"#.into())),
        tools: None,
        tool_choice: None,
    };
    assert_eq!(
        GenerateOptions::from_dict(&full.to_dict()).expect("round trip"),
        full
    );
    for constraint in [
        OutputConstraint::Regex("[a-z]+".into()),
        OutputConstraint::JsonObject,
    ] {
        let opts = GenerateOptions {
            constraint: Some(constraint),
            ..GenerateOptions::default()
        };
        assert_eq!(
            GenerateOptions::from_dict(&opts.to_dict()).expect("round trip"),
            opts
        );
    }
}

#[test]
fn output_constraints_are_checked_and_exclusive() {
    let s = |v: &str| OwnedVariant::from(Str::from(v.to_string()));
    let msg = err_of(vec![("json_schema", s("{}")), ("regex", s("a+"))]);
    assert!(msg.contains("exclude one another"), "{msg}");
    let msg = err_of(vec![
        ("json_object", OwnedVariant::from(true)),
        ("regex", s("a")),
    ]);
    assert!(msg.contains("exclude one another"), "{msg}");
    let msg = err_of(vec![("json_object", OwnedVariant::from(false))]);
    assert!(msg.starts_with("option 'json_object'"), "{msg}");
    let msg = err_of(vec![("regex", s(""))]);
    assert!(msg.starts_with("option 'regex'"), "{msg}");
    let msg = err_of(vec![("regex", s(&"a".repeat(5000)))]);
    assert!(msg.contains("at most 4096 bytes"), "{msg}");
    // Not JSON, and not a schema: named, quoting at most 64 bytes of the text.
    let garbage = format!("{{\"type\": {}", "x".repeat(10_000));
    let msg = err_of(vec![("json_schema", s(&garbage))]);
    assert!(msg.starts_with("option 'json_schema': "), "{msg}");
    assert!(msg.contains("is not JSON") && msg.len() < 300, "{msg}");
    let msg = err_of(vec![("json_schema", s("[1, 2]"))]);
    assert!(msg.contains("not a schema"), "{msg}");
    // 100 MB: refused by its length before it is copied or parsed.
    let huge = format!("{{\"description\": \"{}\"}}", "a".repeat(100 * 1024 * 1024));
    let msg = err_of(vec![("json_schema", s(&huge))]);
    assert!(
        msg.contains("at most 65536 bytes") && msg.len() < 300,
        "{msg}"
    );
    // 10,000 levels in 20 KB: serde_json's recursion limit refuses it at once.
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let msg = err_of(vec![("json_schema", s(&deep))]);
    assert!(msg.contains("recursion limit"), "{msg}");
    let msg = err_of(vec![("json_schema", s("{\"const\": \"a\0\"}"))]);
    assert!(msg.contains("NUL"), "{msg}");
}

#[test]
fn wrong_types_and_values_name_the_key() {
    assert!(
        err_of(vec![("max_tokens", OwnedVariant::from(Str::from("5")))]).contains("'max_tokens'")
    );
    assert!(err_of(vec![("max_tokens", OwnedVariant::from(-1i32))]).contains("out of range"));
    assert!(err_of(vec![("top_p", OwnedVariant::from(0.0f64))]).contains("'top_p'"));
    assert!(err_of(vec![("temperature", OwnedVariant::from(f64::NAN))]).contains("'temperature'"));
    assert!(err_of(vec![("raw", OwnedVariant::from(1u32))]).contains("boolean"));
    assert!(err_of(vec![("stop", OwnedVariant::from(Str::from("")))]).contains("'stop'"));
    assert!(err_of(vec![("model", OwnedVariant::from(true))]).contains("'model'"));
    let unknown = err_of(vec![("temprature", OwnedVariant::from(1.0f64))]);
    assert!(
        unknown.contains("'temprature'") && unknown.contains("temperature"),
        "{unknown}"
    );
}

#[test]
fn nested_variants_are_unwrapped() {
    let inner = Variant::from(7u32);
    let outer = OwnedVariant::try_from(Variant::Variant(Box::new(inner))).expect("variant");
    let opts = GenerateOptions::from_dict(&dict(vec![("max_tokens", outer)])).expect("valid");
    assert_eq!(opts.max_tokens, Some(7));
}

#[test]
fn retrieval_and_sources() {
    let opts = GenerateOptions::from_dict(&dict(vec![
        ("retrieval", OwnedVariant::from(false)),
        ("sources", OwnedVariant::from(Str::from("handbook"))),
    ]))
    .expect("valid");
    assert!(!opts.retrieval_on());
    assert_eq!(opts.sources, ["handbook"]);
    assert!(GenerateOptions::default().retrieval_on());
    assert!(err_of(vec![("retrieval", OwnedVariant::from(1u8))]).contains("'retrieval'"));
    assert!(err_of(vec![("sources", OwnedVariant::from(Str::from("")))]).contains("'sources'"));
    assert!(
        err_of(vec![(
            "plugins",
            OwnedVariant::try_from(Variant::from(vec!["a", "a"])).expect("as")
        )])
        .contains("twice")
    );
}

#[test]
fn score_options() {
    let opts = ScoreOptions::from_dict(&dict(vec![("model", OwnedVariant::from(Str::from("m")))]))
        .expect("valid");
    assert_eq!(opts.model.as_deref(), Some("m"));
    assert!(
        ScoreOptions::from_dict(&dict(vec![("max_tokens", OwnedVariant::from(1u32))])).is_err()
    );
    let full = ScoreOptions {
        model: Some("m".into()),
        plugins: vec!["expert-budget".into()],
        plugin_params: vec![("expert_budget.k".into(), "1".into())],
    };
    assert_eq!(
        ScoreOptions::from_dict(&full.to_dict()).expect("round trip"),
        full
    );
}

fn string_list(n: usize, each: impl Fn(usize) -> String) -> OwnedVariant {
    let items: Vec<String> = (0..n).map(each).collect();
    OwnedVariant::try_from(Variant::from(items)).expect("as")
}

fn assert_short(message: &str) {
    assert!(
        message.len() <= crate::wire::limits::ERROR_MESSAGE && message.len() < 512,
        "{} bytes: {}",
        message.len(),
        &message[..message.len().min(300)]
    );
}

#[test]
fn a_hundred_thousand_plugin_names_are_refused_by_their_count() {
    let names = string_list(100_000, |i| format!("plugin-{i}"));
    let m = err_of(vec![("plugins", names)]);
    assert!(
        m.contains("'plugins'") && m.contains("100000 entries"),
        "{m}"
    );
    assert!(m.contains(&MAX_REQUEST_PLUGINS.to_string()), "{m}");
    assert_short(&m);
    // The same for Score.
    let names = string_list(100_000, |_| "same".into());
    match ScoreOptions::from_dict(&dict(vec![("plugins", names)])) {
        Err(MoedError::InvalidArgument(m)) => assert!(m.contains("100000 entries"), "{m}"),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

#[test]
fn duplicate_plugin_names_are_found_among_the_allowed_count() {
    let names = string_list(MAX_REQUEST_PLUGINS, |i| {
        if i == MAX_REQUEST_PLUGINS - 1 {
            "p0".into()
        } else {
            format!("p{i}")
        }
    });
    let m = err_of(vec![("plugins", names)]);
    assert!(m.contains("'p0' is named twice"), "{m}");
    let ok = string_list(MAX_REQUEST_PLUGINS, |i| format!("p{i}"));
    let opts = GenerateOptions::from_dict(&dict(vec![("plugins", ok)])).expect("distinct");
    assert_eq!(opts.plugins.len(), MAX_REQUEST_PLUGINS);
}

#[test]
fn long_names_and_strings_are_refused_with_a_short_quote() {
    let huge = "n".repeat(20_000_000);
    for key in ["plugins", "sources", "model", "stop"] {
        let m = err_of(vec![(key, OwnedVariant::from(Str::from(huge.as_str())))]);
        assert!(m.contains(&format!("'{key}'")), "{m}");
        assert!(m.contains("20000000 bytes"), "{m}");
        assert_short(&m);
    }
    let m = err_of(vec![(
        "system",
        OwnedVariant::from(Str::from("s".repeat(MAX_SYSTEM_BYTES + 1))),
    )]);
    assert!(m.contains("'system'") && m.contains("at most"), "{m}");
    assert_short(&m);
}

#[test]
fn a_huge_stop_list_is_refused_by_its_count() {
    let m = err_of(vec![("stop", string_list(1_000_000, |_| "x".into()))]);
    assert!(m.contains("'stop'") && m.contains("at most 16"), "{m}");
    let m = err_of(vec![("sources", string_list(10_000, |i| i.to_string()))]);
    assert!(m.contains("'sources'") && m.contains("at most 32"), "{m}");
}

#[test]
fn an_unknown_key_of_any_length_is_quoted_short() {
    let key = "k".repeat(5_000_000);
    let m = err_of(vec![(key.as_str(), OwnedVariant::from(1u32))]);
    assert!(m.starts_with("unknown option 'kkk"), "{}", &m[..80]);
    assert!(m.contains("5000000 bytes"));
    assert_short(&m);
}

#[test]
fn tools_and_tool_choice_round_trip_and_are_checked() {
    let s = |v: &str| OwnedVariant::from(Str::from(v.to_string()));
    for choice in [
        ToolChoice::Auto,
        ToolChoice::None,
        ToolChoice::Required,
        ToolChoice::Function("get_weather".into()),
    ] {
        let opts = GenerateOptions {
            tools: Some(r#"[{"type":"function","function":{"name":"get_weather"}}]"#.into()),
            tool_choice: Some(choice),
            ..GenerateOptions::default()
        };
        assert_eq!(
            GenerateOptions::from_dict(&opts.to_dict()).expect("round trip"),
            opts
        );
    }
    let msg = err_of(vec![("tool_choice", s("required"))]);
    assert!(
        msg.contains("'tool_choice'") && msg.contains("no tools"),
        "{msg}"
    );
    let msg = err_of(vec![("tool_choice", s("get\nweather"))]);
    assert!(msg.contains("expected auto"), "{msg}");
    let msg = err_of(vec![("tool_choice", s(&"x".repeat(65)))]);
    assert!(msg.contains("'tool_choice'"), "{msg}");
    let msg = err_of(vec![("tools", s("[]")), ("json_object", true.into())]);
    assert!(msg.contains("'tools'") && msg.contains("exclude"), "{msg}");
    let msg = err_of(vec![("tools", s("[\0]"))]);
    assert!(msg.contains("NUL"), "{msg}");
    let msg = err_of(vec![("tools", s(&" ".repeat(MAX_TOOLS_BYTES + 1)))]);
    assert!(msg.contains("'tools'"), "{msg}");
    // `none` and `auto` need no tools: a client may always send its default.
    for choice in ["none", "auto"] {
        assert!(GenerateOptions::from_dict(&dict(vec![("tool_choice", s(choice))])).is_ok());
    }
}
