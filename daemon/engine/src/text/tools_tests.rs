//! Tests of tool definitions, call parsing per syntax, the call splitter, and the grammar of a
//! required call run against random logits on a real tokenizer.

use std::collections::HashSet;
use std::path::PathBuf;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::text::constraint::{ConstraintCompiler, ConstraintSpec};
use crate::text::sampler::{Sampler, SamplingParams};
use crate::text::tokenizer::TextTokenizer;

const WEATHER: &str = r#"[{"type": "function", "function": {"name": "get_weather",
  "description": "The weather in a city",
  "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12},
    "unit": {"enum": ["c", "f"]}}, "required": ["city", "unit"], "additionalProperties": false}}},
  {"type": "function", "function": {"name": "now"}}]"#;

fn tools() -> Tools {
    ToolRequest::parse(WEATHER, ToolChoice::Auto)
        .expect("tools")
        .tools
}

fn err(text: &str) -> String {
    ToolRequest::parse(text, ToolChoice::Auto)
        .expect_err("refused")
        .to_string()
}

#[test]
fn definitions_are_checked_and_errors_name_the_entry() {
    let t = tools();
    assert_eq!(t.defs.len(), 2);
    assert_eq!(t.defs[1].parameters["type"], "object");
    for (text, expected) in [
        ("{}", "option 'tools': tools: must be a JSON array"),
        ("[1]", "tools[0]: must be an object"),
        (r#"[{"type": "code"}]"#, "tools[0].type"),
        (
            r#"[{"type": "function"}]"#,
            "tools[0].function: must be an object",
        ),
        (
            r#"[{"type": "function", "function": {"name": "a b"}}]"#,
            "tools[0].function.name: 'a b' is not a function name",
        ),
        (
            r#"[{"type": "function", "function": {"name": "f"}}, {"type": "function", "function": {"name": "f"}}]"#,
            "tools[1].function.name: 'f' is named twice",
        ),
        (
            r#"[{"type": "function", "function": {"name": "f", "parameters": 3}}]"#,
            "tools[0].function.parameters",
        ),
        (
            r#"[{"type": "function", "function": {"name": "f", "parameters": {"pattern": "a{100000}"}}}]"#,
            "unrolls",
        ),
        ("not json", "is not JSON"),
    ] {
        let msg = err(text);
        assert!(msg.contains(expected), "{text}: {msg}");
    }
    let many = format!(
        "[{}]",
        vec![r#"{"type": "function", "function": {"name": "f"}}"#; MAX_TOOLS + 1].join(",")
    );
    assert!(err(&many).contains("at most 128"));
    let msg = ToolRequest::parse(WEATHER, ToolChoice::Function("nope".into()))
        .expect_err("unknown")
        .to_string();
    assert!(
        msg.starts_with("option 'tool_choice'") && msg.contains("not among"),
        "{msg}"
    );
}

#[test]
fn hermes_calls_parse_and_malformed_ones_do_not() {
    let t = tools();
    let calls = ToolSyntax::Hermes
        .parse(
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\", \"unit\": \"c\"}}\n</tool_call>\n<tool_call>{\"name\": \"now\", \"arguments\": \"{}\"}</tool_call>",
            &t,
        )
        .expect("calls");
    assert_eq!(
        calls,
        vec![
            ToolCall {
                name: "get_weather".into(),
                arguments: r#"{"city":"Oslo","unit":"c"}"#.into()
            },
            ToolCall {
                name: "now".into(),
                arguments: "{}".into()
            }
        ]
    );
    for bad in [
        "<tool_call>{\"name\": \"other\", \"arguments\": {}}</tool_call>",
        "<tool_call>{\"name\": \"now\", \"arguments\": [1]}</tool_call>",
        "<tool_call>{\"name\": \"now\", \"arguments\": {}}",
        "<tool_call>{\"name\": \"now\"}</tool_call> and then text",
        "<tool_call>not json</tool_call>",
    ] {
        assert_eq!(ToolSyntax::Hermes.parse(bad, &t), None, "{bad}");
    }
}

#[test]
fn deepseek_and_mistral_calls_parse() {
    let t = tools();
    let ds = "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{\"city\": \"Rome\", \"unit\": \"f\"}\n```<｜tool▁call▁end｜>\n<｜tool▁call▁begin｜>function<｜tool▁sep｜>now\n```json\n{}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>";
    let calls = ToolSyntax::DeepSeek.parse(ds, &t).expect("calls");
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].arguments, r#"{"city":"Rome","unit":"f"}"#);
    let bad = ds.replace("```json", "```");
    assert_eq!(ToolSyntax::DeepSeek.parse(&bad, &t), None);

    let m = r#"[TOOL_CALLS] [{"name": "now", "arguments": {}}, {"name": "get_weather", "arguments": {"city": "Ulm", "unit": "c"}}]"#;
    let calls = ToolSyntax::Mistral.parse(m, &t).expect("calls");
    assert_eq!(calls[1].name, "get_weather");
    assert_eq!(ToolSyntax::Mistral.parse("[TOOL_CALLS] [", &t), None);
}

#[test]
fn the_splitter_releases_text_before_the_opening_and_holds_the_rest() {
    let mut s = CallSplitter::new(ToolSyntax::Hermes);
    let mut released = String::new();
    for chunk in ["Let me check.", " <tool", "_ca", "ll>\n{\"name\"", ": 1}"] {
        released.push_str(&s.push(chunk));
    }
    let (held, captured) = s.finish();
    assert_eq!(released, "Let me check. ");
    assert_eq!(held, "");
    assert_eq!(captured.as_deref(), Some("<tool_call>\n{\"name\": 1}"));

    // A prefix of the opening that never completes is text after all.
    let mut s = CallSplitter::new(ToolSyntax::Hermes);
    let released = s.push("a <tool");
    assert_eq!(released, "a ");
    assert_eq!(s.finish(), ("<tool".to_string(), None));
}

#[test]
fn detection_finds_each_syntax_in_published_templates() {
    let qwen3 = include_str!("testdata/qwen3_chat_template.jinja");
    let r1 = include_str!("testdata/deepseek_r1_chat_template.jinja");
    let nemo = include_str!("testdata/mistral_nemo_chat_template.jinja");
    assert_eq!(ToolSyntax::detect(qwen3), Some(ToolSyntax::Hermes));
    assert_eq!(ToolSyntax::detect(r1), Some(ToolSyntax::DeepSeek));
    assert_eq!(ToolSyntax::detect(nemo), Some(ToolSyntax::Mistral));
    assert_eq!(ToolSyntax::detect("{{ messages }}"), None);
}

fn fixture_tokenizer() -> TextTokenizer {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../models/fixtures/qwen3_moe/tokenizer.json");
    TextTokenizer::from_file(&path, None, false).expect("fixture tokenizer")
}

/// Whatever random logits say, a required call comes out complete, parses, names the chosen
/// function and satisfies its schema, in every syntax.
#[test]
fn a_required_call_is_always_well_formed() {
    const EOS: u32 = 1;
    let tok = fixture_tokenizer();
    let compiler = ConstraintCompiler::new(&tok, &HashSet::from([EOS])).expect("compiler");
    let req =
        ToolRequest::parse(WEATHER, ToolChoice::Function("get_weather".into())).expect("tools");
    for syntax in [
        ToolSyntax::Hermes,
        ToolSyntax::DeepSeek,
        ToolSyntax::Mistral,
    ] {
        let lark = syntax.grammar(&req.callable(), &|m| tok.token_to_id(m));
        let spec = ConstraintSpec::Grammar {
            option: "tools",
            lark,
        };
        for seed in 0..4u64 {
            let mut c = compiler.compile(&spec).expect("compiles");
            let mut rng = StdRng::seed_from_u64(seed);
            let mut sampler = Sampler::new(SamplingParams::default(), seed).expect("sampler");
            let mut ids = Vec::new();
            while !c.is_complete() {
                assert!(ids.len() < 400, "{syntax:?} did not complete");
                let mut logits: Vec<f32> = (0..512).map(|_| rng.random_range(-5.0..5.0)).collect();
                c.mask(&mut logits).expect("mask");
                let token = sampler.sample(&logits, &ids).expect("sample");
                c.commit(token).expect("commit");
                ids.push(token);
            }
            let text = tok.decode(&ids).expect("decode");
            let calls = syntax
                .parse(&text, &req.tools)
                .unwrap_or_else(|| panic!("{syntax:?} does not parse: {text:?}"));
            assert_eq!(calls.len(), 1);
            assert_eq!(calls[0].name, "get_weather");
            let args: Value = serde_json::from_str(&calls[0].arguments).expect("json");
            assert!(
                args["city"]
                    .as_str()
                    .is_some_and(|c| c.chars().count() <= 12),
                "{args}"
            );
            assert!(matches!(args["unit"].as_str(), Some("c" | "f")), "{args}");
        }
    }
}
