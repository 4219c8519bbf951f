//! Loading broken packages: each kind of damage gives its own error naming the file and the
//! problem, never a panic.

mod common;

use common::copy_dir;

use std::path::{Path, PathBuf};

use moed::engine::{Engine, EngineError, EngineOptions, Logits};
use moed::package::{Package, PackageError};

/// A private copy of the deepseek_v3 fixture package to damage.
fn copy_package() -> (tempfile::TempDir, PathBuf) {
    let src = common::package("deepseek_v3");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dst = tmp.path().join("pkg");
    copy_dir(&src, &dst);
    (tmp, dst)
}

fn edit_manifest(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("manifest.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
    f(&mut v);
    std::fs::write(&path, serde_json::to_string_pretty(&v).expect("ser")).expect("write");
}

fn load_err(dir: &Path) -> String {
    match Engine::load(dir, EngineOptions::default()) {
        Ok(_) => panic!("{} loaded although it is broken", dir.display()),
        Err(e) => {
            let msg = e.to_string();
            eprintln!("error: {msg}");
            msg
        }
    }
}

#[test]
fn the_intact_copy_loads_and_verifies() {
    let (_tmp, dir) = copy_package();
    let pkg = Package::open(&dir).expect("open");
    let report = pkg.verify().expect("verify");
    assert_eq!(report.files, pkg.manifest().files.len());
    Engine::load(&dir, EngineOptions::default()).expect("load");
}

#[test]
fn missing_file_is_named() {
    let (_tmp, dir) = copy_package();
    std::fs::remove_file(dir.join("graphs/layer.1.expert.3.onnx.data")).expect("rm");
    let msg = load_err(&dir);
    assert!(msg.contains("graphs/layer.1.expert.3.onnx.data"), "{msg}");
    assert!(msg.contains("missing"), "{msg}");
    assert!(matches!(
        Package::open(&dir),
        Err(PackageError::MissingFile { .. })
    ));
}

#[test]
fn truncated_data_is_named_with_both_sizes() {
    let (_tmp, dir) = copy_package();
    let path = dir.join("graphs/layer.2.attn.onnx.data");
    let len = std::fs::metadata(&path).expect("meta").len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open");
    f.set_len(len / 2).expect("truncate");
    let msg = load_err(&dir);
    assert!(msg.contains("graphs/layer.2.attn.onnx.data"), "{msg}");
    assert!(msg.contains("truncated"), "{msg}");
    assert!(
        msg.contains(&len.to_string()) && msg.contains(&(len / 2).to_string()),
        "{msg}"
    );
}

/// Overwrites the file's bytes with garbage of the same length (so the size check passes).
fn corrupt(path: &Path) {
    let len = std::fs::metadata(path).expect("meta").len() as usize;
    let garbage: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
    std::fs::write(path, garbage).expect("write");
}

#[test]
fn corrupt_onnx_bytes_are_named_at_load_and_by_verify() {
    let (_tmp, dir) = copy_package();
    corrupt(&dir.join("graphs/head.onnx"));
    let msg = load_err(&dir);
    assert!(msg.contains("graphs/head.onnx"), "{msg}");
    assert!(msg.contains("could not load"), "{msg}");
    let err = Package::open(&dir)
        .expect("sizes still match")
        .verify()
        .expect_err("checksum");
    assert!(
        matches!(err, PackageError::Checksum { ref file, .. } if file == "graphs/head.onnx"),
        "{err}"
    );
}

#[test]
fn corrupt_expert_fails_at_first_use_naming_it_and_keeps_the_sequence() {
    let (_tmp, dir) = copy_package();
    let m = Package::open(&dir).expect("open").manifest().clone();
    // Corrupt every expert of layer 1 so that whichever is routed to fails.
    for i in 0..m.routing.as_ref().expect("routing").num_experts {
        corrupt(&dir.join(format!("graphs/layer.1.expert.{i}.onnx")));
    }
    let engine = Engine::load(&dir, EngineOptions::default()).expect("experts load lazily");
    let mut seq = engine.new_sequence();
    let err = engine
        .forward(&mut seq, &[0, 5, 9], Logits::Last)
        .expect_err("expert is corrupt");
    let msg = err.to_string();
    eprintln!("error: {msg}");
    assert!(msg.contains("graphs/layer.1.expert."), "{msg}");
    assert!(matches!(err, EngineError::Load { .. }));
    assert_eq!(
        seq.len(),
        0,
        "a failed forward leaves the sequence as it was"
    );
}

#[test]
fn unknown_format_version_names_both_versions() {
    let (_tmp, dir) = copy_package();
    edit_manifest(&dir, |v| v["format_version"] = 7.into());
    let msg = load_err(&dir);
    assert!(msg.contains("manifest.json"), "{msg}");
    assert!(msg.contains("format_version 7"), "{msg}");
    assert!(msg.contains("format_version 1"), "{msg}");
}

#[test]
fn shape_mismatch_names_the_graph_and_tensor() {
    let (_tmp, dir) = copy_package();
    // The manifest now claims a wider latent cache than the attention graphs have.
    edit_manifest(&dir, |v| {
        v["attention"]["cache"][0]["shape"] = serde_json::json!([17])
    });
    let msg = load_err(&dir);
    assert!(msg.contains("graphs/layer.0.attn.onnx"), "{msg}");
    assert!(msg.contains("shape mismatch"), "{msg}");
    assert!(msg.contains("past_latent"), "{msg}");
    assert!(msg.contains("[T, 17]"), "{msg}");
}

type Edit = Box<dyn Fn(&mut serde_json::Value)>;

#[test]
fn inconsistent_manifests_name_the_key() {
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "top_k",
            Box::new(|v| v["routing"]["top_k"] = 9.into()),
            "routing.top_k is 9",
        ),
        (
            "n_group",
            Box::new(|v| v["routing"]["group_limit"]["n_group"] = 3.into()),
            "n_group 3 does not divide",
        ),
        (
            "bias",
            Box::new(|v| v["layers"][1]["correction_bias"] = serde_json::json!([0.1, 0.2])),
            "layers[1].correction_bias has 2 values",
        ),
        (
            "layers",
            Box::new(|v| v["dims"]["num_layers"] = 4.into()),
            "dims.num_layers is 4",
        ),
        (
            "missing key",
            Box::new(|v| {
                v.as_object_mut().expect("object").remove("dims");
            }),
            "missing field `dims`",
        ),
        (
            "wrong type",
            Box::new(|v| v["layers"][1]["experts"] = 5.into()),
            "layers[1]: invalid type: integer `5`",
        ),
        (
            "cache layout",
            Box::new(|v| v["attention"]["cache_layout"] = "by_head".into()),
            "unknown variant `by_head`",
        ),
        (
            "head-major latent",
            Box::new(|v| v["attention"]["cache_layout"] = "head_major".into()),
            "a head_major cache needs [heads, ..]",
        ),
        (
            "escape",
            Box::new(|v| {
                v["files"]["../outside"] = serde_json::json!({"bytes": 1, "sha256": "00"});
            }),
            "not a plain relative path",
        ),
    ];
    for (name, edit, want) in cases {
        let (_tmp, dir) = copy_package();
        edit_manifest(&dir, edit);
        let msg = load_err(&dir);
        assert!(msg.contains("manifest.json"), "{name}: {msg}");
        assert!(msg.contains(want), "{name}: {msg}");
    }
}

