//! `org.moed.Moed1.Knowledge` on the real `moed serve` over a private bus: documents added as
//! file descriptors with progress signals, replaced when changed, searched, listed and removed;
//! search across the embedded store, a SQLite and a PostgreSQL source (credentials from a secrets
//! file); a source that is down; changes surviving `kill -9`; a secrets file others could read
//! stopping the start; an unprivileged caller refused `AddDocuments` but allowed `Search`.

mod serve_util;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use moed_dbus::MoedError;
use moed_dbus::knowledge::{KnowledgeProxy, SearchOptions, StoreOptions};
use moed_test_harness::postgres::PgCluster;
use serve_util::*;
use zbus::{OwnedFd, OwnedVariant};

const WIKI_TEMPLATE: &str = "SELECT id, source, text, -bm25(knowledge) AS score FROM knowledge \
    WHERE knowledge MATCH $1 ORDER BY score DESC LIMIT $2";
const PG_TEMPLATE: &str = "SELECT id, source, text, ts_rank(tsv, q)::float8 AS score \
    FROM knowledge, websearch_to_tsquery('english', $1) AS q WHERE tsv @@ q \
    ORDER BY score DESC, id LIMIT $2";

fn fixtures() -> PathBuf {
    repo_root().join("tests/fixtures/company")
}

fn company_sqlite(dir: &Path) -> PathBuf {
    let path = dir.join("company.db");
    let conn = rusqlite::Connection::open(&path).expect("create sqlite db");
    for f in ["sqlite.sql", "20-data.sql", "sqlite-index.sql"] {
        let sql = std::fs::read_to_string(fixtures().join(f)).expect("fixture");
        conn.execute_batch(&sql)
            .unwrap_or_else(|e| panic!("{f}: {e}"));
    }
    path
}

/// `[knowledge]` with a small-chunk embedded store, the SQLite company as `wiki`, a SQLite file
/// that does not exist as `gone`, and (when given) the PostgreSQL company as `company`.
fn knowledge_config(work: &Path, pg: Option<&PgCluster>) -> String {
    let wiki = company_sqlite(work);
    let secrets = work.join("secrets.toml");
    let mut text = format!(
        "\n[knowledge]\nsecrets_file = \"{}\"\n\n[knowledge.sources.documents]\nkind = \"embedded\"\n\
         chunk_words = 40\nchunk_overlap = 8\n\n[knowledge.sources.wiki]\nkind = \"sqlite\"\n\
         path = \"{}\"\nquery = \"any_word\"\ntemplate = \"{WIKI_TEMPLATE}\"\n\n\
         [knowledge.sources.gone]\nkind = \"sqlite\"\npath = \"{}\"\ntemplate = \"{WIKI_TEMPLATE}\"\n",
        secrets.display(),
        wiki.display(),
        work.join("gone.db").display()
    );
    if let Some(pg) = pg {
        std::fs::write(
            &secrets,
            format!(
                "[company]\nconnection = \"{}\"\n",
                pg.connection("moed_reader", "reader-test-password", "company")
            ),
        )
        .expect("write secrets");
        set_mode(&secrets, 0o600);
        text.push_str(&format!(
            "\n[knowledge.sources.company]\nkind = \"postgres\"\ncredentials = \"company\"\n\
             query = \"any_word\"\ntimeout_ms = 1000\ntemplate = \"{PG_TEMPLATE}\"\n"
        ));
    }
    text
}

fn company_cluster() -> Option<PgCluster> {
    let pg = PgCluster::start()?;
    pg.psql("postgres", &["-c", "CREATE DATABASE company"]);
    pg.load_dir("company", &fixtures());
    Some(pg)
}

async fn knowledge(conn: &zbus::Connection) -> KnowledgeProxy<'static> {
    KnowledgeProxy::builder(conn)
        .build()
        .await
        .expect("knowledge proxy")
}

fn documents(paths: &[PathBuf]) -> Vec<(String, OwnedFd)> {
    paths
        .iter()
        .map(|p| {
            let fd: std::os::fd::OwnedFd = std::fs::File::open(p).expect("open").into();
            (p.display().to_string(), fd.into())
        })
        .collect()
}

fn store(label: &str) -> HashMap<String, OwnedVariant> {
    StoreOptions {
        source: Some(label.to_string()),
    }
    .to_dict()
}

