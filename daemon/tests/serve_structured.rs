//! Constrained decoding end to end over a private bus: the fixture model's weights are random, so
//! only the `json_schema` / `regex` options can make its answers valid; bad and hostile
//! constraints are `InvalidArgument` before any generation.

mod serve_util;

use moed_dbus::{ChatMessage, GenerateOptions, MoedError, OutputConstraint};
use serde_json::Value;
use serve_util::*;

/// Every string, number and list is bounded, and no other keys may appear, so any complete answer
/// fits well within `max_tokens`.
const SCHEMA: &str = r#"{
  "type": "object",
  "properties": {
    "name": {"type": "string", "maxLength": 6},
    "age": {"type": "integer", "minimum": 0, "maximum": 99},
    "color": {"enum": ["red", "green", "blue"]},
    "ok": {"type": "boolean"},
    "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 2}
  },
  "required": ["name", "age", "color", "ok"],
  "additionalProperties": false
}"#;

fn options(constraint: OutputConstraint, temperature: f64, seed: u64) -> GenerateOptions {
    GenerateOptions {
        max_tokens: Some(200),
        temperature: Some(temperature),
        seed: Some(seed),
        constraint: Some(constraint),
        ..GenerateOptions::default()
    }
}

/// Checks `text` against [`SCHEMA`] field by field.
fn check(text: &str) {
    let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {text}"));
    let name = obj["name"].as_str().expect("name");
    assert!(name.chars().count() <= 6, "{text}");
    let age = obj["age"].as_i64().expect("age");
    assert!((0..=99).contains(&age), "{text}");
    assert!(["red", "green", "blue"].contains(&obj["color"].as_str().expect("color")));
    assert!(obj["ok"].is_boolean(), "{text}");
    if let Some(tags) = obj.get("tags") {
        let tags = tags.as_array().expect("tags");
        assert!(
            tags.len() <= 2 && tags.iter().all(|t| t == "a" || t == "b"),
            "{text}"
        );
    }
    for key in obj.keys() {
        assert!(
            ["name", "age", "color", "ok", "tags"].contains(&key.as_str()),
            "{text}"
        );
    }
}

fn invalid_message(result: Result<(String, moed_dbus::GenerationInfo), MoedError>) -> String {
    match result {
        Err(err) if err.short_name() == Some("InvalidArgument") => err.to_string(),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_schema_and_regex_constrain_a_random_model() {
    let bus = TestBus::start();
    let setup = DaemonSetup::new();
    let _daemon = Daemon::start(&bus, &setup, "").await;
    let conn = bus.connect().await;
    let engine = engine(&conn).await;
    let schema = OutputConstraint::JsonSchema(SCHEMA.into());

    // Greedy and sampled, through Complete and Chat: every answer is complete and valid.
    for (temperature, seed) in [(0.0, 1), (1.0, 2), (1.0, 3), (0.7, 4)] {
        let (text, info) = engine
            .complete(
                "Describe a person.",
                options(schema.clone(), temperature, seed).to_dict(),
            )
            .await
            .expect("Complete");
        assert_eq!(info.finish_reason, "stop", "{info:?}");
        check(&text);
        let (text, info) = engine
            .chat(
                &[ChatMessage::new("user", "Describe a person as JSON.")],
                options(schema.clone(), temperature, seed).to_dict(),
            )
            .await
            .expect("Chat");
        assert!(
            ["stop", "eos"].contains(&info.finish_reason.as_str()),
            "{info:?}"
        );
        check(&text);
    }

    let (text, info) = engine
        .complete(
            "A code:",
            options(OutputConstraint::Regex("[A-Z]{3}-[0-9]{2}".into()), 1.0, 5).to_dict(),
        )
        .await
        .expect("Complete with regex");
    assert_eq!(info.finish_reason, "stop", "{info:?}");
    let (letters, digits) = text.split_once('-').expect("a dash");
    assert!(
        letters.len() == 3 && letters.chars().all(|c| c.is_ascii_uppercase()),
        "{text}"
    );
    assert!(
        digits.len() == 2 && digits.chars().all(|c| c.is_ascii_digit()),
        "{text}"
    );

    let (text, _) = engine
        .complete(
            "Anything:",
            GenerateOptions {
                max_tokens: Some(400),
                ..options(OutputConstraint::JsonObject, 0.0, 6)
            }
            .to_dict(),
        )
        .await
        .expect("Complete with json_object");
    assert!(text.starts_with('{'), "{text}");

    // Refused before generation: a schema llguidance cannot compile, and hostile inputs the
    // engine bounds (the contract's own checks are unit-tested in moed-dbus).
    let msg = invalid_message(
        engine
            .complete(
                "x",
                options(
                    OutputConstraint::JsonSchema(r#"{"type": 5}"#.into()),
                    0.0,
                    1,
                )
                .to_dict(),
            )
            .await,
    );
    assert!(msg.contains("option 'json_schema'"), "{msg}");
    let deep = format!("{}{{}}{}", "{\"items\":".repeat(100), "}".repeat(100));
    let msg = invalid_message(
        engine
            .complete(
                "x",
                options(OutputConstraint::JsonSchema(deep), 0.0, 1).to_dict(),
            )
            .await,
    );
    assert!(msg.contains("nests deeper than 64"), "{msg}");
    let msg = invalid_message(
        engine
            .complete(
                "x",
                options(OutputConstraint::Regex("(a{1000}){1000}".into()), 0.0, 1).to_dict(),
            )
            .await,
    );
    assert!(
        msg.contains("option 'regex'") && msg.contains("at most 10000"),
        "{msg}"
    );
    let msg = invalid_message(
        engine
            .complete(
                "x",
                options(OutputConstraint::JsonSchema("{nope".into()), 0.0, 1).to_dict(),
            )
            .await,
    );
    assert!(
        msg.contains("option 'json_schema'") && msg.contains("not JSON"),
        "{msg}"
    );

    // The daemon still answers after all of that.
    let (text, _) = engine
        .complete("Describe a person.", options(schema, 0.0, 1).to_dict())
        .await
        .expect("Complete after refusals");
    check(&text);
}
