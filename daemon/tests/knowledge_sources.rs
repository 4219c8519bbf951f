//! The database knowledge sources against real databases: a throwaway PostgreSQL cluster
//! (tests/harness/src/postgres.rs) and SQLite files, both loaded with the sample company in
//! tests/fixtures/company. Ranked results, SQL injection through the query text, writes through a
//! malicious template, a slow query against the statement timeout, a source that is down, the
//! row and byte limits, and the `sql-retrieval` plugin in the real plugin host asking for a label
//! it was not granted; a stopped (SIGSTOP) PostgreSQL costing a retrieval call only its own rows.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use moed::config::{KnowledgeConfig, QueryTransform, SourceConfig, SourceLimits, SourceSpec};
use moed::knowledge::{Knowledge, Limits, PostgresSource, SqliteSource, start_ahead};
use moed::state::StateStore;
use moed_plugins::{
    DataSource, Document, Grant, HostOptions, Manifest, PluginHost, PluginSpec, RetrievalPlugin,
    Services, SourceError, Sources,
};
use moed_test_harness::postgres::{PgCluster, SUPERUSER, SUPERUSER_PASSWORD};
use moed_test_harness::repo_root;

/// The template the documentation recommends: full-text search over the `knowledge` view.
const PG_TEMPLATE: &str = "SELECT id, source, text, ts_rank(tsv, q)::float8 AS score \
    FROM knowledge, websearch_to_tsquery('english', $1) AS q \
    WHERE tsv @@ q ORDER BY score DESC, id LIMIT $2";

const SQLITE_TEMPLATE: &str = "SELECT id, source, text, -bm25(knowledge) AS score \
    FROM knowledge WHERE knowledge MATCH $1 ORDER BY score DESC, id LIMIT $2";

const QUESTION: &str = "How do I return a jacket for a refund?";

/// Query texts that would change the SQL if they were spliced into it.
const INJECTIONS: &[&str] = &[
    "'; DROP TABLE audit_log; --",
    "'; DROP TABLE products; --",
    "') OR 1=1 --",
    "x' OR '1'='1",
    "$1); DELETE FROM audit_log; --",
    "' UNION SELECT usename, passwd, '', 1.0 FROM pg_shadow --",
    "\\'; SELECT pg_sleep(9); --",
];

fn fixtures() -> PathBuf {
    repo_root().join("tests/fixtures/company")
}

fn limits(timeout_ms: u64, max_rows: usize, max_bytes: usize) -> Limits {
    Limits {
        timeout: Some(Duration::from_millis(timeout_ms)),
        max_rows,
        max_bytes,
    }
}

/// Every injection, through each source, finds only rows that its words find one by one through
/// `words` (an honest search can match nothing else), and those are not the whole table; the
/// only error allowed is a refused query (FTS5 syntax) where `may_refuse`.
fn check_injections(sources: &[(&dyn DataSource, bool)], words: &dyn DataSource) {
    for attack in INJECTIONS {
        let mut allowed = std::collections::BTreeSet::new();
        for w in attack
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
        {
            for d in words.search(w, 50).expect("one word") {
                allowed.insert(d.id);
            }
        }
        assert!(
            allowed.len() < 24,
            "{attack}: its words alone match every row"
        );
        for (source, may_refuse) in sources {
            match source.search(attack, 50) {
                Ok(docs) => {
                    for d in &docs {
                        assert!(
                            allowed.contains(&d.id),
                            "{attack}: row {} is not a match",
                            d.id
                        );
                    }
                }
                Err(SourceError::InvalidQuery(m)) if *may_refuse => {
                    assert!(m.contains("fts5"), "{attack}: {m}")
                }
                Err(e) => panic!("{attack}: {e:?}"),
            }
        }
    }
}

fn ids(docs: &[Document]) -> Vec<&str> {
    docs.iter().map(|d| d.id.as_str()).collect()
}

fn bytes(docs: &[Document]) -> usize {
    docs.iter()
        .map(|d| d.id.len() + d.source.len() + d.text.len())
        .sum()
}

/// The cluster with database `company` loaded and the role `moed_reader`.
fn company_cluster() -> Option<PgCluster> {
    let pg = PgCluster::start()?;
    pg.psql("postgres", &["-c", "CREATE DATABASE company"]);
    pg.load_dir("company", &fixtures());
    Some(pg)
}