fn search_in(label: Option<&str>, limit: u32) -> HashMap<String, OwnedVariant> {
    SearchOptions {
        source: label.map(str::to_string),
        limit: Some(limit),
    }
    .to_dict()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p
}

const HANDBOOK: &str = "# Employee handbook\n\nEvery employee has 25 vacation days per calendar \
    year. Unused vacation days expire on March 31 of the following year. Sick days do not count \
    as vacation.";
const OFFICE: &str = "<html><body><h1>Office hours</h1><p>The Berlin office opens at 8:00 and \
    closes at 18:00 on weekdays.</p></body></html>";
const IT: &str =
    "Passwords are reset at the IT portal; the help desk never asks for your password.";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn knowledge_interface_adds_searches_lists_and_keeps_documents() {
    let pg = company_cluster();
    let bus = TestBus::start();
    let mut setup = DaemonSetup::new();
    setup.default_model = false;
    setup.extra_config = knowledge_config(setup.work.path(), pg.as_ref());
    let mut daemon = Daemon::start(&bus, &setup, "").await;
    let conn = bus.connect().await;
    let k = knowledge(&conn).await;

    let files = tempfile::tempdir().expect("tempdir");
    let handbook = write(files.path(), "handbook.md", HANDBOOK);
    let office = write(files.path(), "office.html", OFFICE);
    let it = write(files.path(), "it.txt", IT);
    let picture = write(files.path(), "logo.png", "not an image either");

    // Progress arrives for every document, before the reply.
    let mut progress = k.receive_ingest_progress().await.expect("subscribe");
    let summary = k
        .add_documents(
            documents(&[
                handbook.clone(),
                office.clone(),
                it.clone(),
                picture.clone(),
            ]),
            store("documents"),
        )
        .await
        .expect("AddDocuments");
    assert_eq!(
        (summary.added, summary.replaced, summary.unchanged),
        (3, 0, 0)
    );
    assert_eq!(summary.label, "documents");
    assert!(summary.chunks >= 3, "{summary:?}");
    assert_eq!(summary.failed.len(), 1);
    assert!(summary.failed[0].0.ends_with("logo.png") && summary.failed[0].1.contains(".txt"));
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let s = tokio::time::timeout(Duration::from_secs(5), progress.next())
            .await
            .expect("progress signal")
            .expect("stream");
        let a = s.args().expect("args");
        assert_eq!((a.job(), *a.total()), (&summary.job, 4));
        seen.push(*a.done());
    }
    assert_eq!(seen, [1, 2, 3, 4]);

    // A changed file replaces its chunks; the others are unchanged.
    std::fs::write(&handbook, "Every employee has 30 holiday days per year.").expect("edit");
    let again = k
        .add_documents(
            documents(&[handbook.clone(), office.clone(), it.clone()]),
            HashMap::new(),
        )
        .await
        .expect("AddDocuments again (the only store is the default)");
    assert_eq!((again.added, again.replaced, again.unchanged), (0, 1, 2));

    let (hits, failures) = k
        .search("how many holiday days", search_in(Some("documents"), 3))
        .await
        .expect("Search");
    assert!(failures.is_empty());
    assert_eq!(hits[0].source, handbook.display().to_string());
    assert_eq!(hits[0].label, "documents");
    let (hits, _) = k
        .search("vacation expire March", search_in(Some("documents"), 3))
        .await
        .expect("Search");
    assert!(
        hits.is_empty(),
        "the old version's chunks are gone: {hits:?}"
    );

    // All sources at once: hits from each that answers; the one that is down is reported.
    let (hits, failures) = k
        .search("Berlin office weekdays return refund", search_in(None, 10))
        .await
        .expect("Search all");
    let labels: std::collections::BTreeSet<&str> = hits.iter().map(|h| h.label.as_str()).collect();
    assert!(
        labels.contains("documents") && labels.contains("wiki"),
        "{hits:#?}"
    );
    if pg.is_some() {
        assert!(labels.contains("company"), "{hits:#?}");
    }
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].0, "gone");
    let (hits, _) = k
        .search("How do I return a jacket?", search_in(Some("wiki"), 2))
        .await
        .expect("Search wiki");
    assert_eq!(hits[0].id, "article-7");

    // Errors name the problem.
    match k.search("x", search_in(Some("nope"), 3)).await {
        Err(MoedError::NotFound(m)) => assert!(m.contains("'nope'"), "{m}"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    match k.search("x", search_in(Some("gone"), 3)).await {
        Err(MoedError::Failed(m)) => assert!(m.contains("gone.db"), "{m}"),
        other => panic!("expected Failed, got {other:?}"),
    }
    let mut bad = HashMap::new();
    bad.insert("limit".to_string(), OwnedVariant::from(0u32));
    match k.search("x", bad).await {
        Err(MoedError::InvalidArgument(m)) => assert!(m.contains("'limit'"), "{m}"),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    match k.add_documents(Vec::new(), store("wiki")).await {
        Err(MoedError::InvalidArgument(m)) => assert!(m.contains("sqlite"), "{m}"),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }

    let sources = k.list_sources().await.expect("ListSources");
    let by_label: HashMap<&str, _> = sources.iter().map(|s| (s.label.as_str(), s)).collect();
    assert_eq!(by_label["documents"].kind, "embedded");
    assert_eq!(by_label["documents"].documents, Some(3));
    assert_eq!(by_label["wiki"].status, "ready");
    assert_eq!(by_label["gone"].status, "unavailable");
    assert!(
        by_label["gone"]
            .message
            .as_deref()
            .unwrap_or("")
            .contains("gone.db")
    );
    if pg.is_some() {
        assert_eq!(
            (
                by_label["company"].kind.as_str(),
                by_label["company"].status.as_str()
            ),
            ("postgres", "ready")
        );
        assert_eq!(by_label["company"].timeout_ms, Some(1000));
    }

    let removed = k
        .remove_documents(
            &[it.display().to_string(), "/not/stored.txt".into()],
            HashMap::new(),
        )
        .await
        .expect("RemoveDocuments");
    assert_eq!(removed, [it.display().to_string()]);
    let listed = k
        .list_documents(HashMap::new())
        .await
        .expect("ListDocuments");
    let mut names: Vec<&str> = listed.iter().map(|d| d.name.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            handbook.to_str().expect("utf8"),
            office.to_str().expect("utf8")
        ]
    );

    // Acknowledged changes survive kill -9.
    daemon.signal(Signal::SIGKILL);
    daemon.wait_exit(Duration::from_secs(10));
    drop(daemon);
    let _daemon = Daemon::start(&bus, &setup, "").await;
    let conn = bus.connect().await;
    let k = knowledge(&conn).await;
    let (hits, _) = k
        .search("holiday", search_in(Some("documents"), 3))
        .await
        .expect("Search after restart");
    assert_eq!(hits[0].source, handbook.display().to_string());
    assert_eq!(
        k.list_documents(HashMap::new()).await.expect("list").len(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secrets_file_others_can_read_stops_the_start() {
    let bus = TestBus::start();
    let mut setup = DaemonSetup::new();
    setup.default_model = false;
    let secrets = setup.work.path().join("secrets.toml");
    std::fs::write(
        &secrets,
        "[company]\nconnection = \"host=/tmp user=r password=p\"\n",
    )
    .expect("write");
    set_mode(&secrets, 0o644);
    setup.extra_config = format!(
        "\n[knowledge]\nsecrets_file = \"{}\"\n\n[knowledge.sources.company]\nkind = \"postgres\"\n\
         credentials = \"company\"\ntemplate = \"{PG_TEMPLATE}\"\n",
        secrets.display()
    );
    setup.write_config("");
    let mut daemon = Daemon::spawn(&bus, &setup, &[]);
    let status = daemon.wait_exit(Duration::from_secs(30));
    assert!(!status.success());
    let log = daemon.log_lines().join("\n");
    assert!(
        log.contains(&secrets.display().to_string()) && log.contains("chmod 0600"),
        "{log}"
    );
    assert!(!log.contains("password=p"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unprivileged_callers_search_but_cannot_change_the_store() {
    if !is_root() {
        eprintln!("SKIPPED: setpriv needs root to become nobody");
        return;
    }
    let bus = TestBus::start();
    let mut setup = DaemonSetup::new();
    setup.default_model = false;
    let _daemon = Daemon::start(&bus, &setup, "").await;
    let conn = bus.connect().await;
    let files = tempfile::tempdir().expect("tempdir");
    let doc = write(files.path(), "handbook.md", HANDBOOK);
    knowledge(&conn)
        .await
        .add_documents(documents(&[doc]), HashMap::new())
        .await
        .expect("root may add");

    let address = bus.address.clone();
    let (add, remove, search) = tokio::task::spawn_blocking(move || {
        (
            gdbus_as_nobody(
                &address,
                None,
                "org.moed.Moed1.Knowledge.AddDocuments",
                &["[]", "{}"],
            ),
            gdbus_as_nobody(
                &address,
                None,
                "org.moed.Moed1.Knowledge.RemoveDocuments",
                &["['/x.md']", "{}"],
            ),
            gdbus_as_nobody(
                &address,
                None,
                "org.moed.Moed1.Knowledge.Search",
                &["vacation days", "{'limit': <2>}"],
            ),
        )
    })
    .await
    .expect("clients");
    for (what, r) in [("AddDocuments", &add), ("RemoveDocuments", &remove)] {
        assert!(!r.0, "{what} must be refused to nobody: {}", r.1);
        assert!(
            r.2.contains("org.moed.Moed1.Error.AccessDenied")
                && r.2.contains("org.moed.manage-knowledge"),
            "{what}: {}",
            r.2
        );
    }
    assert!(search.0, "Search is open to every user: {}", search.2);
    assert!(search.1.contains("handbook.md"), "{}", search.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_sources_and_keeps_the_store() {
    let bus = TestBus::start();
    let mut setup = DaemonSetup::new();
    setup.default_model = false;
    let daemon = Daemon::start(&bus, &setup, "").await;
    let conn = bus.connect().await;
    let k = knowledge(&conn).await;
    let files = tempfile::tempdir().expect("tempdir");
    let doc = write(files.path(), "handbook.md", HANDBOOK);
    k.add_documents(documents(&[doc]), HashMap::new())
        .await
        .expect("add");
    let labels = |s: Vec<moed_dbus::knowledge::SourceInfo>| -> Vec<String> {
        s.into_iter().map(|s| s.label).collect()
    };
    assert_eq!(labels(k.list_sources().await.expect("list")), ["documents"]);

    let wiki = company_sqlite(setup.work.path());
    setup.extra_config = format!(
        "\n[knowledge.sources.documents]\nkind = \"embedded\"\n\n[knowledge.sources.wiki]\n\
         kind = \"sqlite\"\npath = \"{}\"\nquery = \"any_word\"\ntemplate = \"{WIKI_TEMPLATE}\"\n",
        wiki.display()
    );
    setup.write_config("");
    daemon.signal(Signal::SIGHUP);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while labels(k.list_sources().await.expect("list")) != ["documents", "wiki"] {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            daemon.log_lines()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (hits, _) = k
        .search("vacation", search_in(None, 5))
        .await
        .expect("Search");
    assert_eq!(hits[0].label, "documents", "the store kept its documents");
    let (hits, _) = k
        .search("refund", search_in(Some("wiki"), 5))
        .await
        .expect("Search wiki");
    assert!(!hits.is_empty());

    // A broken section leaves the sources as they were.
    setup.extra_config = "\n[knowledge.sources.bad]\nkind = \"postgres\"\ncredentials = \"x\"\n\
        template = \"SELECT $1, $2\"\n[knowledge]\nsecrets_file = \"/nonexistent/secrets.toml\"\n"
        .into();
    setup.write_config("");
    daemon.signal(Signal::SIGHUP);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !daemon
        .log_lines()
        .iter()
        .any(|l| l.contains("knowledge sources not reloaded"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            daemon.log_lines()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        labels(k.list_sources().await.expect("list")),
        ["documents", "wiki"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rereads_the_secrets_file_so_a_rotated_password_works() {
    let Some(pg) = company_cluster() else {
        return;
    };
    let bus = TestBus::start();
    let mut setup = DaemonSetup::new();
    setup.default_model = false;
    setup.extra_config = knowledge_config(setup.work.path(), Some(&pg));
    let daemon = Daemon::start(&bus, &setup, "").await;
    let conn = bus.connect().await;
    let k = knowledge(&conn).await;
    let (hits, _) = k
        .search("refund", search_in(Some("company"), 5))
        .await
        .expect("company answers");
    assert!(!hits.is_empty());

    // The password is rotated and the old sessions end: the old settings no longer connect.
    pg.psql(
        "postgres",
        &["-c", "ALTER ROLE moed_reader PASSWORD 'rotated-password'"],
    );
    pg.psql(
        "postgres",
        &[
            "-c",
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'moed_reader'",
        ],
    );
    let mut refused = false;
    for _ in 0..3 {
        if k.search("refund", search_in(Some("company"), 5))
            .await
            .is_err()
        {
            refused = true;
        }
    }
    assert!(refused, "the old password still connects");

    // The administrator rewrites the secrets file and reloads; nothing else changed.
    let secrets = setup.work.path().join("secrets.toml");
    std::fs::write(
        &secrets,
        format!(
            "[company]\nconnection = \"{}\"\n",
            pg.connection("moed_reader", "rotated-password", "company")
        ),
    )
    .expect("rewrite secrets");
    set_mode(&secrets, 0o600);
    daemon.signal(Signal::SIGHUP);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match k.search("refund", search_in(Some("company"), 5)).await {
            Ok((hits, _)) if !hits.is_empty() => break,
            other => assert!(
                std::time::Instant::now() < deadline,
                "{other:?}\n{:?}",
                daemon.log_lines()
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The embedded store and the SQLite source were kept and still answer.
    let (hits, failed) = k
        .search("refund", search_in(None, 10))
        .await
        .expect("Search all");
    assert!(hits.iter().any(|h| h.label == "wiki"), "{hits:?}");
    assert!(failed.iter().all(|(l, _)| l == "gone"), "{failed:?}");
}

/// Documents stored with NUL bytes (in the text, as a database row) come back as valid D-Bus
/// strings; the daemon stays connected and answers the same greedy request before, after and
/// after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_nul_bytes_are_replaced_and_survive_a_restart() {
    let bus = TestBus::start();
    // With the default model: a normal request is the witness that the daemon is unharmed.
    let mut setup = DaemonSetup::new();
    let work = setup.work.path().to_path_buf();
    let poisoned = company_sqlite(&work);
    {
        let c = rusqlite::Connection::open(&poisoned).expect("open");
        c.execute(
            "INSERT INTO knowledge (id, source, text) VALUES (?1, ?2, ?3)",
            ["nul\0id", "src\0", "refund nul\0text"],
        )
        .expect("insert a row with NUL");
    }
    setup.extra_config = format!(
        "\n[knowledge.sources.documents]\nkind = \"embedded\"\n\n[knowledge.sources.wiki]\n\
         kind = \"sqlite\"\npath = \"{}\"\nquery = \"any_word\"\ntemplate = \"{WIKI_TEMPLATE}\"\n",
        poisoned.display()
    );
    let mut daemon = Daemon::start(&bus, &setup, "").await;
    let conn = bus.connect().await;
    let k = knowledge(&conn).await;
    let greedy = moed_dbus::GenerateOptions {
        max_tokens: Some(6),
        temperature: Some(0.0),
        seed: Some(7),
        ..moed_dbus::GenerateOptions::default()
    };
    let (normal, _) = engine(&conn)
        .await
        .complete("Hello there", greedy.to_dict())
        .await
        .expect("a normal request");
    let files = tempfile::tempdir().expect("tempdir");
    let doc = write(
        files.path(),
        "poison.txt",
        "refund policy with a NUL\0 inside",
    );
    k.add_documents(documents(&[doc]), store("documents"))
        .await
        .expect("add");
    let check = |hits: &[moed_dbus::knowledge::SearchHit]| {
        assert!(hits.iter().any(|h| h.label == "documents"), "{hits:?}");
        for h in hits {
            for s in [&h.id, &h.source, &h.text] {
                assert!(!s.contains('\0'), "{h:?}");
            }
        }
    };
    let (hits, _) = k
        .search("refund", search_in(None, 20))
        .await
        .expect("Search");
    check(&hits);
    assert!(
        hits.iter()
            .any(|h| h.id == "nul\u{FFFD}id" && h.text.contains('\u{FFFD}')),
        "{hits:?}"
    );
    let (text, _) = engine(&conn)
        .await
        .complete("Hello there", greedy.to_dict())
        .await
        .expect("still answers");
    assert_eq!(text, normal);
    daemon.signal(Signal::SIGKILL);
    daemon.wait_exit(Duration::from_secs(10));
    drop(daemon);
    let _daemon = Daemon::start(&bus, &setup, "").await;
    let conn = bus.connect().await;
    let k = knowledge(&conn).await;
    let (hits, _) = k
        .search("refund", search_in(None, 20))
        .await
        .expect("Search after restart");
    check(&hits);
}
