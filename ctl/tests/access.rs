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
