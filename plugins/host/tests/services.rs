//! What plugins reach through the host: the key-value store (quota, persistence in sled, refused
//! without a grant), data sources by label (retrieval over the embedded store; a label not granted
//! is denied), and the compiled-component cache.

mod util;

use std::sync::Arc;

use moed_plugins::kv::SledKv;
use moed_plugins::{FilterPlugin, Grant, HostOptions, PluginHost, RetrievalPlugin, Services};
use util::*;

fn kv_report(host: &PluginHost, prompt: &str) -> String {
    let plugin = host.load(&spec("hostile-kv-hog")).expect("load kv-hog");
    let f = FilterPlugin::new(&plugin).expect("filter");
    f.check_input(prompt, &[])
        .expect("ok")
        .redacted
        .expect("report")
}

#[test]
fn kv_store_keeps_state_within_its_quota_and_persists_in_sled() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let db = sled::open(dir.path()).expect("sled");
        let services = Services {
            kv: Some(Arc::new(SledKv::new(db.clone()))),
            ..services()
        };
        let host = PluginHost::new(test_options(), services).expect("host");
        assert_eq!(kv_report(&host, "hello"), "count=1");
        assert_eq!(kv_report(&host, "hello"), "count=2");
        // 4096 bytes of quota: "count" takes 6, each blob 1029; three fit, the fourth is refused.
        assert_eq!(
            kv_report(&host, "fill"),
            "count=3 stored=3 then KvError::QuotaExceeded(4096) keys=3"
        );
        db.flush().expect("flush");
    }
    // sled's flusher thread keeps the file lock for a moment after the last handle drops.
    let db = (0..100)
        .find_map(|_| {
            sled::open(dir.path())
                .map_err(|_| std::thread::sleep(std::time::Duration::from_millis(50)))
                .ok()
        })
        .expect("sled reopen");
    let services = Services {
        kv: Some(Arc::new(SledKv::new(db))),
        ..services()
    };
    let host = PluginHost::new(test_options(), services).expect("host");
    assert_eq!(kv_report(&host, "again"), "count=4");
}

#[test]
fn kv_needs_a_grant_and_a_store() {
    let host = host();
    let mut s = spec("hostile-kv-hog");
    s.grant = Grant::default();
    let e = host.load(&s).expect_err("refused").to_string();
    assert!(
        e.contains("moed:plugin/kv@0.1.0") && e.contains("kv_quota"),
        "{e}"
    );
    let bare = PluginHost::new(test_options(), Services::default()).expect("host");
    let e = bare
        .load(&spec("hostile-kv-hog"))
        .expect_err("refused")
        .to_string();
    assert!(e.contains("no store configured"), "{e}");
}

#[test]
fn retrieval_searches_granted_sources_only() {
    let host = host();
    let plugin = host.load(&spec("retrieval-embedded")).expect("load");
    let r = RetrievalPlugin::new(&plugin).expect("retrieval");
    let got = r.retrieve("How many vacation days do I get?", 3, &[]);
    assert_eq!(got.failure, None);
    assert_eq!(got.documents[0].id, "vac-1");
    assert_eq!(got.documents[0].source, "handbook/vacation.md");
    assert!(got.documents.iter().all(|d| d.score > 0.0));

    // A request naming a label the plugin was not granted: denied, and the answer goes on
    // without documents (fail open) with an alert.
    let params = vec![("retrieval.source".to_owned(), "\"payroll\"".to_owned())];
    let got = r.retrieve("salaries", 3, &params);
    assert!(got.documents.is_empty());
    let alert = got
        .alerts
        .iter()
        .find(|a| a.code == "retrieval.failed")
        .expect("alert");
    assert!(
        alert.message.contains("access denied") && alert.message.contains("'payroll'"),
        "{}",
        alert.message
    );

    // Without any source granted, the plugin is refused at load.
    let mut s = spec("retrieval-embedded");
    s.grant.sources.clear();
    let e = host.load(&s).expect_err("refused").to_string();
    assert!(e.contains("moed:plugin/sources@0.1.0"), "{e}");
}

#[test]
fn compiled_components_are_cached() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = HostOptions {
        cache_dir: Some(dir.path().to_owned()),
        ..HostOptions::default()
    };
    let first = PluginHost::new(options.clone(), services()).expect("host");
    let p = first.load(&spec("topk")).expect("load");
    assert!(!p.status().compiled_from_cache);
    let files: Vec<_> = std::fs::read_dir(dir.path()).expect("dir").collect();
    assert_eq!(files.len(), 1);
    let second = PluginHost::new(options, services()).expect("host");
    let p = second.load(&spec("topk")).expect("load");
    assert!(p.status().compiled_from_cache);
    // A damaged cache file is recompiled, not trusted.
    let path = files[0].as_ref().expect("entry").path();
    std::fs::write(&path, b"not a compiled component").expect("damage");
    let third = PluginHost::new(
        HostOptions {
            cache_dir: Some(dir.path().to_owned()),
            ..HostOptions::default()
        },
        services(),
    )
    .expect("host");
    let p = third.load(&spec("topk")).expect("load");
    assert!(!p.status().compiled_from_cache);
}
