//! `moectl knowledge` against a real `moed serve`: a directory added recursively (three formats,
//! hidden and foreign files left out), searched, listed, re-added unchanged, removed; errors
//! with their exit statuses; an unprivileged user refused `add` but allowed `search`.

mod util;

use std::path::Path;

use util::*;

fn write(path: &Path, text: &str) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("mkdir");
        set_mode(dir, 0o755);
    }
    std::fs::write(path, text).expect("write");
}

#[test]
fn knowledge_add_a_directory_then_search_list_and_remove() {
    let bus = TestBus::start();
    let _daemon = Daemon::start(&bus, "");
    let ctl = || Ctl::new(&bus);
    let docs = tempfile::tempdir().expect("tempdir");
    set_mode(docs.path(), 0o755);
    let root = docs.path();
    write(
        &root.join("handbook.md"),
        "# Handbook\n\nEvery employee has 25 vacation days per calendar year.",
    );
    write(
        &root.join("policies/returns.html"),
        "<html><body><h1>Returns</h1><p>Unused items can be returned within 60 days for a \
         full refund.</p></body></html>",
    );
    write(
        &root.join("policies/it/passwords.txt"),
        "Passwords are reset at the IT portal.",
    );
    write(
        &root.join(".drafts/secret.md"),
        "vacation plans nobody should see",
    );
    write(&root.join("logo.png"), "not text");

    let added = ctl()
        .args(["--json", "knowledge", "add"])
        .args([root])
        .run()
        .ok()
        .json();
    assert_eq!(added["documents"], 3, "{added}");
    assert_eq!(added["added"], 3, "{added}");
    assert_eq!(added["source"], "documents");
    assert_eq!(added["failed"].as_array().map(Vec::len), Some(0));
    // The file of another type is left out by name, not silently; hidden ones are not listed.
    assert_eq!(added["skipped_count"], 1, "{added}");
    let skipped = added["skipped"][0].as_str().unwrap_or_default();
    assert!(skipped.ends_with("/logo.png"), "{added}");
    let again = ctl().args(["knowledge", "add"]).args([root]).run().ok();
    assert!(
        again
            .stdout
            .contains("3 documents into 'documents': 0 added, 0 replaced, 3 unchanged"),
        "{again:?}"
    );
    assert!(
        again
            .stderr
            .contains("skipped: 1 file(s) of other types left out")
            && again.stderr.contains("logo.png")
            && !again.stderr.contains("secret.md"),
        "{again:?}"
    );

    let found = ctl()
        .args([
            "--json",
            "knowledge",
            "search",
            "how many vacation days",
            "--limit",
            "2",
        ])
        .run()
        .ok()
        .json();
    let first = &found["hits"][0];
    assert_eq!(first["label"], "documents", "{found}");
    assert_eq!(
        first["source"],
        root.join("handbook.md")
            .canonicalize()
            .expect("path")
            .display()
            .to_string()
    );
    assert!(
        first["text"]
            .as_str()
            .unwrap_or("")
            .contains("25 vacation days")
    );
    assert!(
        found["hits"].as_array().is_some_and(|h| h
            .iter()
            .all(|h| !h["text"].as_str().unwrap_or("").contains("nobody should"))),
        "hidden files are not added: {found}"
    );
    let text = ctl()
        .args(["knowledge", "search", "refund", "--source", "documents"])
        .run()
        .ok()
        .stdout;
    assert!(
        text.contains("returns.html") && text.contains("full refund"),
        "{text}"
    );

    let sources = ctl()
        .args(["--json", "knowledge", "sources"])
        .run()
        .ok()
        .json();
    assert_eq!(sources[0]["label"], "documents", "{sources}");
    assert_eq!(sources[0]["kind"], "embedded");
    assert_eq!(sources[0]["documents"], 3);
    let table = ctl().args(["knowledge", "sources"]).run().ok().stdout;
    assert!(
        table.contains("documents") && table.contains("3 documents"),
        "{table}"
    );
    let listed = ctl()
        .args(["--json", "knowledge", "list"])
        .run()
        .ok()
        .json();
    assert_eq!(listed.as_array().map(Vec::len), Some(3), "{listed}");

    ctl()
        .args(["knowledge", "remove"])
        .args([root.join("policies/it/passwords.txt")])
        .run()
        .ok();
    let listed = ctl()
        .args(["--json", "knowledge", "list"])
        .run()
        .ok()
        .json();
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "{listed}");
    ctl()
        .args(["knowledge", "remove", "/not/stored.md"])
        .run()
        .fails_with(5, "not in the store");

    // Errors: a file of another type, a directory without documents, a missing path, an
    // unknown source.
    ctl()
        .args(["knowledge", "add"])
        .args([root.join("logo.png")])
        .run()
        .fails_with(5, "unsupported type");
    let empty = tempfile::tempdir().expect("tempdir");
    ctl()
        .args(["knowledge", "add"])
        .args([empty.path()])
        .run()
        .fails_with(5, "no .txt");
    ctl()
        .args(["knowledge", "add", "/no/such/dir"])
        .run()
        .fails_with(1, "/no/such/dir");
    ctl()
        .args(["knowledge", "search", "x", "--source", "nope"])
        .run()
        .fails_with(5, "'nope'");

    if !is_root() {
        eprintln!("SKIPPED (the unprivileged part): setpriv needs root to become nobody");
        return;
    }
    Ctl::as_nobody(&bus, None)
        .args(["knowledge", "add"])
        .args([root.join("handbook.md")])
        .run()
        .fails_with(4, "org.moed.manage-knowledge");
    let found = Ctl::as_nobody(&bus, None)
        .args(["--json", "knowledge", "search", "vacation"])
        .run()
        .ok()
        .json();
    assert!(
        !found["hits"].as_array().map(Vec::is_empty).unwrap_or(true),
        "{found}"
    );
}
