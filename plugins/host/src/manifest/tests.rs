//! Unit tests of the manifest parser and the configuration check.

use super::*;

const TEXT: &str = r#"
    [plugin]
    name = "pii-redact"
    version = "0.1.0"
    kind = "filter"
    [capabilities]
    alerts = true
    [config.email]
    type = "bool"
    default = true
    [config.window]
    type = "integer"
    default = 64
    min = 8
    max = 4096
"#;

#[test]
fn config_is_checked_and_defaults_filled() {
    let m = Manifest::parse(TEXT).expect("manifest");
    assert_eq!(m.kind, Kind::Filter);
    let mut given = Map::new();
    given.insert("window".into(), Value::from(128));
    let cfg = m.resolve_config(&given).expect("config");
    assert_eq!(cfg["email"], Value::Bool(true));
    assert_eq!(cfg["window"], Value::from(128));

    given.insert("windw".into(), Value::from(1));
    let e = m.resolve_config(&given).unwrap_err().to_string();
    assert!(e.contains("'windw'") && e.contains("email, window"), "{e}");

    let mut bad = Map::new();
    bad.insert("email".into(), Value::from("yes"));
    let e = m.resolve_config(&bad).unwrap_err().to_string();
    assert!(e.contains("'email'") && e.contains("true or false"), "{e}");

    let mut small = Map::new();
    small.insert("window".into(), Value::from(2));
    let e = m.resolve_config(&small).unwrap_err().to_string();
    assert!(e.contains("below the minimum"), "{e}");
}

#[test]
fn bad_manifests_are_refused() {
    let e = Manifest::parse(&TEXT.replace("pii-redact", "PII"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("name"), "{e}");
    let e = Manifest::parse(&TEXT.replace("\"0.1.0\"", "\"1\""))
        .unwrap_err()
        .to_string();
    assert!(e.contains("MAJOR.MINOR.PATCH"), "{e}");
    let e = Manifest::parse(&TEXT.replace("default = true", "default = 3"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("config.email.default"), "{e}");
    let e = Manifest::parse(&TEXT.replace("alerts = true", "alerts = true\nnetwork = true"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("network"), "{e}");
}

#[test]
fn errors_quote_no_more_than_a_short_part_of_the_file() {
    // A file the caller could not read must not come back in the error.
    let secret = "root:$6$secretsecret:19000:0:99999:7:::";
    let e = Manifest::parse(&format!("{secret}\n"))
        .unwrap_err()
        .to_string();
    assert!(
        !e.contains("secretsecret") && e.contains("line 1, column"),
        "{e}"
    );
    let long = "N".repeat(1 << 20);
    for text in [
        TEXT.replace("pii-redact", &long),
        TEXT.replace("0.1.0", &long),
        format!(
            "[plugin]\nname = \"x\"\nversion = \"0.1.0\"\nkind = \"filter\"\n[config.{long}]\ntype = \"bool\"\ndefault = 3\n"
        ),
    ] {
        let e = Manifest::parse(&text).unwrap_err().to_string();
        assert!(
            e.len() < 1024 && e.contains("bytes"),
            "{} bytes: {e:.200}",
            e.len()
        );
    }
}
