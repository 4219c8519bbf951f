//! `[knowledge]` through the real loader: defaults, every key checked by name, check-config's
//! output reading back the same.

use super::*;
use crate::config::{Config, ConfigError};

fn load(text: &str) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("moed.toml");
    std::fs::write(&path, text).expect("write");
    Config::load_with_env(Some(&path), Some(Default::default()))
}

fn key_of(text: &str) -> String {
    match load(text) {
        Err(ConfigError::Invalid { key, .. } | ConfigError::InvalidAt { key, .. }) => key,
        other => panic!("expected an invalid key, got {other:?}"),
    }
}

const PG: &str = r#"
[knowledge.sources.company]
kind = "postgres"
credentials = "company"
template = "SELECT id, name AS source, body AS text, 1.0 AS score FROM t WHERE body @@ websearch_to_tsquery($1) LIMIT $2"
timeout_ms = 500
max_rows = 20
max_bytes = "64KiB"
"#;

#[test]
fn default_is_one_embedded_store() {
    let c = load("").expect("defaults");
    let s = &c.knowledge.sources[DEFAULT_EMBEDDED_LABEL];
    assert!(matches!(
        s.spec,
        SourceSpec::Embedded {
            chunk_words: 200,
            chunk_overlap: 40
        }
    ));
    assert_eq!(
        c.knowledge.secrets_file,
        PathBuf::from(DEFAULT_SECRETS_FILE)
    );
}

#[test]
fn sources_are_checked_key_by_key() {
    let c = load(PG).expect("valid");
    let s = &c.knowledge.sources["company"];
    assert_eq!(s.limits.timeout_ms, Some(500));
    assert_eq!(s.limits.max_bytes, 64 << 10);
    assert_eq!(
        c.knowledge.sources.len(),
        1,
        "an explicit table replaces the default"
    );
    let again = load(&c.to_toml()).expect("check-config output loads");
    assert_eq!(again.knowledge, c.knowledge);
    assert!(c.to_toml().contains("credentials = \"company\""));

    let cases = [
            (PG.replace("kind = \"postgres\"", "kind = \"oracle\""), "knowledge.sources.company.kind"),
            (PG.replace("credentials = \"company\"\n", ""), "knowledge.sources.company.credentials"),
            (PG.replace("LIMIT $2", "LIMIT 5"), "knowledge.sources.company.template"),
            (PG.replace("LIMIT $2", "LIMIT $2 OFFSET $3"), "knowledge.sources.company.template"),
            (PG.replace("timeout_ms = 500", "timeout_ms = 0"), "knowledge.sources.company.timeout_ms"),
            (PG.replace("max_rows = 20", "max_rows = 5000"), "knowledge.sources.company.max_rows"),
            (PG.replace("\"64KiB\"", "\"lots\""), "knowledge.sources.company.max_bytes"),
            (PG.replace("max_rows = 20", "path = \"/x.db\""), "knowledge.sources.company.path"),
            (PG.replace("company]", "Company]"), "knowledge.sources.Company"),
            (
                "[knowledge.sources.docs]\nkind = \"embedded\"\ntimeout_ms = 5\n".into(),
                "knowledge.sources.docs.timeout_ms",
            ),
            (
                "[knowledge.sources.docs]\nkind = \"embedded\"\nchunk_words = 100\nchunk_overlap = 100\n".into(),
                "knowledge.sources.docs.chunk_overlap",
            ),
            (
                "[knowledge.sources.wiki]\nkind = \"sqlite\"\npath = \"wiki.db\"\ntemplate = \"SELECT $1, $2\"\n".into(),
                "knowledge.sources.wiki.path",
            ),
            ("[knowledge]\nsecrets_file = \"secrets.toml\"\n".into(), "knowledge.secrets_file"),
        ];
    for (text, key) in cases {
        assert_eq!(key_of(&text), key, "{text}");
    }
    let e = load("[knowledge.sources.x]\nkind = \"embedded\"\ncolour = 1\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("colour"), "{e}");
}

#[test]
fn templates_that_write_are_refused_for_postgres_and_sqlite() {
    const SQLITE: &str = "[knowledge.sources.wiki]\nkind = \"sqlite\"\npath = \"/srv/wiki.db\"\n";
    let writes = [
        "WITH gone AS (DELETE FROM t RETURNING id) SELECT id, id AS source, id AS text, 1 AS score FROM gone LIMIT $2 -- $1",
        "INSERT INTO log VALUES ($1, $2)",
        "SELECT id, source, text, 1 AS score FROM t WHERE x = $1 LIMIT $2; DROP TABLE t",
        "/* SELECT */ UPDATE t SET text = $1 WHERE id = $2",
        "SELECT id, source, text, 1 AS score INTO copy FROM t WHERE x = $1 LIMIT $2",
    ];
    for sql in writes {
        let quoted = toml::Value::String(sql.to_string()).to_string();
        let pg = PG.replace(
            &PG.lines()
                .find(|l| l.starts_with("template"))
                .map(str::to_string)
                .unwrap_or_default(),
            &format!("template = {quoted}"),
        );
        let e = load(&pg).expect_err(sql).to_string();
        assert!(
            e.contains("knowledge.sources.company.template") && e.contains("read"),
            "{sql}: {e}"
        );
        let lite = format!("{SQLITE}template = {quoted}\n");
        assert_eq!(key_of(&lite), "knowledge.sources.wiki.template", "{sql}");
    }
}

#[test]
fn timeout_ms_must_fit_in_the_retrieval_plugins_time_limit() {
    let max = crate::knowledge::max_timeout_ms();
    assert!(max > 0 && max < 2000, "{max}");
    let c = load(&PG.replace("timeout_ms = 500\n", "")).expect("default");
    assert_eq!(c.knowledge.sources["company"].limits.timeout_ms, Some(max));
    let fits = load(&PG.replace("timeout_ms = 500", &format!("timeout_ms = {max}")));
    assert!(fits.is_ok(), "{fits:?}");
    let e = load(&PG.replace("timeout_ms = 500", &format!("timeout_ms = {}", max + 1)))
        .expect_err("too long")
        .to_string();
    assert!(
        e.contains("knowledge.sources.company.timeout_ms") && e.contains("time limit"),
        "{e}"
    );
}