#[test]
fn context_overflow_names_both_numbers() {
    let dir = common::package("deepseek_v3");
    let engine = Engine::load(&dir, EngineOptions::default()).expect("load");
    let ctx = engine.package().context_length();
    let mut seq = engine.new_sequence();
    engine
        .forward(&mut seq, &[5; 10], Logits::Last)
        .expect("fits");
    let err = engine
        .forward(&mut seq, &vec![5; ctx - 5], Logits::Last)
        .expect_err("overflow");
    let msg = err.to_string();
    assert!(
        msg.contains("10 cached") && msg.contains(&format!("{} new", ctx - 5)),
        "{msg}"
    );
    assert!(msg.contains(&format!("context length of {ctx}")), "{msg}");
    assert_eq!(seq.len(), 10);
    let err = engine
        .forward(&mut seq, &[100_000], Logits::Last)
        .expect_err("token range");
    assert!(err.to_string().contains("100000"), "{err}");
    let other = Engine::load(&dir, EngineOptions::default()).expect("load");
    assert!(matches!(
        other.forward(&mut seq, &[5], Logits::Last),
        Err(EngineError::ForeignSequence)
    ));
}

#[test]
fn unavailable_providers_fall_back_with_the_reason() {
    use moed::engine::Provider;
    let dir = common::package("deepseek_v3");
    let engine = Engine::load(
        &dir,
        EngineOptions {
            providers: vec![Provider::TensorRt, Provider::Cuda, Provider::Cpu],
            ..EngineOptions::default()
        },
    )
    .expect("falls back to cpu");
    assert_eq!(engine.execution_provider(), "cpu");
    // The CPU-only ONNX Runtime of provision.sh has neither GPU provider.
    let skipped: Vec<String> = engine
        .provider_fallbacks()
        .iter()
        .map(|(p, why)| format!("{p}: {why}"))
        .collect();
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert!(
        skipped[0].starts_with("tensorrt: ") && skipped[1].starts_with("cuda: "),
        "{skipped:?}"
    );
    assert!(skipped[1].contains("CUDAExecutionProvider"), "{skipped:?}");

    let err = Engine::load(
        &dir,
        EngineOptions {
            providers: vec![Provider::Cuda],
            ..EngineOptions::default()
        },
    )
    .err()
    .expect("no usable provider");
    let msg = err.to_string();
    assert!(
        msg.contains("no execution provider") && msg.contains("cuda"),
        "{msg}"
    );
}
