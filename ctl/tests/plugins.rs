//! `moectl plugins` and `moectl alerts --log` against a real `moed serve` on a private bus:
//! install (the component passed as a file descriptor), list and info in text and JSON, config
//! with a bad key and a good one, disable/enable, a hostile plugin refused naming its import,
//! alerts of a request in the audit log, an unprivileged caller refused, remove.

mod util;

use util::*;

use moed_test_harness::plugins_dir;

fn wasm(name: &str) -> String {
    plugins_dir()
        .join(format!("{name}.wasm"))
        .display()
        .to_string()
}

#[test]
fn plugins_verbs_against_a_running_daemon() {
    let bus = TestBus::start();
    let _daemon = Daemon::start(&bus, "");
    let ctl = || Ctl::new(&bus);

    assert_eq!(
        ctl().args(["--json", "plugins", "list"]).run().ok().json(),
        serde_json::json!([])
    );
    let text = ctl().args(["plugins", "list"]).run().ok().stdout;
    assert!(text.contains("no plugins installed"), "{text}");

    let run = ctl()
        .args([
            "plugins",
            "install",
            &wasm("pii-redact"),
            "--set",
            "email=false",
        ])
        .run()
        .ok();
    assert!(
        run.stdout
            .contains("installed pii-redact 0.1.0 (filter): active"),
        "{run:?}"
    );
    let list = ctl().args(["--json", "plugins", "list"]).run().ok().json();
    assert_eq!(list[0]["name"], "pii-redact");
    assert_eq!(list[0]["status"], "active");
    assert_eq!(list[0]["source"], "fd");
    assert_eq!(list[0]["config"]["email"], false);
    assert_eq!(list[0]["config"]["phone"], true);
    assert_eq!(list[0]["granted"][0], "alerts");
    let text = ctl().args(["plugins", "list"]).run().ok().stdout;
    assert!(
        text.contains("NAME") && text.contains("pii-redact") && text.contains("installed"),
        "{text}"
    );
    let text = ctl()
        .args(["plugins", "info", "pii-redact"])
        .run()
        .ok()
        .stdout;
    assert!(
        text.contains("granted:  alerts") && text.contains("email = false"),
        "{text}"
    );

    // Configuration: a key the plugin does not know is named; a known one is merged.
    ctl()
        .args(["plugins", "config", "pii-redact", "emial=true"])
        .run()
        .fails_with(5, "'emial'");
    let info = ctl()
        .args(["--json", "plugins", "config", "pii-redact", "phone=false"])
        .run()
        .ok()
        .json();
    assert_eq!(info["config"]["phone"], false);
    assert_eq!(info["config"]["email"], false);
    let shown = ctl()
        .args(["--json", "plugins", "config", "pii-redact"])
        .run()
        .ok()
        .json();
    assert_eq!(shown["config"]["phone"], false);
    assert_eq!(shown["config_schema"]["window"]["type"], "integer");
    let info = ctl()
        .args(["--json", "plugins", "config", "pii-redact", "--reset"])
        .run()
        .ok()
        .json();
    assert_eq!(info["config"]["email"], true);

    let info = ctl()
        .args(["--json", "plugins", "disable", "pii-redact"])
        .run()
        .ok()
        .json();
    assert_eq!(info["status"], "disabled");
    let run = ctl().args(["plugins", "enable", "pii-redact"]).run().ok();
    assert!(run.stdout.contains("enabled pii-redact: active"), "{run:?}");
    ctl()
        .args(["plugins", "enable", "no-such-plugin"])
        .run()
        .fails_with(5, "no-such-plugin");

    // A plugin importing what nothing grants is refused, naming the import.
    ctl()
        .args(["plugins", "install", &wasm("hostile-forbidden")])
        .run()
        .fails_with(5, "wasi:sockets");

    // A gate chosen for one request, with a parameter; unknown plugins are named.
    ctl()
        .args(["plugins", "install", &wasm("expert-budget")])
        .run()
        .ok();
    let gated = ctl()
        .args([
            "--json",
            "generate",
            "--max-tokens",
            "2",
            "--temperature",
            "0",
            "--ignore-eos",
            "--plugin",
            "expert-budget",
            "--plugin-param",
            "expert_budget.k=1",
            "It is a truth",
        ])
        .run()
        .ok()
        .json();
    assert_eq!(gated["completion_tokens"], 2, "{gated}");
    // A parameter the plugin refuses is the caller's error: exit 5 with the key named, no
    // answer, rather than an answer routed without it and a gate.fallback warning.
    for value in ["expert_budget.k=99", "expert_budget.k=abc"] {
        let run = ctl()
            .args([
                "generate",
                "--plugin",
                "expert-budget",
                "--plugin-param",
                value,
            ])
            .args(["--max-tokens", "1", "It is"])
            .run()
            .fails_with(5, "'plugin_params.expert_budget.k'");
        assert!(run.stdout.is_empty(), "{run:?}");
        assert!(!run.stderr.contains("gate.fallback"), "{run:?}");
    }
    let run = ctl()
        .args([
            "--json",
            "generate",
            "--plugin",
            "expert-budget",
            "--max-tokens",
            "1",
        ])
        .args(["--plugin-param", "expert_budget.masked=[9999]", "It is"])
        .run();
    let error: serde_json::Value = serde_json::from_str(run.stderr.trim()).expect("JSON error");
    assert_eq!(error["error"]["exit_status"], 5, "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("expert_budget.masked")),
        "{error}"
    );
    assert_eq!(run.code, 5);
    // A gate failing for its own reasons (its configuration pins an expert the model lacks)
    // is routed natively: the request answers, with a gate.fallback alert.
    ctl()
        .args(["plugins", "config", "expert-budget", "pinned=[9999]"])
        .run()
        .ok();
    let run = ctl()
        .args([
            "generate",
            "--plugin",
            "expert-budget",
            "--max-tokens",
            "1",
            "It is",
        ])
        .run()
        .ok();
    assert!(run.stderr.contains("gate.fallback"), "{run:?}");
    ctl()
        .args(["generate", "--plugin", "no-such-plugin", "It is"])
        .run()
        .fails_with(5, "no-such-plugin");
    ctl()
        .args(["plugins", "remove", "expert-budget"])
        .run()
        .ok();

    // A request's alerts land in the audit log.
    let run = ctl()
        .args([
            "generate",
            "--max-tokens",
            "2",
            "--temperature",
            "0",
            "Mail jane.doe@example.com please",
        ])
        .run()
        .ok();
    assert!(run.stderr.contains("pii.email"), "{run:?}");
    let log = ctl()
        .args(["--json", "alerts", "--log", "--limit", "5"])
        .run()
        .ok()
        .json();
    let entries = log.as_array().expect("array");
    assert_eq!(entries.len(), 2, "{log}");
    assert_eq!(entries[0]["code"], "gate.fallback");
    assert_eq!(entries[1]["plugin"], "pii-redact");
    assert_eq!(entries[1]["code"], "pii.email");
    let text = ctl().args(["alerts", "--log"]).run().ok().stdout;
    assert!(
        text.contains("pii.email from pii-redact") && text.contains("request "),
        "{text}"
    );

    if is_root() {
        Ctl::as_nobody(&bus, None)
            .args(["plugins", "remove", "pii-redact"])
            .run()
            .fails_with(4, "org.moed.manage-plugins");
        Ctl::as_nobody(&bus, None)
            .args(["alerts", "--log"])
            .run()
            .fails_with(4, "org.moed.manage-plugins");
        let list = Ctl::as_nobody(&bus, None)
            .args(["--json", "plugins", "list"])
            .run()
            .ok()
            .json();
        assert_eq!(list[0]["name"], "pii-redact");
    }

    let run = ctl().args(["plugins", "remove", "pii-redact"]).run().ok();
    assert!(run.stdout.contains("removed pii-redact"), "{run:?}");
    assert_eq!(
        ctl().args(["--json", "plugins", "list"]).run().ok().json(),
        serde_json::json!([])
    );
}
