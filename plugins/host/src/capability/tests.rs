//! The grant decides every import; versions and labels.

use super::*;

fn names(imports: &[&str], kind: Kind, grant: &Grant) -> Vec<String> {
    match check_imports(kind, imports.iter().copied(), grant) {
        Ok(()) => Vec::new(),
        Err(CapabilityError::Imports(r)) => r.into_iter().map(|r| r.import).collect(),
    }
}

#[test]
fn imports_are_decided_by_the_grant() {
    let none = Grant::default();
    let base = [
        "wasi:io/streams@0.2.6",
        "wasi:cli/stderr@0.2.6",
        "moed:plugin/log@0.1.0",
    ];
    assert!(names(&base, Kind::Gate, &none).is_empty());
    let asks = [
        "moed:plugin/kv@0.1.0",
        "moed:plugin/alerts@0.1.0",
        "wasi:clocks/wall-clock@0.2.6",
    ];
    assert_eq!(names(&asks, Kind::Filter, &none), asks);
    let all = Grant {
        alerts: true,
        kv_quota: Some(1024),
        clocks: true,
        ..Grant::default()
    };
    assert!(names(&asks, Kind::Filter, &all).is_empty());
    let never = [
        "wasi:sockets/tcp@0.2.6",
        "wasi:http/outgoing-handler@0.2.6",
        "wasi:filesystem/preopens@0.2.6",
        "acme:x/y@1.0.0",
    ];
    assert_eq!(names(&never, Kind::Gate, &all), never);
    // Sources: retrieval only, and only with a label granted.
    let src = ["moed:plugin/sources@0.1.0"];
    let with_src = Grant {
        sources: vec!["docs".into()],
        ..Grant::default()
    };
    assert!(names(&src, Kind::Retrieval, &with_src).is_empty());
    assert_eq!(names(&src, Kind::Retrieval, &none), src);
    assert_eq!(names(&src, Kind::Gate, &with_src), src);
}

#[test]
fn versions_outside_0_1_are_refused_with_a_reason() {
    let e = check_imports(Kind::Gate, ["moed:plugin/log@0.2.0"], &Grant::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("moed:plugin/log@0.2.0") && e.contains("it links 0.1"),
        "{e}"
    );
    assert!(check_imports(Kind::Gate, ["moed:plugin/log@0.1.7"], &Grant::default()).is_ok());
}

#[test]
fn labels_and_fewer_experts() {
    let g = Grant {
        sources: vec!["docs".into()],
        ..Grant::default()
    };
    assert!(source_access(&g, "docs").is_ok());
    assert!(source_access(&g, "hr").unwrap_err().contains("'hr'"));
    assert!(gate_k_allowed(&g, 8, 8).is_ok());
    assert!(
        gate_k_allowed(&g, 4, 8)
            .unwrap_err()
            .contains("fewer_experts")
    );
    let f = Grant {
        fewer_experts: true,
        ..Grant::default()
    };
    assert!(gate_k_allowed(&f, 4, 8).is_ok());
    assert!(gate_k_allowed(&f, 0, 8).is_err());
    assert!(gate_k_allowed(&f, 9, 8).is_err());
}
