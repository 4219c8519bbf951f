//! Property tests of the `plugin.toml` parser and the configuration check: garbage text and
//! arbitrary field values never panic, and either parse into a manifest that satisfies the rules
//! or give a named error that is short, NUL-free and one line (no value is echoed whole).

use moed_plugins::{Manifest, ManifestError};
use proptest::prelude::*;
use serde_json::{Map, Value};

/// Errors quote at most a short part of any value they are about.
const MAX_ERROR: usize = 1024;

fn check_error(e: &ManifestError) {
    assert!(
        matches!(
            e,
            ManifestError::Parse { .. }
                | ManifestError::Invalid { .. }
                | ManifestError::Config { .. }
        ),
        "{e:?}"
    );
    let s = e.to_string();
    assert!(s.len() <= MAX_ERROR, "{} bytes: {s}", s.len());
    assert!(!s.contains('\0'), "{s}");
    assert!(!s.contains('\n'), "{s}");
}

/// Short strings of any characters, or long ones (a repeated piece) up to ~100 KiB.
fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => any::<String>(),
        1 => (any::<String>(), 1usize..20_000).prop_map(|(s, n)| format!("{s}x").repeat(n.min(100_000 / (s.len() + 1)))),
        1 => Just("\0\n\x1b[2J".to_owned()),
    ]
}

/// A TOML value of any type (what a manifest field might hold).
fn any_toml() -> impl Strategy<Value = toml::Value> {
    let leaf = prop_oneof![
        any_text().prop_map(toml::Value::String),
        any::<i64>().prop_map(toml::Value::Integer),
        any::<f64>().prop_map(toml::Value::Float),
        any::<bool>().prop_map(toml::Value::Boolean),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(toml::Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| toml::Value::Table(m.into_iter().collect())),
        ]
    })
}

fn kind() -> impl Strategy<Value = toml::Value> {
    prop_oneof![
        Just(toml::Value::String("gate".into())),
        Just(toml::Value::String("filter".into())),
        Just(toml::Value::String("retrieval".into())),
        any_toml(),
    ]
}

fn value_type() -> impl Strategy<Value = toml::Value> {
    prop_oneof![
        prop::sample::select(vec![
            "bool",
            "integer",
            "number",
            "string",
            "string-list",
            "integer-list",
            "table",
        ])
        .prop_map(|s| toml::Value::String(s.into())),
        any_toml(),
    ]
}

/// A manifest with the right shape and arbitrary values in every field.
fn manifest_text() -> impl Strategy<Value = String> {
    (
        prop_oneof![Just("topk".to_owned()), any_text()],
        prop_oneof![Just("0.1.0".to_owned()), any_text()],
        kind(),
        any_text(),
        prop::collection::btree_map("[a-z_]{1,6}", any_toml(), 0..4),
        prop::collection::btree_map(
            prop_oneof!["[a-z_]{1,8}", any_text()],
            (
                value_type(),
                prop::option::of(any_toml()),
                prop::option::of(any_toml()),
            ),
            0..4,
        ),
    )
        .prop_map(|(name, version, kind, description, caps, config)| {
            let mut plugin = toml::Table::new();
            plugin.insert("name".into(), toml::Value::String(name));
            plugin.insert("version".into(), toml::Value::String(version));
            plugin.insert("kind".into(), kind);
            plugin.insert("description".into(), toml::Value::String(description));
            let mut root = toml::Table::new();
            root.insert("plugin".into(), toml::Value::Table(plugin));
            root.insert(
                "capabilities".into(),
                toml::Value::Table(caps.into_iter().collect()),
            );
            let mut cfg = toml::Table::new();
            for (key, (ty, default, max)) in config {
                let mut k = toml::Table::new();
                k.insert("type".into(), ty);
                if let Some(d) = default {
                    k.insert("default".into(), d);
                }
                if let Some(m) = max {
                    k.insert("max".into(), m);
                }
                cfg.insert(key, toml::Value::Table(k));
            }
            root.insert("config".into(), toml::Value::Table(cfg));
            toml::to_string(&root).unwrap_or_default()
        })
}

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        any_text().prop_map(Value::String),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any::<bool>().prop_map(Value::Bool),
        Just(Value::Null),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,4}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const PII: &str = r#"
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
[config.names]
type = "string-list"
default = []
"#;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn garbage_text_parses_or_gives_a_named_short_error(text in any_text()) {
        if let Err(e) = Manifest::parse(&text) {
            check_error(&e);
        }
    }

    #[test]
    fn arbitrary_field_values_parse_to_a_valid_manifest_or_a_named_error(text in manifest_text()) {
        match Manifest::parse(&text) {
            Ok(m) => {
                prop_assert!(moed_plugins::manifest::check_name(&m.name).is_ok());
                prop_assert_eq!(m.version.split('.').count(), 3);
                // Its own defaults pass its own schema.
                prop_assert!(m.resolve_config(&Map::new()).is_ok());
            }
            Err(e) => check_error(&e),
        }
    }

    #[test]
    fn arbitrary_configuration_is_accepted_or_refused_by_key(
        given in prop::collection::btree_map(
            prop_oneof![Just("email".to_owned()), Just("window".to_owned()), Just("names".to_owned()), any_text()],
            any_json(),
            0..5,
        )
    ) {
        let m = Manifest::parse(PII).expect("the fixed manifest");
        let given: Map<String, Value> = given.into_iter().collect();
        match m.resolve_config(&given) {
            Ok(cfg) => {
                for key in ["email", "window", "names"] {
                    prop_assert!(cfg.contains_key(key));
                }
                prop_assert!(cfg.keys().all(|k| m.config.contains_key(k)));
            }
            Err(e) => check_error(&e),
        }
    }
}
