//! `moectl` against a real `moed serve` on a private bus: every verb that talks to the daemon,
//! their `--json` output, exit statuses and the advice printed when moed is absent.

mod util;

use util::*;

const GEN: [&str; 5] = ["--max-tokens", "6", "--temperature", "0", "--ignore-eos"];

#[test]
fn verbs_against_a_running_daemon() {
    let bus = TestBus::start();
    let _daemon = Daemon::start(&bus, "");
    let ctl = || Ctl::new(&bus);

    // Shell completion asks the daemon on $MOECTL_BUS for the names it knows.
    let completed = std::process::Command::new(moectl_bin())
        .env("COMPLETE", "fish")
        .env("MOECTL_BUS", &bus.address)
        .args(["--", "moectl", "models", "load", ""])
        .output()
        .expect("run moectl");
    let names = String::from_utf8_lossy(&completed.stdout);
    assert!(
        names.lines().any(|l| l == MODEL) && names.lines().any(|l| l == SECOND),
        "{names}"
    );

    // status
    let status = ctl().args(["--json", "status"]).run().ok().json();
    assert_eq!(status["state"], "ready");
    assert_eq!(status["model"], MODEL);
    assert_eq!(status["execution_provider"], "cpu");
    // Every provider in preference order; one that cannot run says what it lacks.
    let providers = status["providers"].as_array().expect("providers");
    let names: Vec<&str> = providers
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, ["tensorrt", "cuda", "cpu"], "{status}");
    assert_eq!(providers[2]["usable"], true, "{status}");
    assert!(providers[2]["lacks"].is_null(), "{status}");
    for p in &providers[..2] {
        assert!(
            p["usable"] == true || p["lacks"].as_str().is_some_and(|l| !l.is_empty()),
            "{p}"
        );
    }
    assert_eq!(status["loaded_models"][0], MODEL);
    // `bus` is what `--bus` takes, so a script can pass it back.
    assert_eq!(status["bus"], bus.address.as_str());
    let text = ctl().args(["status"]).run().ok().stdout;
    assert!(text.contains("state:") && text.contains(MODEL), "{text}");
    assert!(text.contains("0 queued (limits: "), "{text}");
    assert!(
        text.contains("providers:") && text.contains("cpu: in use"),
        "{text}"
    );
    assert!(!text.contains('\x1b'), "colour on a pipe: {text:?}");
    // On a terminal (script(1) provides one) there is colour, unless NO_COLOR is set.
    let on_tty = |no_colour: bool| {
        let mut cmd = std::process::Command::new("script");
        cmd.args(["-qec"])
            .arg(format!(
                "'{}' --bus '{}' status",
                moectl_bin().display(),
                bus.address
            ))
            .arg("/dev/null")
            .env_remove("NO_COLOR");
        if no_colour {
            cmd.env("NO_COLOR", "1");
        }
        let out = cmd.output().expect("script(1) from util-linux");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert!(
        on_tty(false).contains("\x1b[32mready"),
        "{:?}",
        on_tty(false)
    );
    assert!(!on_tty(true).contains('\x1b'), "{:?}", on_tty(true));

    // generate: streamed text equals the daemon's own account of the answer.
    let streamed = ctl().args(["generate", "Hello there"]).args(GEN).run().ok();
    let json = ctl()
        .args(["--json", "generate", "Hello there"])
        .args(GEN)
        .run()
        .ok()
        .json();
    assert_eq!(json["finish_reason"], "max_tokens", "{json}");
    // Keys that do not apply are null, not missing.
    for key in ["error_name", "error_message", "sources"] {
        assert!(json.get(key).is_some_and(|v| v.is_null()), "{key}: {json}");
    }
    assert_eq!(json["completion_tokens"], 6);
    assert_eq!(json["model"], MODEL);
    let answer = json["text"].as_str().expect("text");
    assert!(!answer.is_empty());
    assert_eq!(streamed.stdout.trim_end_matches('\n'), answer);
    // The answer stopped at the limit, not by the model's choice: stderr says so, stdout stays the
    // answer alone.
    assert!(
        streamed.stderr.contains(
            "the answer reached the limit of 6 generated tokens; raise it with --max-tokens"
        ),
        "{streamed:?}"
    );
    // `-` reads the prompt from stdin; same prompt, same greedy answer.
    let piped = ctl()
        .args(["--json", "generate", "-"])
        .args(GEN)
        .stdin("Hello there")
        .run()
        .ok()
        .json();
    assert_eq!(piped["text"], json["text"]);
    // Constrained decoding: a schema from stdin makes the random fixture answer valid JSON.
    let schema = r#"{"type":"object","properties":{"n":{"type":"integer","minimum":0,"maximum":9}},"required":["n"],"additionalProperties":false}"#;
    let structured = ctl()
        .args([
            "--json",
            "generate",
            "Hi",
            "--json-schema",
            "-",
            "--max-tokens",
            "50",
        ])
        .stdin(schema)
        .run()
        .ok()
        .json();
    assert_eq!(structured["finish_reason"], "stop", "{structured}");
    let value: serde_json::Value =
        serde_json::from_str(structured["text"].as_str().expect("text")).expect("JSON answer");
    assert!(
        value["n"].as_i64().is_some_and(|n| (0..=9).contains(&n)),
        "{value}"
    );
    ctl()
        .args(["generate", "Hi", "--regex", "a+", "--json-object"])
        .run()
        .fails_with(2, "--json-object");
    let stats = ctl()
        .args(["generate", "Hi", "--stats"])
        .args(GEN)
        .run()
        .ok();
    assert!(stats.stderr.contains("6 generated tokens"), "{stats:?}");
    // A bad flag is refused by moectl itself, naming the flag: a usage error, exit 2 (the daemon's
    // own refusal of the option, exit 5, is what a client that skips the check gets).
    ctl()
        .args(["generate", "Hi", "--top-p", "2"])
        .run()
        .fails_with(2, "'--top-p <P>'");
    // A model that is not loaded: exit 6 with advice, given once, in moectl's words (no D-Bus
    // member such as Models.Load).
    let run = ctl()
        .args(["generate", "Hi", "--model", SECOND])
        .run()
        .fails_with(6, "moectl models load");
    assert_eq!(run.stderr.matches("hint:").count(), 1, "{run:?}");
    assert_eq!(
        run.stderr.matches("moectl models load").count(),
        1,
        "{run:?}"
    );
    assert!(!run.stderr.contains("Models."), "{run:?}");

    // A generated U+0000 (the fixture's byte-level token 196) used to make the bus drop moed's
    // connection mid-request (D-Bus strings cannot hold NUL): moectl then waited forever.
    let nul = (1..=60)
        .map(|seed| {
            ctl()
                .args(["--json", "generate", "Hi", "--temperature", "1.5", "--seed"])
                .args([seed.to_string()])
                .args(["--max-tokens", "60", "--ignore-eos"])
                .run()
                .ok()
                .json()
        })
        .find(|info| {
            info["token_ids"]
                .as_array()
                .is_some_and(|ids| ids.iter().any(|id| id == 196))
        })
        .expect("some seed generates token 196 (U+0000) on the fixture");
    assert!(
        nul["text"].as_str().is_some_and(|t| t.contains('\u{FFFD}')),
        "{nul}"
    );
    assert_eq!(
        ctl().args(["--json", "status"]).run().ok().json()["state"],
        "ready"
    );

    // chat, one-shot with a system message.
    let chat = ctl()
        .args([
            "--json",
            "chat",
            "--system",
            "Answer briefly.",
            "What is 2+2?",
        ])
        .args(GEN)
        .run()
        .ok()
        .json();
    assert_eq!(chat["completion_tokens"], 6);
    let plain_chat = ctl()
        .args(["chat", "--system", "Answer briefly.", "What is 2+2?"])
        .args(GEN)
        .run()
        .ok();
    assert_eq!(
        plain_chat.stdout.trim_end_matches('\n'),
        chat["text"].as_str().expect("text")
    );
    // A system message changes the prompt, so the prompt token count.
    let without = ctl()
        .args(["--json", "chat", "What is 2+2?"])
        .args(GEN)
        .run()
        .ok()
        .json();
    assert!(
        chat["prompt_tokens"].as_u64() > without["prompt_tokens"].as_u64(),
        "{chat} {without}"
    );

    // chat, interactive (piped): slash commands change the options of later turns, the
    // conversation grows, /reset forgets it, bad values are refused and the session goes on.
    let session = ctl()
        .args(["--json", "chat", "--temperature", "0", "--max-tokens", "5", "--ignore-eos"])
        .stdin(
            "first\n/max-tokens 2\nsecond \\\ncontinued\n/temperature -1\n/reset\n\"\"\"\nthird\nblock\n\"\"\"\n/bogus\n/quit\nnever sent\n",
        )
        .run()
        .ok();
    let turns: Vec<serde_json::Value> = session
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON line per turn"))
        .collect();
    assert_eq!(turns.len(), 3, "{session:?}");
    assert_eq!(turns[0]["completion_tokens"], 5);
    assert_eq!(turns[1]["completion_tokens"], 2);
    assert_eq!(turns[2]["completion_tokens"], 2);
    // Turn 2 carries turn 1 in its prompt; after /reset, turn 3 starts afresh.
    let prompt = |i: usize| turns[i]["prompt_tokens"].as_u64().expect("prompt_tokens");
    assert!(prompt(1) > prompt(0) + 5, "{turns:?}");
    assert!(prompt(2) < prompt(1), "{turns:?}");
    assert!(
        session.stderr.contains("option 'temperature'"),
        "{session:?}"
    );
    assert!(
        session.stderr.contains("unknown command /bogus"),
        "{session:?}"
    );

    // score
    let score = ctl()
        .args(["--json", "score", "The cat sat on the mat"])
        .run()
        .ok()
        .json();
    let tokens = score["tokens"].as_array().expect("tokens");
    assert!(tokens.len() > 3, "{score}");
    assert!(tokens[0]["logprob"].is_null());
    assert!(
        tokens[1..]
            .iter()
            .all(|t| t["logprob"].as_f64().is_some_and(|l| l <= 0.0))
    );
    let perplexity = score["perplexity"].as_f64().expect("perplexity");
    assert!(perplexity.is_finite() && perplexity >= 1.0, "{score}");
    let table = ctl().args(["score", "The cat"]).run().ok().stdout;
    assert!(
        table.contains("logprob") && table.contains("perplexity"),
        "{table}"
    );

    // models list / info / load / switch / unload (the test runs as root: an admin).
    let list = ctl().args(["--json", "models", "list"]).run().ok().json();
    let names: Vec<&str> = list
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert!(names.contains(&MODEL) && names.contains(&SECOND), "{list}");
    let info = ctl()
        .args(["--json", "models", "info", MODEL])
        .run()
        .ok()
        .json();
    assert_eq!(info["architecture"], MODEL);
    assert_eq!(info["active"], true);
    assert_eq!(info["execution_provider"], "cpu");
    let num_experts = info["num_experts"].as_u64().expect("num_experts");
    ctl()
        .args(["models", "info", "no-such-model"])
        .run()
        .fails_with(5, "no-such-model");
    if is_root() {
        let loaded = ctl()
            .args(["--json", "models", "load", SECOND])
            .run()
            .ok()
            .json();
        assert_eq!(loaded["action"], "load");
        ctl()
            .args(["generate", "Hi", "--model", SECOND])
            .args(GEN)
            .run()
            .ok();
        ctl().args(["models", "switch", SECOND]).run().ok();
        let status = ctl().args(["--json", "status"]).run().ok().json();
        assert_eq!(status["model"], SECOND);
        ctl().args(["models", "switch", MODEL]).run().ok();
        let unloaded = ctl().args(["models", "unload", SECOND]).run().ok();
        assert!(
            unloaded.stdout.starts_with("unloaded qwen3_moe"),
            "{unloaded:?}"
        );
        ctl()
            .args(["models", "load", "no-such-model"])
            .run()
            .fails_with(5, "no-such-model");

        // A package loaded by path: moectl says the name it goes by (its manifest's name is
        // taken by the fixture, so its folder's), and that name is what --model takes.
        let copy = tempfile::tempdir().expect("tempdir");
        set_mode(copy.path(), 0o755);
        let pkg = copy.path().join("copy-of-q3");
        let src = models_dir(copy.path(), &[SECOND]).join(SECOND);
        let cp = std::process::Command::new("cp")
            .arg("-r")
            .arg(&src)
            .arg(&pkg)
            .status()
            .expect("cp");
        assert!(cp.success());
        let path = pkg.to_string_lossy().into_owned();
        let loaded = ctl().args(["models", "load", &path]).run().ok();
        assert!(
            loaded
                .stdout
                .starts_with(&format!("loaded {path} as copy-of-q3 (")),
            "{loaded:?}"
        );
        assert!(loaded.stdout.contains("--model copy-of-q3"), "{loaded:?}");
        ctl()
            .args(["generate", "Hi", "--model", "copy-of-q3"])
            .args(GEN)
            .run()
            .ok();
        let json = ctl()
            .args(["--json", "models", "unload", "copy-of-q3"])
            .run()
            .ok()
            .json();
        assert_eq!(json["name"], "copy-of-q3");
    }

    // experts: the statistics of the requests above, as JSON, text heatmap and SVG.
    let experts = ctl().args(["--json", "experts"]).run().ok().json();
    assert_eq!(experts["model"], MODEL);
    let layers = experts["layers"].as_array().expect("layers");
    assert!(!layers.is_empty(), "{experts}");
    for layer in layers {
        let counts = layer["counts"].as_array().expect("counts");
        assert_eq!(counts.len() as u64, num_experts, "{layer}");
        assert!(layer["total"].as_u64() > Some(0), "{layer}");
    }
    assert!(experts["requests"].as_u64() >= Some(9), "{experts}");
    let rate = experts["cache"]["hit_rate"].as_f64().expect("hit rate");
    assert!((0.0..=1.0).contains(&rate));
    let svg_path = _daemon.work.path().join("experts.svg");
    let heatmap = ctl()
        .args(["experts", "--svg"])
        .args([svg_path.to_str().expect("utf-8 path")])
        .env("COLUMNS", "100")
        .run()
        .ok();
    assert!(
        heatmap.stdout.contains("Expert activation of deepseek_v3"),
        "{heatmap:?}"
    );
    assert!(heatmap.stdout.contains("hit rate"), "{heatmap:?}");
    assert_eq!(
        heatmap.stdout.matches("layer ").count(),
        layers.len(),
        "{heatmap:?}"
    );
    assert!(heatmap.stdout.contains('█'), "no full cell: {heatmap:?}");
    let svg = std::fs::read_to_string(&svg_path).expect("svg written");
    assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert_eq!(
        svg.matches("<title>layer ").count() as u64,
        layers.len() as u64 * num_experts
    );
    ctl()
        .args(["experts", "--model", "no-such-model"])
        .run()
        .fails_with(5, "no-such-model");
    if is_root() {
        ctl().args(["experts", "--reset"]).run().ok();
        let reset = ctl().args(["--json", "experts"]).run().ok().json();
        assert_eq!(reset["requests"], 0, "{reset}");
    }

    // config: `moed check-config` on the daemon's own file.
    let config = ctl()
        .args(["--json", "config", "show", "--config"])
        .args([_daemon.config.to_str().expect("utf-8 path")])
        .run()
        .ok()
        .json();
    assert_eq!(config["config"]["access"]["authorizer"], "group");
    assert_eq!(config["config"]["models"]["default"], MODEL);
    let bad = _daemon.work.path().join("bad.toml");
    std::fs::write(&bad, "[service]\nmax_concurrent = \"many\"\n").expect("write");
    ctl()
        .args(["config", "check", "--config"])
        .args([bad.to_str().expect("utf-8 path")])
        .run()
        .fails_with(5, "service.max_concurrent");
}

#[test]
fn advice_when_moed_is_not_running() {
    let bus = TestBus::start();
    for args in [
        &["status"][..],
        &["generate", "Hi"],
        &["chat", "Hi"],
        &["models", "list"],
        &["models", "load", MODEL],
        &["experts"],
        &["alerts"],
    ] {
        let run = Ctl::new(&bus)
            .args(args)
            .run()
            .fails_with(3, "moed is not running");
        assert!(
            run.stderr.contains("moed serve --address"),
            "{args:?}: {run:?}"
        );
    }
    let absent = Ctl::on("unix:path=/nonexistent/bus")
        .args(["status"])
        .run()
        .fails_with(3, "cannot connect");
    // moed joins a bus; the advice says how to start one first.
    assert!(
        absent
            .stderr
            .contains("dbus-daemon --session --address=unix:path=/nonexistent/bus"),
        "{absent:?}"
    );
    Ctl::on("not-a-bus")
        .args(["status"])
        .run()
        .fails_with(2, "neither 'system', 'session' nor a D-Bus address");
}
