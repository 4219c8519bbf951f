//! The outgoing-string boundary end to end: values that would carry a NUL byte or megabytes
//! into a reply (an error echoing a huge client value, database rows and documents holding NUL
//! bytes) come back valid and bounded, and after each the daemon still answers a greedy request
//! with the same text as before.

mod serve_util;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use moed_dbus::knowledge::{KnowledgeProxy, SearchOptions, StoreOptions};
use moed_dbus::proxy::EngineProxy;
use moed_dbus::wire::limits;
use moed_dbus::{GenerateOptions, MoedError};
use serve_util::*;
use zbus::{OwnedFd, OwnedVariant};

const PROMPT: &str = "Hello there";
/// A template over a plain table: every row whose text contains the query.
const TEMPLATE: &str =
    "SELECT id, source, text, 1.0 AS score FROM docs WHERE instr(text, $1) > 0 LIMIT $2";

fn greedy() -> HashMap<String, OwnedVariant> {
    GenerateOptions {
        max_tokens: Some(6),
        temperature: Some(0.0),
        seed: Some(7),
        ..GenerateOptions::default()
    }
    .to_dict()
}

async fn answer(engine: &EngineProxy<'_>) -> String {
    engine
        .complete(PROMPT, greedy())
        .await
        .expect("a greedy Complete after a hostile step")
        .0
}

/// A SQLite database whose rows carry NUL bytes and escape sequences in every column, as a
/// company database might after a bad import.
fn poisoned_sqlite(dir: &Path) -> PathBuf {
    let path = dir.join("poison.db");
    let conn = rusqlite::Connection::open(&path).expect("create sqlite db");
    conn.execute_batch("CREATE TABLE docs (id TEXT, source TEXT, text TEXT);")
        .expect("create table");
    conn.execute(
        "INSERT INTO docs VALUES (?1, ?2, ?3)",
        (
            "row\0one",
            "import\0.csv",
            "refund policy\0: \x1b[2J thirty days",
        ),
    )
    .expect("insert row");
    path
}

fn knowledge_config(work: &Path) -> String {
    format!(
        "\n[knowledge.sources.documents]\nkind = \"embedded\"\n\n\
         [knowledge.sources.rows]\nkind = \"sqlite\"\npath = \"{}\"\ntemplate = \"{TEMPLATE}\"\n",
        poisoned_sqlite(work).display()
    )
}

fn search_in(label: &str) -> HashMap<String, OwnedVariant> {
    SearchOptions {
        source: Some(label.to_string()),
        limit: Some(5),
    }
    .to_dict()
}