fn reader(pg: &PgCluster) -> String {
    pg.connection("moed_reader", "reader-test-password", "company")
}

fn pg_source(conn: &str, template: &str, transform: QueryTransform, l: Limits) -> PostgresSource {
    PostgresSource::new("company", conn, template, transform, l, 2).expect("source")
}

fn unavailable(r: Result<Vec<Document>, SourceError>) -> String {
    match r {
        Err(SourceError::Unavailable(m)) => m,
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

fn invalid(r: Result<Vec<Document>, SourceError>) -> String {
    match r {
        Err(SourceError::InvalidQuery(m)) => m,
        other => panic!("expected InvalidQuery, got {other:?}"),
    }
}

#[test]
fn postgres_source_answers_ranked_read_only_and_within_its_limits() {
    let Some(mut pg) = company_cluster() else {
        return;
    };
    let roomy = limits(2000, 20, 256 << 10);
    let any_word = pg_source(&reader(&pg), PG_TEMPLATE, QueryTransform::AnyWord, roomy);
    let as_is = pg_source(&reader(&pg), PG_TEMPLATE, QueryTransform::AsIs, roomy);

    // Ranked rows: any word of a question; all words as typed (websearch_to_tsquery).
    let docs = any_word.search(QUESTION, 5).expect("search");
    assert_eq!(ids(&docs)[..2], ["policy-1", "article-7"], "{docs:#?}");
    assert_eq!(docs[0].source, "policies/1");
    assert!(
        docs[0]
            .text
            .starts_with("Returns and refunds: Unused items")
    );
    assert!(docs.windows(2).all(|w| w[0].score >= w[1].score));
    let docs = as_is.search("waterproof jacket", 10).expect("search");
    assert_eq!(ids(&docs), ["article-3", "product-5", "product-6"]);

    // SQL injection through the query text: bound as $1, it is only text to search for.
    check_injections(&[(&any_word, false), (&as_is, false)], &any_word);
    assert_eq!(
        pg.psql("company", &["-c", "SELECT count(*) FROM products"]),
        "10"
    );
    assert_eq!(
        pg.psql("company", &["-c", "SELECT count(*) FROM audit_log"]),
        "0"
    );

    // A template that writes is refused by the read-only transaction, even for a superuser.
    let superuser = pg.connection(SUPERUSER, SUPERUSER_PASSWORD, "company");
    for template in [
        "WITH w AS (INSERT INTO audit_log (note) VALUES ($1) RETURNING id) \
         SELECT id::text AS id, 'audit'::text AS source, $1::text AS text, 1.0::float8 AS score \
         FROM w LIMIT $2",
        "DELETE FROM products WHERE name <> $1 \
         RETURNING id::text AS id, sku AS source, name AS text, $2::int AS score",
    ] {
        let writer = pg_source(&superuser, template, QueryTransform::AsIs, roomy);
        let m = invalid(writer.search("pwned", 5));
        assert!(m.contains("read-only"), "{m}");
    }
    assert_eq!(
        pg.psql("company", &["-c", "SELECT count(*) FROM products"]),
        "10"
    );
    assert_eq!(
        pg.psql("company", &["-c", "SELECT count(*) FROM audit_log"]),
        "0"
    );

    // A template that is wrong says what to fix, naming the source's key.
    let m = invalid(
        pg_source(
            &reader(&pg),
            "SELECT id, source, text FROM knowledge WHERE text <> $1 LIMIT $2",
            QueryTransform::AsIs,
            roomy,
        )
        .search("x", 3),
    );
    assert!(
        m.contains("'score'") && m.contains("knowledge.sources.company"),
        "{m}"
    );

    // A slow query is cancelled by the statement timeout: Unavailable, naming the timeout.
    let slow = pg_source(
        &reader(&pg),
        "SELECT id, source, text, 1.0::float8 AS score FROM knowledge, pg_sleep(5) \
         WHERE $1 <> '' LIMIT $2",
        QueryTransform::AsIs,
        limits(300, 20, 1 << 20),
    );
    let started = Instant::now();
    let m = unavailable(slow.search("tent", 3));
    assert!(m.contains("statement timeout of 300 ms"), "{m}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );

    // Rows: at most max_rows, even from a template that ignores $2 (a portal fetches that many).
    let few = pg_source(
        &reader(&pg),
        PG_TEMPLATE,
        QueryTransform::AnyWord,
        limits(2000, 3, 1 << 20),
    );
    assert_eq!(
        few.search("tent sleeping bag jacket", 10)
            .expect("search")
            .len(),
        3
    );
    let greedy = pg_source(
        &reader(&pg),
        "SELECT id, source, text, 1.0::float8 AS score FROM knowledge WHERE $1 <> '' \
         LIMIT 100 + 0 * $2",
        QueryTransform::AsIs,
        limits(2000, 4, 1 << 20),
    );
    assert_eq!(greedy.search("anything", 50).expect("search").len(), 4);
    // Bytes: the answer is cut to max_bytes.
    let small = pg_source(
        &reader(&pg),
        PG_TEMPLATE,
        QueryTransform::AnyWord,
        limits(2000, 20, 300),
    );
    let docs = small
        .search("tent sleeping bag jacket", 10)
        .expect("search");
    assert!(
        !docs.is_empty() && bytes(&docs) <= 300,
        "{} bytes",
        bytes(&docs)
    );

    // Wrong credentials, then a source that is down: Unavailable, quickly.
    let m = unavailable(
        pg_source(
            &pg.connection("moed_reader", "wrong", "company"),
            PG_TEMPLATE,
            QueryTransform::AsIs,
            roomy,
        )
        .search("tent", 3),
    );
    assert!(m.contains("password authentication failed"), "{m}");
    assert!(any_word.check().is_ok());
    pg.stop();
    let started = Instant::now();
    let m = unavailable(any_word.search("tent", 3));
    assert!(m.contains("'company' is unavailable"), "{m}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(any_word.check().is_err());
    // The connection string (with its password) never shows in an error.
    assert!(!m.contains("reader-test-password"), "{m}");
}

/// A SQLite copy of the company: tables, rows (the PostgreSQL fixture's INSERTs), FTS5 index.
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

fn sqlite_source(
    path: &Path,
    template: &str,
    transform: QueryTransform,
    l: Limits,
) -> SqliteSource {
    SqliteSource::new("wiki", path, template, transform, l, 2)
}

fn sqlite_count(path: &Path, table: &str) -> i64 {
    rusqlite::Connection::open(path)
        .expect("open")
        .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .expect("count")
}

#[test]
fn sqlite_source_answers_ranked_read_only_and_within_its_limits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = company_sqlite(dir.path());
    let roomy = limits(2000, 20, 256 << 10);
    let any_word = sqlite_source(&db, SQLITE_TEMPLATE, QueryTransform::AnyWord, roomy);
    let as_is = sqlite_source(&db, SQLITE_TEMPLATE, QueryTransform::AsIs, roomy);

    let docs = any_word.search(QUESTION, 5).expect("search");
    assert_eq!(ids(&docs)[..2], ["article-7", "policy-1"], "{docs:#?}");
    assert_eq!(docs[1].source, "policies/1");
    assert!(docs.windows(2).all(|w| w[0].score >= w[1].score) && docs[0].score > 0.0);
    let docs = as_is.search("waterproof jacket", 10).expect("search");
    assert_eq!(ids(&docs), ["product-6", "product-5", "article-3"]);

    // Injection: only text to search for, or (as FTS5 syntax) refused; the tables survive.
    check_injections(&[(&any_word, false), (&as_is, true)], &any_word);
    assert_eq!(sqlite_count(&db, "products"), 10);
    assert_eq!(sqlite_count(&db, "audit_log"), 0);

    // Writes: a writing template is refused before it runs, as is a second statement.
    for template in [
        "INSERT INTO audit_log (note) VALUES ($1) RETURNING id, 'x' AS source, note AS text, $2 AS score",
        "SELECT id, source, text, 1.0 AS score FROM knowledge WHERE knowledge MATCH $1 LIMIT $2; \
         DROP TABLE products",
    ] {
        let m =
            invalid(sqlite_source(&db, template, QueryTransform::AsIs, roomy).search("tent", 3));
        assert!(m.contains("knowledge.sources.wiki.template"), "{m}");
    }
    assert_eq!(sqlite_count(&db, "products"), 10);
    assert_eq!(sqlite_count(&db, "audit_log"), 0);

    // A slow query is interrupted at the timeout.
    let slow = sqlite_source(
        &db,
        "SELECT id, source, text, 1.0 AS score FROM knowledge WHERE knowledge MATCH $1 AND \
         (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000000000) \
          SELECT max(x) FROM c) > 0 LIMIT $2",
        QueryTransform::AnyWord,
        limits(300, 20, 1 << 20),
    );
    let started = Instant::now();
    let m = unavailable(slow.search("tent", 3));
    assert!(m.contains("statement timeout of 300 ms"), "{m}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // Limits.
    let few = sqlite_source(
        &db,
        SQLITE_TEMPLATE,
        QueryTransform::AnyWord,
        limits(2000, 3, 1 << 20),
    );
    assert_eq!(
        few.search("tent sleeping bag jacket", 10)
            .expect("search")
            .len(),
        3
    );
    let greedy = sqlite_source(
        &db,
        "SELECT id, source, text, 1.0 AS score FROM knowledge WHERE $1 <> '' LIMIT 100 + 0 * $2",
        QueryTransform::AsIs,
        limits(2000, 4, 1 << 20),
    );
    assert_eq!(greedy.search("anything", 50).expect("search").len(), 4);
    let small = sqlite_source(
        &db,
        SQLITE_TEMPLATE,
        QueryTransform::AnyWord,
        limits(2000, 20, 300),
    );
    let docs = small
        .search("tent sleeping bag jacket", 10)
        .expect("search");
    assert!(
        !docs.is_empty() && bytes(&docs) <= 300,
        "{} bytes",
        bytes(&docs)
    );

    // A database that is not there, or not a database: Unavailable.
    let missing = sqlite_source(
        &dir.path().join("gone.db"),
        SQLITE_TEMPLATE,
        QueryTransform::AsIs,
        roomy,
    );
    assert!(unavailable(missing.search("tent", 3)).contains("gone.db"));
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, vec![7u8; 4096]).expect("write");
    unavailable(
        sqlite_source(&junk, SQLITE_TEMPLATE, QueryTransform::AsIs, roomy).search("tent", 3),
    );
    assert!(
        !dir.path().join("gone.db").exists(),
        "a read-only open creates nothing"
    );
}

fn plugin_spec(name: &str, sources: &[&str]) -> PluginSpec {
    let dir = common::plugins_dir();
    let manifest = Manifest::from_file(&dir.join(format!("{name}.toml"))).expect("manifest");
    PluginSpec {
        manifest,
        wasm: dir.join(format!("{name}.wasm")),
        grant: Grant {
            alerts: true,
            sources: sources.iter().map(|s| s.to_string()).collect(),
            ..Grant::default()
        },
        config: serde_json::Map::new(),
    }
}

#[test]
fn sql_retrieval_plugin_merges_granted_sources_and_reports_a_denied_one() {
    let Some(pg) = company_cluster() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let db = company_sqlite(dir.path());
    let roomy = limits(1000, 20, 256 << 10);
    let sources = Arc::new(Sources::default());
    sources.register(
        "company",
        Arc::new(pg_source(
            &reader(&pg),
            PG_TEMPLATE,
            QueryTransform::AnyWord,
            roomy,
        )),
    );
    sources.register(
        "wiki",
        Arc::new(sqlite_source(
            &db,
            SQLITE_TEMPLATE,
            QueryTransform::AnyWord,
            roomy,
        )),
    );
    // A source the plugin is not granted: its rows must not reach the plugin.
    sources.register(
        "payroll",
        Arc::new(sqlite_source(
            &db,
            SQLITE_TEMPLATE,
            QueryTransform::AnyWord,
            roomy,
        )),
    );
    let options = HostOptions {
        cache_dir: Some(repo_root().join("target/plugin-cache-test")),
        ..HostOptions::default()
    };
    let services = Services {
        sources,
        ..Services::default()
    };
    let host = PluginHost::new(options, services).expect("host");
    let plugin = host
        .load(&plugin_spec("sql-retrieval", &["company", "wiki"]))
        .expect("load sql-retrieval");
    let r = RetrievalPlugin::new(&plugin).expect("retrieval plugin");

    // Its configuration names no sources: every granted label, merged.
    let got = r.retrieve(QUESTION, 4, &[]);
    assert_eq!(got.failure, None, "{got:?}");
    assert!(got.alerts.is_empty(), "{:?}", got.alerts);
    assert_eq!(got.documents.len(), 4);
    let first_two: Vec<&str> = got.documents[..2].iter().map(|d| d.id.as_str()).collect();
    assert_eq!(
        first_two,
        ["company:policy-1", "wiki:article-7"],
        "{:#?}",
        got.documents
    );

    // The request names a label not granted: the host says access-denied, the plugin alerts
    // and answers from the rest.
    let params = vec![(
        "retrieval.sources".to_string(),
        "[\"payroll\", \"company\"]".to_string(),
    )];
    let got = r.retrieve(QUESTION, 4, &params);
    assert_eq!(got.failure, None, "{got:?}");
    assert!(
        got.documents.iter().all(|d| d.id.starts_with("company:")),
        "{:#?}",
        got.documents
    );
    assert_eq!(got.documents[0].id, "company:policy-1");
    let alert = got
        .alerts
        .iter()
        .find(|a| a.code == "retrieval.access_denied")
        .expect("an access-denied alert");
    assert!(
        alert.message.contains("'payroll'") && alert.message.contains("not granted"),
        "{}",
        alert.message
    );
}

#[test]
fn bench_knowledge_measures_every_configured_source() {
    let pg = company_cluster();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = company_sqlite(dir.path());
    let docs = dir.path().join("docs");
    std::fs::create_dir(&docs).expect("mkdir");
    std::fs::write(
        docs.join("handbook.md"),
        "Every employee has 25 vacation days.",
    )
    .expect("write");
    let secrets = dir.path().join("secrets.toml");
    let mut config = format!(
        "[knowledge]\nsecrets_file = \"{}\"\n\n[knowledge.sources.documents]\nkind = \"embedded\"\n\n\
         [knowledge.sources.wiki]\nkind = \"sqlite\"\npath = \"{}\"\nquery = \"any_word\"\n\
         template = \"{SQLITE_TEMPLATE}\"\n",
        secrets.display(),
        db.display()
    );
    if let Some(pg) = &pg {
        std::fs::write(
            &secrets,
            format!("[company]\nconnection = \"{}\"\n", reader(pg)),
        )
        .expect("write secrets");
        moed_test_harness::set_mode(&secrets, 0o600);
        config.push_str(&format!(
            "\n[knowledge.sources.company]\nkind = \"postgres\"\ncredentials = \"company\"\n\
             query = \"any_word\"\ntemplate = \"{PG_TEMPLATE}\"\n"
        ));
    }
    let file = dir.path().join("moed.toml");
    std::fs::write(&file, config).expect("write config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_moed"))
        .args(["bench-knowledge", "--calls", "3", "--config"])
        .arg(&file)
        .arg("--documents")
        .arg(&docs)
        .output()
        .expect("run moed bench-knowledge");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("ingested into 'documents': 1 documents"),
        "{text}"
    );
    let mut labels = vec![("documents", "embedded"), ("wiki", "sqlite")];
    if pg.is_some() {
        labels.push(("company", "postgres"));
    }
    for (label, kind) in labels {
        let row = text
            .lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("no row for {label}: {text}"));
        assert!(
            row.contains(kind) && row.trim_end().ends_with(" 0"),
            "{row}"
        );
    }
}

