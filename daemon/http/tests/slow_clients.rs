//! Clients that are slow, idle or many cannot hold the bridge: half-sent headers and idle
//! keep-alive connections are closed at the header deadline, a stalled body is answered 408 at
//! the body deadline, and connections beyond `--max-connections` wait until one closes. Only a
//! private bus is needed (the bridge connects to it at start); no request reaches moed.

mod util;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use util::*;

/// Long enough that a bound this test relies on firing is not mistaken for slowness.
const PATIENCE: Duration = Duration::from_secs(20);

fn connect(socket: &Path) -> UnixStream {
    let stream = UnixStream::connect(socket).expect("connect to the bridge");
    stream
        .set_read_timeout(Some(PATIENCE))
        .expect("read timeout");
    stream
}

/// Everything the bridge sends until it closes the connection, and how long that took.
fn read_to_close(stream: &mut UnixStream) -> (String, Duration) {
    let start = Instant::now();
    let mut got = Vec::new();
    match stream.read_to_end(&mut got) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!(
            "the bridge kept the connection open for {:?} ({e}); read so far: {}",
            start.elapsed(),
            String::from_utf8_lossy(&got)
        ),
    }
    (String::from_utf8_lossy(&got).into_owned(), start.elapsed())
}

#[test]
fn half_sent_headers_and_idle_connections_are_closed_at_the_header_deadline() {
    let bus = TestBus::start();
    let bridge = Bridge::start(&bus, &["--header-timeout", "1"]);

    let mut half = connect(&bridge.socket);
    half.write_all(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")
        .expect("write");
    let (reply, took) = read_to_close(&mut half);
    assert!(!reply.contains("200 OK"), "{reply}");
    assert!(took >= Duration::from_millis(900), "closed after {took:?}");

    let mut idle = connect(&bridge.socket);
    let (reply, _) = read_to_close(&mut idle);
    assert!(!reply.contains("200 OK"), "{reply}");

    // Keep-alive: after a whole exchange, the wait for the next request is bounded too.
    let mut kept = connect(&bridge.socket);
    kept.write_all(b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let (reply, _) = read_to_close(&mut kept);
    assert!(reply.starts_with("HTTP/1.1 404"), "{reply}");
}

#[test]
fn a_stalled_body_is_answered_408_at_the_body_deadline() {
    let bus = TestBus::start();
    let bridge = Bridge::start(&bus, &["--body-timeout", "1"]);
    let mut slow = connect(&bridge.socket);
    slow.write_all(
        b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"prompt\":",
    )
    .expect("write");
    let mut got = vec![0u8; 4096];
    let n = slow.read(&mut got).expect("an answer before the body ends");
    let reply = String::from_utf8_lossy(&got[..n]);
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains("\"request_timeout\""), "{reply}");
    assert!(reply.contains("--body-timeout"), "{reply}");
}

#[test]
fn connections_beyond_the_limit_wait_for_a_free_one() {
    let bus = TestBus::start();
    let bridge = Bridge::start(&bus, &["--max-connections", "2"]);
    let hold_a = connect(&bridge.socket);
    let _hold_b = connect(&bridge.socket);

    // Queued in the backlog: connected, but not served while both slots are held.
    let mut third = connect(&bridge.socket);
    third
        .write_all(b"GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("write");
    third
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("read timeout");
    let mut byte = [0u8; 1];
    let early = third.read(&mut byte);
    assert!(
        matches!(&early, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "served while the limit was reached: {early:?}"
    );

    drop(hold_a);
    third
        .set_read_timeout(Some(PATIENCE))
        .expect("read timeout");
    let (rest, _) = read_to_close(&mut third);
    assert!(rest.starts_with("HTTP/1.1 404"), "{rest}");
}
