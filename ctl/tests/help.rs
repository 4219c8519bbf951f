//! Help texts are snapshot-tested against ctl/tests/snapshots/*.txt (`UPDATE_SNAPSHOTS=1`
//! rewrites them); completions and man pages come from the same clap definition.

use std::path::{Path, PathBuf};
use std::process::Command;

fn moectl(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_moectl"))
        .args(args)
        .env_remove("MOECTL_BUS")
        .env_remove("MOECTL_MOED")
        .output()
        .expect("run moectl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn snapshot_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots")
}

#[test]
fn help_texts_match_their_snapshots() {
    let cases: &[(&str, &[&str])] = &[
        ("help-short", &["-h"]),
        ("help", &["--help"]),
        ("status", &["status", "--help"]),
        ("generate", &["generate", "--help"]),
        ("chat", &["chat", "--help"]),
        ("score", &["score", "--help"]),
        ("models", &["models", "--help"]),
        ("models-load", &["models", "load", "--help"]),
        ("models-import", &["models", "import", "--help"]),
        ("experts", &["experts", "--help"]),
        ("config-show", &["config", "show", "--help"]),
        ("alerts", &["alerts", "--help"]),
        ("plugins", &["plugins", "--help"]),
        ("plugins-install", &["plugins", "install", "--help"]),
        ("plugins-config", &["plugins", "config", "--help"]),
        ("knowledge", &["knowledge", "--help"]),
        ("knowledge-add", &["knowledge", "add", "--help"]),
        ("knowledge-search", &["knowledge", "search", "--help"]),
        ("completions", &["completions", "--help"]),
    ];
    let update = std::env::var_os("UPDATE_SNAPSHOTS").is_some();
    let mut mismatches = Vec::new();
    for (name, args) in cases {
        let (code, stdout, stderr) = moectl(args);
        assert_eq!(code, 0, "moectl {args:?}: {stderr}");
        let file = snapshot_dir().join(format!("{name}.txt"));
        if update {
            std::fs::create_dir_all(snapshot_dir()).expect("snapshot dir");
            std::fs::write(&file, &stdout).expect("write snapshot");
            continue;
        }
        let expected = std::fs::read_to_string(&file).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run with UPDATE_SNAPSHOTS=1 to create it",
                file.display()
            )
        });
        if expected != stdout {
            mismatches.push(format!(
                "moectl {}: differs from {}\n--- expected\n{expected}\n--- got\n{stdout}",
                args.join(" "),
                file.display()
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{}\n(UPDATE_SNAPSHOTS=1 accepts the new texts)",
        mismatches.join("\n")
    );
}

#[test]
fn usage_errors_exit_2_and_help_lists_exit_codes() {
    let (code, _, stderr) = moectl(&["generate"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("<PROMPT>"), "{stderr}");
    let (code, _, stderr) = moectl(&["no-such-verb"]);
    assert_eq!(code, 2, "{stderr}");
    let (_, help, _) = moectl(&["--help"]);
    for needle in [
        "3    moed is not running",
        "4    access denied",
        "130  interrupted",
    ] {
        assert!(help.contains(needle), "--help lacks {needle:?}");
    }
}

#[test]
fn bad_sampling_flags_are_named_before_anything_is_sent() {
    // MOECTL_BUS points nowhere: a flag that passed would fail on the bus (exit 3), not here.
    for (flag, value, expected) in [
        ("--temperature", "-1", "0 or more"),
        ("--top-p", "2", "in (0, 1]"),
        ("--top-p", "0", "in (0, 1]"),
        ("--min-p", "1.5", "in [0, 1]"),
        ("--repetition-penalty", "0", "greater than 0"),
        ("--temperature", "NaN", "out of range"),
        ("--temperature", "warm", "not a number"),
        ("--max-tokens", "0", "0 is not in 1.."),
        ("--top-k", "0", "0 is not in 1.."),
    ] {
        for verb in ["generate", "chat"] {
            let (code, _, stderr) = moectl(&[verb, flag, value, "hello"]);
            assert_eq!(code, 2, "{verb} {flag} {value}: {stderr}");
            assert!(
                stderr.contains(&format!("'{flag} <")) && stderr.contains(expected),
                "{verb} {flag} {value}: {stderr}"
            );
        }
    }
    let (code, _, stderr) = moectl(&["generate", "--temperature", "-0.0", "--top-p", "1", "hi"]);
    assert_ne!(code, 2, "valid flags were refused: {stderr}");
}

#[test]
fn completions_and_man_pages_for_packaging() {
    // Each script hands completion back to moectl (COMPLETE=<shell>), which knows the commands.
    for (shell, needle) in [
        ("bash", "_clap_complete_moectl()"),
        ("zsh", "#compdef moectl"),
        ("fish", "complete --keep-order --exclusive --command moectl"),
    ] {
        let (code, script, stderr) = moectl(&["completions", shell]);
        assert_eq!(code, 0, "{stderr}");
        assert!(script.contains(needle), "{shell}: {script}");
        assert!(
            script.contains(&format!("COMPLETE=\"{shell}\""))
                || script.contains(&format!("COMPLETE={shell}")),
            "{shell}: {script}"
        );
    }
    let complete = |words: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_moectl"))
            .env("COMPLETE", "fish")
            .env_remove("MOECTL_BUS")
            .arg("--")
            .args(words)
            .output()
            .expect("run moectl");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let verbs = complete(&["moectl", ""]);
    assert!(
        verbs.contains("generate") && verbs.contains("experts"),
        "{verbs}"
    );
    assert!(
        !verbs.contains("generate-assets"),
        "a hidden command is offered: {verbs}"
    );
    let buses = complete(&["moectl", "--bus", ""]);
    assert!(
        buses.contains("system") && buses.contains("session"),
        "{buses}"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("assets");
    let (code, _, stderr) = moectl(&["generate-assets", out.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{stderr}");
    for file in [
        "moectl.1",
        "moectl-generate.1",
        "moectl-models-load.1",
        "moectl-experts.1",
        "moectl.bash",
        "_moectl",
        "moectl.fish",
    ] {
        let path = out.join(file);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(!text.is_empty(), "{file} is empty");
    }
    let page = std::fs::read_to_string(out.join("moectl.1")).expect("moectl.1");
    assert!(
        page.starts_with(".ie \\n(.g .ds Aq"),
        "not roff: {}",
        &page[..80.min(page.len())]
    );
    assert!(page.contains(".SH \"EXIT STATUS\""), "{page}");
    assert!(page.contains("moectl\\-experts(1)"), "{page}");
    // The hidden asset generator documents nothing of itself; `help` mirrors the real pages.
    assert!(!out.join("moectl-generate-assets.1").exists());
    assert!(!out.join("moectl-help.1").exists());
    assert!(!out.join("moectl-models-help.1").exists());
    assert!(
        page.contains(".SH ENVIRONMENT") && page.contains("MOECTL_BUS"),
        "{page}"
    );
    assert!(page.contains(".SH \"SEE ALSO\"\n\\fBmoed\\fR(8)"), "{page}");
    let load = std::fs::read_to_string(out.join("moectl-models-load.1")).expect("load page");
    assert!(
        load.contains(".SH \"SEE ALSO\"\n\\fBmoectl\\-models\\fR(1)"),
        "{load}"
    );
}