fn assert_clean(what: &str, s: &str, max: usize) {
    assert!(!s.contains('\0'), "{what}: a NUL reached the client");
    assert!(s.len() <= max, "{what}: {} bytes, limit {max}", s.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_strings_leave_bounded_and_the_daemon_keeps_answering() {
    let bus = TestBus::start();
    let mut setup = DaemonSetup::new();
    setup.extra_config = knowledge_config(setup.work.path());
    let _daemon = Daemon::start(&bus, &setup, "").await;
    let conn = bus.connect().await;
    let engine = engine(&conn).await;
    let before = answer(&engine).await;
    assert!(!before.is_empty());

    // An error that echoes a 20 MB client value: the reply is one bounded message. Unbounded,
    // it carried 20 MB (40 MB where the value was quoted twice, past the bus's limit).
    let huge = "m".repeat(20 * 1024 * 1024);
    let err = models(&conn)
        .await
        .info(&huge)
        .await
        .expect_err("no such model");
    assert_eq!(err.short_name(), Some("NotFound"), "{err:?}");
    assert_clean("Models.Info error", &err.message(), limits::ERROR_MESSAGE);
    assert_eq!(answer(&engine).await, before);

    let mut huge_model = GenerateOptions {
        model: Some(huge),
        ..GenerateOptions::default()
    }
    .to_dict();
    huge_model.extend(greedy());
    match engine.complete(PROMPT, huge_model).await {
        Err(err @ MoedError::ModelNotLoaded(_)) | Err(err @ MoedError::InvalidArgument(_)) => {
            assert_clean("Complete error", &err.message(), limits::ERROR_MESSAGE);
        }
        other => panic!("expected a named refusal, got {other:?}"),
    }
    assert_eq!(answer(&engine).await, before);

    // Database rows with NUL bytes in id, source and text come back valid.
    let k = KnowledgeProxy::builder(&conn)
        .build()
        .await
        .expect("knowledge proxy");
    let (hits, failures) = k
        .search("refund", search_in("rows"))
        .await
        .expect("Search of a source whose rows hold NUL bytes");
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_clean("row id", &hits[0].id, limits::DOCUMENT_ID);
    assert_clean("row source", &hits[0].source, limits::DOCUMENT_TITLE);
    assert_clean("row text", &hits[0].text, limits::DOCUMENT_TEXT);
    assert!(hits[0].text.contains("thirty days"), "{hits:?}");
    assert_eq!(answer(&engine).await, before);

    // A document with NUL bytes added through AddDocuments: searched and listed, valid.
    let files = tempfile::tempdir().expect("tempdir");
    let doc = files.path().join("poison.txt");
    std::fs::write(
        &doc,
        "vacation\0days: twenty\0five per year \x07\x1b]0;x\x07",
    )
    .expect("write");
    let fd: std::os::fd::OwnedFd = std::fs::File::open(&doc).expect("open").into();
    let documents: Vec<(String, OwnedFd)> = vec![(doc.display().to_string(), fd.into())];
    let store = StoreOptions {
        source: Some("documents".into()),
    }
    .to_dict();
    let summary = k
        .add_documents(documents, store.clone())
        .await
        .expect("AddDocuments");
    assert_eq!(summary.added, 1, "{summary:?}");
    assert_eq!(answer(&engine).await, before);
    let (hits, _) = k
        .search("vacation", search_in("documents"))
        .await
        .expect("Search of a document holding NUL bytes");
    assert!(!hits.is_empty(), "the document was stored");
    for h in &hits {
        assert_clean("document id", &h.id, limits::DOCUMENT_ID);
        assert_clean("document text", &h.text, limits::DOCUMENT_TEXT);
        assert!(h.text.contains("twenty"), "{h:?}");
    }
    let listed = k.list_documents(store).await.expect("ListDocuments");
    assert_eq!(listed.len(), 1);
    assert_clean("document name", &listed[0].name, limits::PATH);
    assert_eq!(answer(&engine).await, before);
}

/// Alerts stored with a NUL and megabytes (as a plugin could once raise them) are read back
/// valid and bounded after a restart, instead of taking the daemon off the bus on every read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poisoned_audit_log_is_read_back_bounded_after_a_restart() {
    let bus = TestBus::start();
    let setup = DaemonSetup::new();
    {
        let state = moed::state::StateStore::open(&setup.state_dir()).expect("open state");
        let entry = moed::state::AlertEntry {
            seq: 0,
            time: 1.0,
            request_id: Some("7\0".into()),
            plugin: "evil\0plugin".into(),
            severity: "warning".into(),
            code: "code\0".repeat(100_000),
            message: format!("\0{}", "m".repeat(10 * 1024 * 1024)),
            uid: Some(1000),
        };
        state.append_alerts(&[entry]).expect("store the alert");
    }
    let _daemon = Daemon::start(&bus, &setup, "").await;
    let conn = bus.connect().await;
    let engine = engine(&conn).await;
    let before = answer(&engine).await;

    let plugins = moed_dbus::plugins::PluginsProxy::new(&conn)
        .await
        .expect("plugins proxy");
    let log = plugins.recent_alerts(10).await.expect("RecentAlerts");
    assert_eq!(log.len(), 1, "{log:?}");
    let a = &log[0];
    assert_clean(
        "request id",
        a.request_id.as_deref().unwrap_or(""),
        limits::NAME,
    );
    assert_clean("plugin", &a.plugin, limits::NAME);
    assert_clean("code", &a.code, limits::ALERT_CODE);
    assert_clean("message", &a.message, limits::ALERT_MESSAGE);
    assert!(a.code.starts_with("code\u{FFFD}"), "{}", a.code);
    assert_eq!(answer(&engine).await, before);
}
