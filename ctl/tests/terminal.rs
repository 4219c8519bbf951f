//! Text that came from plugins, documents or databases reaches the terminal with its control
//! characters escaped: streamed alerts (`moectl alerts`), knowledge listings and search results.
//! A raw ESC or BEL there could clear the screen, retitle the terminal or hide text.

mod util;

use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::time::Duration;

use util::*;

fn lines(reader: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn assert_no_controls(what: &str, text: &str) {
    assert!(
        !text
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t'),
        "{what} printed a control character: {text:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_alerts_are_escaped() {
    // As in alerts.rs, the test's own connection owns the daemon's name and sends the Alert.
    let bus = TestBus::start();
    let connect = || async {
        zbus::connection::Builder::address(bus.address.as_str())
            .build()
            .await
            .expect("connect")
    };
    let daemon = connect().await;
    daemon
        .request_name(moed_dbus::BUS_NAME)
        .await
        .expect("own org.moed.Moed1");
    let client = connect().await;
    let mut child = Ctl::new(&bus).args(["alerts"]).spawn();
    let stdout = lines(child.stdout.take().expect("stdout"));
    let stderr = lines(child.stderr.take().expect("stderr"));
    let ready = stderr
        .recv_timeout(Duration::from_secs(20))
        .expect("moectl alerts starts");
    assert!(ready.contains("following moed's alerts"), "{ready}");

    let client_name = client.unique_name().expect("unique name").to_string();
    daemon
        .emit_signal(
            Some(client_name.as_str()),
            "/org/moed/Moed1/request/3",
            moed_dbus::REQUEST_INTERFACE,
            "Alert",
            &(
                "warning",
                "\x1b[2Jwipe",
                "title \x1b]0;owned\x07 set",
                "evil\x1b[8m",
            ),
        )
        .await
        .expect("emit alert");
    let line = stdout
        .recv_timeout(Duration::from_secs(20))
        .expect("an alert line");
    assert_no_controls("moectl alerts", &line);
    assert!(line.contains("\\u{1b}[2Jwipe"), "{line}");
    assert!(line.contains("title \\u{1b}]0;owned\\u{7} set"), "{line}");
    assert!(line.contains("from evil\\u{1b}[8m"), "{line}");

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("interrupt moectl");
    let status = child.wait().expect("moectl exits");
    assert!(status.success(), "{status:?}");
}

#[test]
fn knowledge_listing_and_search_are_escaped() {
    let bus = TestBus::start();
    let _daemon = Daemon::start(&bus, "");
    let docs = tempfile::tempdir().expect("tempdir");
    set_mode(docs.path(), 0o755);
    let file = docs.path().join("\x1b[31mred.txt");
    std::fs::write(
        &file,
        "Every employee has twenty vacation days \x1b]0;pwned\x07 per year.",
    )
    .expect("write");
    set_mode(&file, 0o644);

    Ctl::new(&bus)
        .args(["knowledge", "add"])
        .args([&file])
        .run()
        .ok();

    let listed = Ctl::new(&bus).args(["knowledge", "list"]).run().ok().stdout;
    assert_no_controls("knowledge list", &listed);
    assert!(listed.contains("\\u{1b}[31mred.txt"), "{listed}");

    let found = Ctl::new(&bus)
        .args(["knowledge", "search", "vacation"])
        .run()
        .ok()
        .stdout;
    assert_no_controls("knowledge search", &found);
    assert!(found.contains("\\u{1b}[31mred.txt"), "{found}");
    assert!(found.contains("\\u{1b}]0;pwned\\u{7}"), "{found}");

    // JSON output keeps the values as they are (JSON escapes them itself).
    let json = Ctl::new(&bus)
        .args(["--json", "knowledge", "list"])
        .run()
        .ok()
        .json();
    let name = json[0]["name"].as_str().expect("a name");
    assert!(name.ends_with("\x1b[31mred.txt"), "{json}");
}
