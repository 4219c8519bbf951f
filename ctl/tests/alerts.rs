//! `moectl alerts` as a bus monitor: it shows Alert signals sent by the owner of
//! `org.moed.Moed1` to any client, ignores forged ones, and notes when the owner goes away.
//!
//! To stage forged signals and the owner going away, the test's own connection takes the name
//! `org.moed.Moed1` and sends exactly what moed's Request objects send (`Alert(ssss)` at
//! `/org/moed/Moed1/request/<id>`, unicast to the requesting client).

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_of_every_client_are_followed() {
    // The private bus runs as the test's user, whom dbus-daemon lets become a monitor.
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
    let forger = connect().await;

    let mut child = Ctl::new(&bus).args(["--json", "alerts"]).spawn();
    let stdout = lines(child.stdout.take().expect("stdout"));
    let stderr = lines(child.stderr.take().expect("stderr"));
    let ready = stderr
        .recv_timeout(Duration::from_secs(20))
        .expect("moectl alerts starts");
    assert!(ready.contains("following moed's alerts"), "{ready}");

    let client_name = client.unique_name().expect("unique name").to_string();
    let body = (
        "warning",
        "input.blank",
        "the prompt is blank",
        "input-check",
    );
    forger
        .emit_signal(
            Some(client_name.as_str()),
            "/org/moed/Moed1/request/6",
            moed_dbus::REQUEST_INTERFACE,
            "Alert",
            &("critical", "forged", "not from moed", "nobody"),
        )
        .await
        .expect("emit forged");
    daemon
        .emit_signal(
            Some(client_name.as_str()),
            "/org/moed/Moed1/request/7",
            moed_dbus::REQUEST_INTERFACE,
            "Alert",
            &body,
        )
        .await
        .expect("emit alert");
    let first: serde_json::Value = serde_json::from_str(
        &stdout
            .recv_timeout(Duration::from_secs(20))
            .expect("an alert line"),
    )
    .expect("JSON line");
    assert_eq!(first["code"], "input.blank", "{first}");
    assert_eq!(first["severity"], "warning");
    assert_eq!(first["message"], "the prompt is blank");
    assert_eq!(first["source"], "input-check");
    assert_eq!(first["request"], "7");
    assert_eq!(first["client"], client_name.as_str());

    daemon
        .release_name(moed_dbus::BUS_NAME)
        .await
        .expect("release the name");
    let stopped: serde_json::Value = serde_json::from_str(
        &stdout
            .recv_timeout(Duration::from_secs(20))
            .expect("an event line"),
    )
    .expect("JSON line");
    assert_eq!(stopped["event"], "moed stopped", "{stopped}");

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("interrupt moectl");
    let status = child.wait().expect("moectl exits");
    assert!(
        status.success(),
        "Ctrl-C ends `alerts` normally: {status:?}"
    );
    assert!(
        stdout.try_iter().all(|l| !l.contains("forged")),
        "a forged alert was shown"
    );
}
