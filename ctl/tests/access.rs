//! `moectl` run as user `nobody` against a real `moed serve` that restricts use to a group and
//! management to admins: refused calls exit 4 naming the group or polkit action to get.

mod util;

use util::*;

#[test]
fn refused_calls_name_the_group_or_action_needed() {
    if !is_root() {
        // setpriv needs root to become `nobody`; the other tests still cover the refusal path
        // through the daemon's error replies.
        eprintln!("skipped: switching to user nobody needs root");
        return;
    }
    let bus = TestBus::start();
    // Group 0 (root) may use moed; nobody may not unless given that group.
    let _daemon = Daemon::start(&bus, "allowed_group = \"root\"\n");

    let outsider = Ctl::as_nobody(&bus, None)
        .args(["generate", "Hi", "--max-tokens", "2"])
        .run()
        .fails_with(4, "access.allowed_group");
    assert!(
        outsider.stderr.contains("moectl: access denied"),
        "{outsider:?}"
    );
    assert!(outsider.stderr.contains("hint:"), "{outsider:?}");

    // In the allowed group: inference works, managing calls are refused naming the action.
    let member = || Ctl::as_nobody(&bus, Some("0"));
    member()
        .args(["generate", "Hi", "--max-tokens", "2"])
        .run()
        .ok();
    for args in [
        &["models", "load", SECOND][..],
        &["models", "unload", MODEL],
        &["models", "switch", SECOND],
        &["experts", "--reset"],
    ] {
        let refused = member()
            .args(args)
            .run()
            .fails_with(4, "org.moed.manage-models");
        assert!(refused.stderr.contains("access.admin_group"), "{refused:?}");
    }
    let json = member()
        .args(["--json", "models", "load", SECOND])
        .run()
        .fails_with(4, "access denied");
    assert!(json.stdout.is_empty(), "{json:?}");
    // Under --json the error itself is JSON: one object on one stderr line.
    let error: serde_json::Value =
        serde_json::from_str(json.stderr.trim_end()).expect("a JSON error on stderr");
    assert_eq!(error["error"]["exit_status"], 4, "{error}");
    assert!(
        error["error"]["hint"]
            .as_str()
            .is_some_and(|h| h.contains("org.moed.manage-models")),
        "{error}"
    );

    // Following every client's alerts needs a bus monitor: root only.
    member()
        .args(["alerts"])
        .run()
        .fails_with(4, "sudo moectl alerts");

    // Nothing was changed by the refused calls.
    let status = Ctl::new(&bus).args(["--json", "status"]).run().ok().json();
    assert_eq!(status["model"], MODEL);
    assert_eq!(status["loaded_models"].as_array().map(Vec::len), Some(1));
}

/// A stand-in for polkit's `pkttyagent`: records its arguments and pid, closes the notify fd (as
/// the real one does once registered), then waits to be stopped.
const FAKE_AGENT: &str = r#"#!/bin/sh
dir=$(dirname "$0")
echo "$@" > "$dir/args"
echo $$ > "$dir/pid"
eval "exec $2>&-"
exec sleep 60
"#;

#[test]
fn a_managing_command_at_a_terminal_starts_a_text_agent_and_stops_it() {
    if !is_root() {
        eprintln!("skipped: switching to user nobody needs root");
        return;
    }
    let bus = TestBus::start();
    let _daemon = Daemon::start(&bus, "allowed_group = \"root\"\n");
    let dir = tempfile::tempdir().expect("tempdir");
    set_mode(dir.path(), 0o777);
    let agent = dir.path().join("pkttyagent");
    std::fs::write(&agent, FAKE_AGENT).expect("write the fake agent");
    set_mode(&agent, 0o755);
    // As nobody in group root, on a terminal (script(1) provides one), the fake agent first on PATH.
    let at_terminal = |flags: &str| {
        let line = format!(
            "setpriv --reuid=65534 --regid=65534 --groups=0 env PATH='{}':/usr/bin:/bin HOME=/nonexistent '{}' --bus '{}' {flags} models unload {MODEL}",
            dir.path().display(),
            moectl_bin().display(),
            bus.address
        );
        let out = std::process::Command::new("script")
            .args(["-qec", &line, "/dev/null"])
            .output()
            .expect("script(1) from util-linux");
        String::from_utf8_lossy(&out.stdout).to_string()
    };

    let out = at_terminal("");
    // Refused all the same (no polkit grants it here), but the agent was there to ask.
    assert!(out.contains("org.moed.manage-models"), "{out}");
    let args = std::fs::read_to_string(dir.path().join("args")).expect("the agent was started");
    let words: Vec<&str> = args.split_whitespace().collect();
    assert_eq!(words.len(), 3, "{args}");
    assert_eq!(words[0], "--notify-fd");
    assert!(words[1].parse::<u32>().is_ok(), "{args}");
    assert_eq!(words[2], "--fallback");
    let pid = std::fs::read_to_string(dir.path().join("pid")).expect("pid");
    assert!(
        !std::path::Path::new(&format!("/proc/{}", pid.trim())).exists(),
        "the agent outlived moectl"
    );

    // Switched off, or for scripts (--json), no agent is started.
    std::fs::remove_file(dir.path().join("args")).expect("remove args");
    for flags in ["--no-ask-password", "--json"] {
        at_terminal(flags);
        assert!(!dir.path().join("args").exists(), "started with {flags}");
    }
}
