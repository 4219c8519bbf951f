//! Property tests of manifest.json parsing: any mutation of a real manifest either parses and
//! validates or gives a bounded error naming the file; never a panic.

use std::path::Path;

use proptest::prelude::*;
use serde_json::Value;

use super::{MAX_PARSE_MESSAGE, checked_manifest, parse_manifest};

fn moe_mini() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/moe-mini/manifest.json");
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
            prop_assert!(message.contains("/pkg/manifest.json"), "{}", moed_dbus::wire::quote(&message));
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
