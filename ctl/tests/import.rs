//! `moectl models import` without a virtualenv: the system's /usr/bin/python3 (Debian 12: onnx
//! 1.12, numpy 1.24, no safetensors or ml_dtypes) running the exporter files as the moed-import
//! package ships them must write packages byte-identical to the virtualenv exporter's
//! (`$MOE_VENV/bin/python3 -m moe_export`, as tests/run.sh exports the fixtures). tests/setup.sh
//! installs python3-numpy, python3-onnx and python3-tqdm.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use moed_test_harness::repo_root;

const SYSTEM_PYTHON: &str = "/usr/bin/python3";

fn moectl(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_moectl"));
    cmd.args(args)
        .env_remove("MOED_PYTHON")
        .env_remove("MOED_EXPORTER_DIR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run moectl")
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The exporter's *.py files as the package's asset glob (`moe_export/**/*.py`) picks them.
fn stage_shipped_exporter(dest: &Path) {
    fn walk(src: &Path, dest: &Path) {
        std::fs::create_dir_all(dest).unwrap();
        for entry in std::fs::read_dir(src).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap();
            if path.is_dir() && name != "__pycache__" {
                walk(&path, &dest.join(name));
            } else if path.extension().is_some_and(|e| e == "py") {
                std::fs::copy(&path, dest.join(name)).unwrap();
            }
        }
    }
    walk(
        &repo_root().join("models/export/moe_export"),
        &dest.join("moe_export"),
    );
}

fn files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path.strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

fn system_python(code: &str) -> Output {
    Command::new(SYSTEM_PYTHON)
        .args(["-I", "-c", code])
        .output()
        .unwrap_or_else(|e| panic!("{SYSTEM_PYTHON}: {e}; tests/setup.sh installs python3"))
}

#[test]
fn system_python_packages_equal_the_virtualenv_exporters() {
    // What makes this a test of the fallbacks: the system Python has no safetensors or ml_dtypes.
    for module in ["safetensors", "ml_dtypes"] {
        let out = system_python(&format!("import {module}"));
        assert!(
            !out.status.success(),
            "{SYSTEM_PYTHON} has {module}; this test is meant for a Python without it (Debian 12's)"
        );
    }
    let versions = system_python("import onnx, numpy; print(onnx.__version__, numpy.__version__)");
    eprintln!(
        "system python3: onnx, numpy {}",
        String::from_utf8_lossy(&versions.stdout)
    );
    let venv = std::env::var_os("MOE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv"));
    let venv_python = venv.join("bin/python3");
    let tmp = tempfile::tempdir().unwrap();
    let shipped = tmp.path().join("export");
    stage_shipped_exporter(&shipped);
    for arch in ["qwen3_moe", "deepseek_v3"] {
        let src = repo_root().join("models/fixtures").join(arch);
        for (quant, exporter_quant) in [("none", "fp32"), ("int4", "int4")] {
            let ours = tmp.path().join(format!("system-{arch}-{quant}"));
            let out = moectl(
                &[
                    "--json",
                    "models",
                    "import",
                    src.to_str().unwrap(),
                    "--quant",
                    quant,
                    "--out",
                    ours.to_str().unwrap(),
                ],
                &[("MOED_EXPORTER_DIR", &shipped)],
            );
            assert!(out.status.success(), "{}", text(&out));
            let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(summary["name"], arch);
            assert_eq!(summary["quant"], exporter_quant);
            assert_eq!(
                summary["load"],
                format!("moectl models load {}", ours.display())
            );

            let reference = tmp.path().join(format!("venv-{arch}-{quant}"));
            let out = Command::new(&venv_python)
                .args(["-m", "moe_export"])
                .arg(&src)
                .arg(&reference)
                .args(["--quant", exporter_quant, "--quiet"])
                .output()
                .unwrap_or_else(|e| {
                    panic!(
                        "{}: {e}; tests/setup.sh makes $MOE_VENV",
                        venv_python.display()
                    )
                });
            assert!(out.status.success(), "{}", text(&out));

            let (a, b) = (files(&ours), files(&reference));
            assert_eq!(a, b, "{arch} {quant}: different file lists");
            assert!(a.len() > 40, "{arch} {quant}: only {} files", a.len());
            assert_eq!(
                summary["files"].as_u64(),
                Some(a.len() as u64 - 1),
                "every file but the manifest is in its table"
            );
            for rel in &a {
                let (x, y) = (
                    std::fs::read(ours.join(rel)).unwrap(),
                    std::fs::read(reference.join(rel)).unwrap(),
                );
                assert!(x == y, "{arch} {quant}: {} differs", rel.display());
            }
            eprintln!("{arch} --quant {quant}: {} files identical", a.len());
        }
    }
}

