//! manifest.json precision: format 1 read as before, format 2's per-graph table, bad values named.

use std::path::Path;

use serde_json::{Value, json};

use crate::package::{Manifest, PackageError, checked_manifest};

fn moe_mini() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/moe-mini/manifest.json");
    let text = std::fs::read_to_string(path).expect("the bundled manifest");
    serde_json::from_str(&text).expect("the bundled manifest is JSON")
}

fn entry(weights: &str, block: Option<u64>, acc: Option<u64>) -> Value {
    json!({"weights": weights, "block_size": block, "accuracy_level": acc,
           "symmetric": block.map(|_| false)})
}

/// moe-mini rewritten as format 2: int4 experts and attention, int8 head and embedding.
fn format2() -> Value {
    let mut m = moe_mini();
    m["format_version"] = 2.into();
    m["precision"]["graphs"] = json!({
        "embed": entry("int8", Some(32), Some(4)),
        "attn": entry("int4", Some(32), Some(4)),
        "router": entry("fp32", None, None),
        "expert": entry("int4", Some(32), Some(4)),
        "shared": entry("int4", Some(32), Some(4)),
        "mlp": entry("int4", Some(32), Some(4)),
        "head": entry("int8", Some(32), Some(4)),
    });
    m
}

fn parse(v: &Value) -> Result<Manifest, PackageError> {
    checked_manifest(Path::new("/pkg/manifest.json"), &v.to_string())
}

fn error(v: &Value) -> String {
    match parse(v) {
        Ok(_) => panic!("the manifest was accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn format1_means_fp32_dense_graphs_and_expert_precision_for_every_ffn() {
    let m = parse(&moe_mini()).expect("moe-mini is a valid format-1 package");
    assert_eq!(m.format_version, 1);
    let g = m.graph_precision();
    let kinds: Vec<&str> = g.keys().map(String::as_str).collect();
    assert_eq!(
        kinds,
        ["attn", "embed", "expert", "head", "mlp", "router", "shared"]
    );
    for kind in ["embed", "attn", "router", "head"] {
        assert_eq!(g[kind].weights, "fp32", "{kind}");
        assert_eq!(g[kind].block_size, None, "{kind}");
    }
    for kind in ["expert", "shared", "mlp"] {
        assert_eq!(g[kind].weights, "int8", "{kind}");
        assert_eq!(g[kind].block_size, Some(32), "{kind}");
        assert_eq!(g[kind].accuracy_level, Some(4), "{kind}");
    }
    assert_eq!(
        m.precision_lines()[1],
        "attn fp32",
        "{:?}",
        m.precision_lines()
    );
}

#[test]
fn format2_lists_each_graph_kind() {
    let m = parse(&format2()).expect("a valid format-2 manifest");
    let lines = m.precision_lines();
    assert_eq!(
        lines,
        [
            "embed int8 (block 32, accuracy level 4, asymmetric)",
            "attn int4 (block 32, accuracy level 4, asymmetric)",
            "router fp32",
            "expert int4 (block 32, accuracy level 4, asymmetric)",
            "shared int4 (block 32, accuracy level 4, asymmetric)",
            "mlp int4 (block 32, accuracy level 4, asymmetric)",
            "head int8 (block 32, accuracy level 4, asymmetric)",
        ]
    );
}

#[test]
fn format2_without_the_graph_table_is_refused() {
    let mut v = format2();
    if let Some(p) = v["precision"].as_object_mut() {
        p.remove("graphs");
    }
    let msg = error(&v);
    assert!(msg.contains("/pkg/manifest.json"), "{msg}");
    assert!(msg.contains("precision.graphs is missing"), "{msg}");
}

#[test]
fn format1_with_a_graph_table_is_refused() {
    let mut v = format2();
    v["format_version"] = 1.into();
    assert!(
        error(&v).contains("precision.graphs is a format 2 key"),
        "{}",
        error(&v)
    );
}

#[test]
fn a_graph_kind_the_layers_use_must_be_listed() {
    let mut v = format2();
    if let Some(g) = v["precision"]["graphs"].as_object_mut() {
        g.remove("shared");
    }
    let msg = error(&v);
    assert!(msg.contains("no entry for \"shared\""), "{msg}");
}

#[test]
fn bad_values_name_their_key() {
    let cases: [(&str, Value, &str); 6] = [
        (
            "attn",
            entry("int3", Some(32), Some(4)),
            "precision.graphs.attn.weights is \"int3\"",
        ),
        (
            "head",
            entry("int8", Some(24), Some(4)),
            "precision.graphs.head.block_size is 24",
        ),
        (
            "head",
            entry("int8", None, Some(4)),
            "precision.graphs.head.block_size is missing",
        ),
        (
            "expert",
            entry("int4", Some(32), Some(7)),
            "precision.graphs.expert.accuracy_level is 7",
        ),
        (
            "expert",
            entry("int4", Some(32), None),
            "precision.graphs.expert.accuracy_level is missing",
        ),
        (
            "moe",
            entry("fp32", None, None),
            "precision.graphs.moe: unknown graph kind",
        ),
    ];
    for (kind, value, want) in cases {
        let mut v = format2();
        v["precision"]["graphs"][kind] = value;
        let msg = error(&v);
        assert!(msg.contains(want), "{kind}: {msg}");
    }
    let mut v = format2();
    v["precision"]["graphs"]["attn"]["weights"] = 4.into();
    let msg = error(&v);
    assert!(msg.contains("precision.graphs.attn.weights"), "{msg}");
    // A 1 MB key with a NUL is named clipped, not repeated whole.
    let mut v = format2();
    let key = format!("x\0{}", "k".repeat(1 << 20));
    v["precision"]["graphs"][key.as_str()] = entry("fp32", None, None);
    let msg = error(&v);
    assert!(
        msg.contains("unknown graph kind") && msg.len() < 1024,
        "{}",
        msg.len()
    );
    assert!(!msg.contains('\0'), "the NUL reached the message");
}

#[test]
fn versions_other_than_1_to_3_are_refused_naming_them() {
    let mut v = format2();
    v["format_version"] = 4.into();
    let msg = error(&v);
    assert!(msg.contains("format_version 4 is not supported"), "{msg}");
    assert!(msg.contains("format_version 1, 2 or 3"), "{msg}");
}