/// Every process of the cluster (the postmaster and its backends) stopped with SIGSTOP, as a hung
/// server is: connections are accepted by the kernel but nothing answers. Continued on drop.
struct Stopped(Vec<i32>);

impl Stopped {
    fn cluster(pg: &PgCluster) -> Stopped {
        // Not from a backend's parent: a psql backend has exited by the time /proc is read.
        let postmaster = pg.postmaster_pid().expect("postmaster pid");
        let parent = |pid: i32| -> Option<i32> {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            status
                .lines()
                .find_map(|l| l.strip_prefix("PPid:"))?
                .trim()
                .parse()
                .ok()
        };
        let mut pids = vec![postmaster];
        for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            if parent(pid) == Some(postmaster) {
                pids.push(pid);
            }
        }
        for &pid in &pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGSTOP,
            );
        }
        Stopped(pids)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        for &pid in &self.0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGCONT,
            );
        }
    }
}

fn database(spec: SourceSpec) -> SourceConfig {
    SourceConfig {
        spec,
        limits: SourceLimits {
            // The documentation's example, which used to exceed the plugin's time limit.
            timeout_ms: Some(1000),
            max_rows: 20,
            max_bytes: 256 << 10,
        },
    }
}

#[test]
fn a_stopped_postgres_costs_a_retrieval_call_only_its_own_documents() {
    let Some(pg) = company_cluster() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let secrets = dir.path().join("secrets.toml");
    std::fs::write(
        &secrets,
        format!("[company]\nconnection = \"{}\"\n", reader(&pg)),
    )
    .expect("secrets");
    std::fs::set_permissions(
        &secrets,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod");
    let config = KnowledgeConfig {
        secrets_file: secrets,
        max_document_bytes: 1 << 20,
        sources: [
            (
                "company".to_string(),
                database(SourceSpec::Postgres {
                    credentials: "company".into(),
                    template: PG_TEMPLATE.into(),
                    query: QueryTransform::AnyWord,
                    max_connections: 2,
                }),
            ),
            (
                "wiki".to_string(),
                database(SourceSpec::Sqlite {
                    path: company_sqlite(dir.path()),
                    template: SQLITE_TEMPLATE.into(),
                    query: QueryTransform::AnyWord,
                    max_connections: 2,
                }),
            ),
        ]
        .into(),
    };
    let state = StateStore::open(&dir.path().join("state")).expect("state");
    let sources = Arc::new(Sources::default());
    let _knowledge = Knowledge::start(&config, &state, sources.clone()).expect("knowledge");
    let options = HostOptions {
        cache_dir: Some(repo_root().join("target/plugin-cache-test")),
        ..HostOptions::default()
    };
    let services = Services {
        sources,
        ..Services::default()
    };
    let host = PluginHost::new(options, services).expect("host");
    let plugin = host
        .load(&plugin_spec("sql-retrieval", &["company", "wiki"]))
        .expect("load sql-retrieval");
    let r = RetrievalPlugin::new(&plugin).expect("retrieval plugin");
    // As the daemon calls it: the granted sources started ahead, then the plugin.
    let retrieve = || {
        let _ahead = start_ahead(std::slice::from_ref(&r), QUESTION, 4, None);
        r.retrieve(QUESTION, 4, &[])
    };
    let healthy = retrieve();
    assert_eq!(healthy.failure, None, "{healthy:?}");
    let from = |docs: &[Document], label: &str| {
        docs.iter()
            .filter(|d| d.id.starts_with(&format!("{label}:")))
            .count()
    };
    assert!(from(&healthy.documents, "company") > 0, "{healthy:?}");
    let wiki_ids: Vec<String> = healthy
        .documents
        .iter()
        .filter(|d| d.id.starts_with("wiki:"))
        .map(|d| d.id.clone())
        .collect();
    assert!(!wiki_ids.is_empty(), "{healthy:?}");

    let stopped = Stopped::cluster(&pg);
    for _ in 0..2 {
        let got = retrieve();
        assert_eq!(
            got.failure, None,
            "the plugin itself must not fail: {got:?}"
        );
        assert_eq!(from(&got.documents, "company"), 0, "{got:?}");
        for id in &wiki_ids {
            assert!(
                got.documents.iter().any(|d| &d.id == id),
                "{id} missing: {got:?}"
            );
        }
        let alert = got
            .alerts
            .iter()
            .find(|a| a.code == "retrieval.source_unavailable")
            .expect("an alert for the stopped source");
        assert!(alert.message.contains("'company'"), "{}", alert.message);
    }
    drop(stopped);
    // Continued, the server answers again.
    let again = retrieve();
    assert!(from(&again.documents, "company") > 0, "{again:?}");
}