#[test]
fn refusals_are_named_before_the_exporter_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let not_hf = tmp.path().join("not-hf");
    std::fs::create_dir(&not_hf).unwrap();
    let out = moectl(
        &[
            "models",
            "import",
            not_hf.to_str().unwrap(),
            "--out",
            "/tmp/x",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("has no config.json: not a Hugging Face checkpoint folder"),
        "{}",
        text(&out)
    );

    let src = repo_root().join("models/fixtures/olmoe");
    let full = tmp.path().join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("keep"), "x").unwrap();
    let args = [
        "--json",
        "models",
        "import",
        src.to_str().unwrap(),
        "--out",
        full.to_str().unwrap(),
    ];
    let out = moectl(&args, &[]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    let err: serde_json::Value = serde_json::from_slice(&out.stderr).unwrap();
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .ends_with("is not empty; pass --force to replace the package in it"),
        "{err}"
    );
    assert!(out.stdout.is_empty());

    let out = moectl(&["models", "import", "/nonexistent/hf"], &[]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    let out = moectl(
        &["models", "import", src.to_str().unwrap(), "--quant", "int3"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = moectl(
        &["models", "import", src.to_str().unwrap(), "--name", "../up"],
        &[],
    );
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
}

#[test]
fn force_replaces_a_package_and_bad_input_is_exit_5() {
    let tmp = tempfile::tempdir().unwrap();
    let src = repo_root().join("models/fixtures/olmoe");
    let out_dir = tmp.path().join("pkg");
    let import = |src: &Path, force: bool| {
        let mut args = vec![
            "models",
            "import",
            src.to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
        ];
        if force {
            args.push("--force");
        }
        moectl(&args, &[])
    };
    let first = import(&src, false);
    assert!(first.status.success(), "{}", text(&first));
    let stdout = String::from_utf8_lossy(&first.stdout).to_string();
    assert!(
        stdout.starts_with(&format!("imported {} (olmoe, fp32, ", out_dir.display())),
        "{stdout}"
    );
    assert!(
        stdout.ends_with(&format!(
            "load it with: moectl models load {}\n",
            out_dir.display()
        )),
        "{stdout}"
    );
    assert_eq!(import(&src, false).status.code(), Some(5));
    let again = import(&src, true);
    assert!(again.status.success(), "{}", text(&again));

    // A checkpoint the exporter refuses: its one-line reason, exit 5.
    let broken = tmp.path().join("broken");
    std::fs::create_dir(&broken).unwrap();
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(src.join(f), broken.join(f)).unwrap();
    }
    let out = moectl(
        &[
            "models",
            "import",
            broken.to_str().unwrap(),
            "--out",
            tmp.path().join("b").to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no *.safetensors file"),
        "{}",
        text(&out)
    );
}

#[test]
fn missing_python_modules_name_the_packages() {
    // A virtualenv without system site-packages: a real python3 with no numpy, onnx or tqdm.
    let tmp = tempfile::tempdir().unwrap();
    let bare = tmp.path().join("bare");
    let made = Command::new(SYSTEM_PYTHON)
        .args(["-m", "venv", "--without-pip"])
        .arg(&bare)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", text(&made));
    let src = repo_root().join("models/fixtures/olmoe");
    let out = moectl(
        &[
            "models",
            "import",
            src.to_str().unwrap(),
            "--out",
            tmp.path().join("p").to_str().unwrap(),
        ],
        &[("MOED_PYTHON", &bare.join("bin/python3"))],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("python3-numpy python3-onnx python3-tqdm are not installed")
            && stderr.contains("apt install python3-numpy python3-onnx python3-tqdm"),
        "{stderr}"
    );
    assert!(!tmp.path().join("p").exists(), "nothing is written");
}
