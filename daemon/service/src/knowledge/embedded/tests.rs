//! The embedded store against a real sled state: ingestion of the three formats, ranking,
//! replacement of a changed document, removal, and persistence across reopening.

use super::*;

fn limits() -> Limits {
    Limits {
        timeout: None,
        max_rows: 10,
        max_bytes: 1 << 20,
    }
}

const HANDBOOK: &str = "# Handbook\n\nEvery employee has 25 vacation days per calendar year. \
    Unused vacation days expire on March 31 of the following year.";
const IT: &str =
    "Passwords are reset at the IT portal; the help desk never asks for your password.";
const OFFICE: &str = "<html><body><h1>Office</h1><p>The Berlin office opens at 8:00 and closes \
    at 18:00 on weekdays.</p><script>vacation()</script></body></html>";

#[test]
fn documents_are_chunked_ranked_replaced_and_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let state = StateStore::open(dir.path()).expect("state");
        let store = EmbeddedStore::open(&state, "documents", 16, 4, limits()).expect("open");
        let long: String = (0..100).map(|i| format!("filler{i} ")).collect();
        assert_eq!(
            store
                .add("/docs/handbook.md", HANDBOOK.as_bytes(), 1)
                .expect("add"),
            Added::New { chunks: 2 }
        );
        store.add("/docs/it.txt", IT.as_bytes(), 1).expect("add");
        store
            .add("/docs/office.html", OFFICE.as_bytes(), 1)
            .expect("add");
        // 100 words in windows of 16 stepping by 12: 8 chunks.
        assert_eq!(
            store
                .add("/docs/long.txt", long.as_bytes(), 1)
                .expect("add"),
            Added::New { chunks: 8 }
        );
        assert_eq!(
            store.add("/docs/it.txt", IT.as_bytes(), 2).expect("again"),
            Added::Unchanged
        );

        let hits = store.search("How many vacation days?", 3).expect("search");
        assert_eq!(hits[0].source, "/docs/handbook.md");
        assert!(hits[0].id.starts_with("/docs/handbook.md#"));
        assert!(
            hits.iter().all(|h| h.source != "/docs/office.html"),
            "script text is not indexed"
        );
        let hits = store
            .search("when does the Berlin office open", 1)
            .expect("search");
        assert_eq!(hits[0].source, "/docs/office.html");
        assert!(hits[0].text.contains("opens at 8:00") && !hits[0].text.contains('<'));
        // The overlap: the word at a chunk boundary is found in both chunks.
        let f = store.search("filler12", 10).expect("search");
        assert_eq!(f.len(), 2, "{f:?}");

        // A changed file replaces its chunks: old words are gone, new ones found.
        assert_eq!(
            store
                .add("/docs/handbook.md", b"Employees have 30 holiday days.", 3)
                .expect("replace"),
            Added::Replaced { chunks: 1 }
        );
        assert!(store.search("March", 5).expect("search").is_empty());
        assert_eq!(
            store.search("holiday", 5).expect("search")[0].source,
            "/docs/handbook.md"
        );
        assert!(store.remove("/docs/it.txt").expect("remove"));
        assert!(!store.remove("/docs/it.txt").expect("remove again"));
        store.flush().expect("flush");
        assert_eq!(store.counts().expect("counts"), (3, 1 + 1 + 8));
    }
    let state = StateStore::reopen(dir.path());
    let store = EmbeddedStore::open(&state, "documents", 16, 4, limits()).expect("reopen");
    assert_eq!(store.counts().expect("counts"), (3, 10));
    let hit = &store.search("holiday", 1).expect("search")[0];
    assert_eq!(hit.source, "/docs/handbook.md");
    assert!(store.search("password", 5).expect("search").is_empty());
    let docs = store.documents().expect("list");
    let handbook = docs
        .iter()
        .find(|d| d.name == "/docs/handbook.md")
        .expect("listed");
    assert_eq!(
        (handbook.format, handbook.chunks, handbook.added),
        (Format::Markdown, 1, 3)
    );
    // Another label is another store in the same state.
    let other = EmbeddedStore::open(&state, "wiki", 16, 4, limits()).expect("other");
    assert_eq!(other.counts().expect("counts"), (0, 0));
}

#[test]
fn bad_documents_are_refused_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = StateStore::open(dir.path()).expect("state");
    let store = EmbeddedStore::open(&state, "documents", 16, 4, limits()).expect("open");
    let e = store
        .add("/x/picture.png", b"abc", 1)
        .unwrap_err()
        .to_string();
    assert!(e.contains("picture.png") && e.contains(".txt"), "{e}");
    let e = store
        .add("/x/empty.txt", b"  \n", 1)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no text"), "{e}");
    let e = store
        .add("/x/bin.txt", &[0xff, 0x00], 1)
        .unwrap_err()
        .to_string();
    assert!(e.contains("UTF-8"), "{e}");
    assert!(store.search("?!", 3).is_err());
}

/// A store written before this version's index (records and chunks in sled only) is indexed at
/// open from what is stored.
#[test]
fn a_store_found_in_the_state_is_indexed_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = StateStore::open(dir.path()).expect("state");
    let chunks = [
        "Every employee has 25 vacation days.".to_string(),
        "Unused days expire in March.".to_string(),
    ];
    let record = DocRecord {
        name: "/docs/handbook.md".into(),
        format: Format::Markdown,
        sha256: "0".repeat(64),
        bytes: 64,
        chunks: 2,
        added: 1,
    };
    DocStore::open(&state, "documents")
        .expect("trees")
        .put(&record, &chunks, None)
        .expect("put");
    let store = EmbeddedStore::open(&state, "documents", 16, 4, limits()).expect("open");
    assert_eq!(store.counts().expect("counts"), (1, 2));
    let hits = store.search("when do days expire", 2).expect("search");
    assert_eq!(hits[0].id, "/docs/handbook.md#1");
    assert_eq!(hits[0].text, chunks[1]);
    assert!(store.remove("/docs/handbook.md").expect("remove"));
    assert!(store.search("vacation", 2).expect("search").is_empty());
}
