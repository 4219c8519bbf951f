//! Tests of constrained decoding on a real tokenizer (the qwen3_moe fixture's byte-level BPE):
//! random logits stand in for a model, so only the mask can make the output valid.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::text::sampler::{Sampler, SamplingParams};

const EOS: u32 = 1;

fn fixture_tokenizer() -> TextTokenizer {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../models/fixtures/qwen3_moe/tokenizer.json");
    TextTokenizer::from_file(&path, None, false).expect("fixture tokenizer")
}

fn compiler() -> (TextTokenizer, ConstraintCompiler) {
    let tok = fixture_tokenizer();
    let compiler = ConstraintCompiler::new(&tok, &HashSet::from([EOS])).expect("compiler");
    (tok, compiler)
}

const PERSON: &str = r#"{
  "type": "object",
  "properties": {
    "name": {"type": "string", "maxLength": 8},
    "age": {"type": "integer", "minimum": 0, "maximum": 150},
    "color": {"enum": ["red", "green", "blue"]},
    "tags": {"type": "array", "items": {"type": "string", "maxLength": 3}, "maxItems": 2}
  },
  "required": ["name", "age", "color"],
  "additionalProperties": false
}"#;

/// Runs `c` on random logits with `params` until it is complete or chooses EOS; returns the ids
/// (without EOS) and whether it ended by itself within `max` tokens.
fn run(c: &mut Constraint, params: SamplingParams, seed: u64, max: usize) -> (Vec<u32>, bool) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut sampler = Sampler::new(params, seed).expect("sampler");
    let mut ids = Vec::new();
    for _ in 0..max {
        // A few ids past the vocabulary, as models with padded embeddings have.
        let mut logits: Vec<f32> = (0..520).map(|_| rng.random_range(-5.0..5.0)).collect();
        c.mask(&mut logits).expect("mask");
        let token = sampler.sample(&logits, &ids).expect("sample");
        assert!(
            token < 512,
            "an id past the vocabulary was allowed: {token}"
        );
        if token == EOS {
            return (ids, true);
        }
        c.commit(token).expect("commit");
        ids.push(token);
        if c.is_complete() {
            return (ids, true);
        }
    }
    (ids, false)
}

fn check_person(v: &serde_json::Value) {
    let obj = v.as_object().expect("an object");
    let name = obj["name"].as_str().expect("name is a string");
    assert!(name.chars().count() <= 8, "{v}");
    let age = obj["age"].as_i64().expect("age is an integer");
    assert!((0..=150).contains(&age), "{v}");
    assert!(["red", "green", "blue"].contains(&obj["color"].as_str().expect("color")));
    if let Some(tags) = obj.get("tags") {
        let tags = tags.as_array().expect("tags is an array");
        assert!(tags.len() <= 2, "{v}");
        assert!(
            tags.iter()
                .all(|t| t.as_str().is_some_and(|s| s.chars().count() <= 3))
        );
    }
    assert!(
        obj.keys()
            .all(|k| ["name", "age", "color", "tags"].contains(&k.as_str()))
    );
}

#[test]
fn random_logits_under_a_schema_give_valid_json_greedy_and_sampled() {
    let (tok, compiler) = compiler();
    let spec = ConstraintSpec::JsonSchema(PERSON.into());
    let sampled = SamplingParams {
        temperature: 1.0,
        ..SamplingParams::greedy()
    };
    for (seed, params) in (0..6)
        .map(|s| (s, SamplingParams::greedy()))
        .chain((0..6).map(|s| (s, sampled)))
    {
        let mut c = compiler.compile(&spec).expect("compile");
        let (ids, ended) = run(&mut c, params, seed, 400);
        assert!(ended, "seed {seed}: did not finish in 400 tokens");
        let text = tok.decode(&ids).expect("decode");
        let v: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        check_person(&v);
    }
}

#[test]
fn end_of_sequence_only_where_the_grammar_accepts() {
    let (tok, compiler) = compiler();
    let mut c = compiler
        .compile(&ConstraintSpec::Regex("[0-9]{2,4}".into()))
        .expect("compile");
    let allowed = |c: &mut Constraint, id: u32| {
        let mut logits = vec![0.0f32; 512];
        c.mask(&mut logits).expect("mask");
        logits[id as usize].is_finite()
    };
    assert!(!allowed(&mut c, EOS), "EOS before any digit");
    for id in tok.encode_plain("12").expect("encode") {
        c.commit(id).expect("commit");
    }
    assert!(allowed(&mut c, EOS), "EOS after two digits");
    assert!(!c.is_complete(), "two more digits may follow");
    for id in tok.encode_plain("34").expect("encode") {
        c.commit(id).expect("commit");
    }
    assert!(c.is_complete(), "four digits end it");
    let letter = tok.encode_plain("a").expect("encode")[0];
    assert!(c.commit(letter).is_err(), "a token outside the grammar");
}

