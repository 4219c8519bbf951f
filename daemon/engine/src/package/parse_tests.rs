//! Property tests of manifest.json parsing: any mutation of a real manifest either parses and
//! validates or gives a bounded error naming the file; never a panic.

use std::path::Path;

use proptest::prelude::*;
use serde_json::Value;

use super::{MAX_PARSE_MESSAGE, checked_manifest, parse_manifest};

fn moe_mini() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/moe-mini/manifest.json");
    let text = std::fs::read_to_string(path).expect("the bundled manifest");
    serde_json::from_str(&text).expect("the bundled manifest is JSON")
}

/// Every path to a value in `v` (object keys and array indices).
fn paths(v: &Value, at: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    out.push(at.clone());
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                at.push(k.clone());
                paths(child, at, out);
                at.pop();
            }
        }
        Value::Array(items) => {
            // A few items are enough: the rest of an array has the same shape.
            for (i, child) in items.iter().enumerate().take(3) {
                at.push(i.to_string());
                paths(child, at, out);
                at.pop();
            }
        }
        _ => {}
    }
}

fn get_mut<'a>(v: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    path.iter().try_fold(v, |v, key| match v {
        Value::Object(map) => map.get_mut(key),
        Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get_mut(i)),
        _ => None,
    })
}

fn hostile_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
        Just(Value::from("\0".repeat(100))),
        Just(Value::from("x".repeat(1 << 20))),
        Just(Value::Array(vec![Value::from(1); 10_000])),
        Just(serde_json::json!({"": {"": [null]}})),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn mutated_manifests_parse_or_fail_with_bounded_errors(
        pick in any::<prop::sample::Index>(),
        replacement in hostile_value(),
        remove in any::<bool>(),
    ) {
        let mut manifest = moe_mini();
        let mut all = Vec::new();
        paths(&manifest, &mut Vec::new(), &mut all);
        let path = pick.get(&all).clone();
        if remove && !path.is_empty() {
            let (last, parent) = path.split_last().expect("non-empty");
            if let Some(Value::Object(map)) = get_mut(&mut manifest, parent) {
                map.remove(last);
            }
        } else if let Some(slot) = get_mut(&mut manifest, &path) {
            *slot = replacement;
        }
        let text = manifest.to_string();
        let file = Path::new("/pkg/manifest.json");
        if let Err(e) = checked_manifest(file, &text) {
            let message = e.to_string();
            prop_assert!(message.contains("/pkg/manifest.json"), "{}", moed_wire::quote(&message));
            prop_assert!(
                message.len() <= MAX_PARSE_MESSAGE + 512,
                "error of {} bytes", message.len()
            );
        }
    }

    #[test]
    fn arbitrary_text_never_panics(text in ".{0,200}") {
        let _ = parse_manifest(Path::new("m.json"), &text);
    }
}

/// moe-mini's manifest with every MoE layer rewritten by `edit`.
fn with_moe_layers(edit: impl Fn(&mut serde_json::Map<String, Value>)) -> String {
    let mut manifest = moe_mini();
    if let Some(Value::Array(layers)) = manifest.get_mut("layers") {
        for layer in layers {
            if let Value::Object(map) = layer
                && map.get("kind") == Some(&Value::from("moe"))
            {
                edit(map);
            }
        }
    }
    manifest.to_string()
}

#[test]
fn layers_with_the_router_fused_into_attention_validate() {
    let file = Path::new("/pkg/manifest.json");
    let plain = checked_manifest(file, &moe_mini().to_string()).expect("moe-mini validates");
    let fused = checked_manifest(
        file,
        &with_moe_layers(|l| {
            l.remove("router");
            l.insert("fused".into(), serde_json::json!(["router"]));
        }),
    )
    .expect("the fused form validates");
    let moe = |m: &super::Manifest| m.layers.iter().filter(|l| l.is_moe()).count();
    assert!(moe(&plain) > 0);
    assert!(plain.layers.iter().all(|l| !l.router_fused()));
    assert_eq!(
        fused.layers.iter().filter(|l| l.router_fused()).count(),
        moe(&fused)
    );
    let graphs = super::validate::graph_paths(&fused);
    assert!(graphs.iter().all(|g| !g.contains("router")), "{graphs:?}");
}

#[test]
fn a_layer_needs_exactly_one_router_form() {
    let file = Path::new("/pkg/manifest.json");
    let cases = [
        (
            with_moe_layers(|l| {
                l.insert("fused".into(), serde_json::json!(["router"]));
            }),
            "has a router graph and lists the router as fused",
        ),
        (
            with_moe_layers(|l| {
                l.remove("router");
            }),
            "has no router graph",
        ),
        (
            with_moe_layers(|l| {
                l.insert("fused".into(), serde_json::json!(["shared"]));
            }),
            "lists \"shared\"",
        ),
    ];
    for (text, want) in cases {
        let err = checked_manifest(file, &text).expect_err(want).to_string();
        assert!(err.contains(want) && err.contains("layers["), "{err}");
    }
}