#[test]
fn a_regex_and_any_json_object_are_kept() {
    let (tok, compiler) = compiler();
    let mut c = compiler
        .compile(&ConstraintSpec::Regex("(yes|no)-[a-c]{3}".into()))
        .expect("compile");
    let (ids, ended) = run(&mut c, SamplingParams::greedy(), 7, 50);
    assert!(ended);
    let text = tok.decode(&ids).expect("decode");
    let (word, rest) = text.split_once('-').expect("a dash");
    assert!(["yes", "no"].contains(&word), "{text}");
    assert!(
        rest.len() == 3 && rest.chars().all(|ch| ('a'..='c').contains(&ch)),
        "{text}"
    );

    let mut c = compiler
        .compile(&ConstraintSpec::JsonObject)
        .expect("compile");
    let mut logits = vec![0.0f32; 512];
    c.mask(&mut logits).expect("mask");
    let first: Vec<String> = (0..512u32)
        .filter(|&i| logits[i as usize].is_finite())
        .map(|i| tok.decode(&[i]).expect("decode"))
        .collect();
    assert!(first.iter().all(|t| t.starts_with('{')), "{first:?}");
}

fn invalid(spec: ConstraintSpec) -> (String, Duration) {
    let (_, compiler) = compiler();
    let started = Instant::now();
    let err = compiler.compile(&spec).expect_err("refused");
    let took = started.elapsed();
    assert!(
        matches!(err, ConstraintError::Invalid { option, .. } if option == spec.option()),
        "{err:?}"
    );
    (err.to_string(), took)
}

#[test]
fn malformed_and_unsatisfiable_schemas_name_their_option_and_quote_little() {
    let long_garbage = format!("{{\"type\": {}", "x".repeat(5000));
    let (msg, _) = invalid(ConstraintSpec::JsonSchema(long_garbage));
    assert!(msg.starts_with("option 'json_schema': "), "{msg}");
    assert!(msg.len() < 600, "{} bytes: {msg}", msg.len());
    let (msg, _) = invalid(ConstraintSpec::JsonSchema("[1, 2]".into()));
    assert!(msg.contains("not a schema"), "{msg}");
    let (msg, _) = invalid(ConstraintSpec::JsonSchema(r#"{"type": 5}"#.into()));
    assert!(msg.starts_with("option 'json_schema': "), "{msg}");
    invalid(ConstraintSpec::JsonSchema(
        r#"{"type": "integer", "minimum": 5, "maximum": 1}"#.into(),
    ));
    invalid(ConstraintSpec::Regex("(unclosed".into()));
    invalid(ConstraintSpec::Regex(String::new()));
}

#[test]
fn hostile_schemas_and_expressions_are_refused_quickly() {
    let quick = Duration::from_secs(5);
    // 100 MB: refused by its size, before parsing.
    let (msg, took) = invalid(ConstraintSpec::JsonSchema(format!(
        "{{\"description\": \"{}\"}}",
        "a".repeat(100 * 1024 * 1024)
    )));
    assert!(msg.contains("at most 65536"), "{msg}");
    assert!(took < quick, "{took:?}");
    // 10,000 levels (serde_json's own limit) and 100 (ours).
    for levels in [10_000, 100] {
        let deep = format!(
            "{}{}",
            "{\"items\":".repeat(levels),
            "{}".to_string() + &"}".repeat(levels)
        );
        let (msg, took) = invalid(ConstraintSpec::JsonSchema(deep));
        assert!(took < quick, "{took:?}");
        assert!(msg.len() < 600, "{msg}");
    }
    for nul in ["{\"const\": \"a\0b\"}", r#"{"const": "a\u0000b"}"#] {
        let (msg, _) = invalid(ConstraintSpec::JsonSchema(nul.into()));
        assert!(msg.contains("NUL"), "{msg}");
    }
    let (msg, _) = invalid(ConstraintSpec::Regex("a\0".into()));
    assert!(msg.contains("NUL"), "{msg}");
    let (msg, _) = invalid(ConstraintSpec::Regex("a".repeat(5000)));
    assert!(msg.contains("at most 4096"), "{msg}");
    // Expressions that unroll to millions of positions, alone or as a schema's pattern.
    for rx in [
        "a{100000}",
        "(a{1000}){1000}",
        "((a{1,1000}){1,1000}){1,1000}",
    ] {
        let (msg, took) = invalid(ConstraintSpec::Regex(rx.into()));
        assert!(msg.contains("at most 10000"), "{msg}");
        assert!(took < quick, "{rx}: {took:?}");
        let schema = serde_json::json!({"type": "string", "pattern": rx}).to_string();
        let (msg, _) = invalid(ConstraintSpec::JsonSchema(schema));
        assert!(msg.contains("at most 10000"), "{msg}");
    }
    let (msg, _) = invalid(ConstraintSpec::Regex(format!(
        "{}a{}",
        "(".repeat(500),
        ")".repeat(500)
    )));
    assert!(msg.contains("not a regular expression"), "{msg}");
    // $ref doubling: 40 definitions each using the previous one twice (2^39 leaves unrolled).
    let mut defs = serde_json::Map::new();
    defs.insert("d0".into(), serde_json::json!({"type": "string"}));
    for i in 1..40 {
        let prev = format!("#/$defs/d{}", i - 1);
        defs.insert(
            format!("d{i}"),
            serde_json::json!({"type": "array", "prefixItems": [{"$ref": prev}, {"$ref": prev}]}),
        );
    }
    // Definitions are shared rules, not copies: it compiles, and quickly.
    let bomb = serde_json::json!({"$defs": defs, "$ref": "#/$defs/d39"}).to_string();
    let (_, compiler) = compiler();
    let started = Instant::now();
    let compiled = compiler.compile(&ConstraintSpec::JsonSchema(bomb));
    assert!(started.elapsed() < quick, "{:?}", started.elapsed());
    assert!(compiled.is_ok(), "{compiled:?}");
}
