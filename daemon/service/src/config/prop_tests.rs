//! Property tests of configuration loading: any mix of known and unknown keys with hostile values
//! loads or gives an error, never a panic; what loads renders (`check-config`) to TOML that loads.

use proptest::prelude::*;

use super::*;

const KEYS: &[(&str, &str)] = &[
    ("models", "dirs"),
    ("models", "default"),
    ("engine", "providers"),
    ("engine", "expert_memory_budget"),
    ("engine", "ort_library"),
    ("engine", "preload_experts"),
    ("engine", "quantized_matmul"),
    ("engine", "gpu_memory_budget"),
    ("engine", "tensorrt_cache_dir"),
    ("engine", "experts_side_by_side"),
    ("engine", "held_experts_percent"),
    ("engine", "prefetch_next_layer"),
    ("engine", "threads"),
    ("service", "max_concurrent"),
    ("service", "queue_depth"),
    ("service", "max_batch"),
    ("service", "max_batch_tokens"),
    ("service", "drain_timeout_secs"),
    ("service", "state_directory"),
    ("access", "authorizer"),
    ("access", "allowed_group"),
    ("access", "admin_group"),
    ("access", "bridge_group"),
    ("log", "level"),
    ("plugins", "filters"),
    ("plugins", "gate"),
    ("retrieval", "max_documents"),
    ("retrieval", "max_context_tokens"),
    ("knowledge", "store"),
    ("nonsense", "key"),
];

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u32>().prop_map(|n| n.to_string()),
        Just("-1".to_string()),
        Just("1e309".to_string()),
        Just("true".to_string()),
        Just("\"\\u0000\"".to_string()),
        Just("\"2G\"".to_string()),
        Just("\"1.5G\"".to_string()),
        Just(format!("\"{}\"", "x".repeat(100_000))),
        "[a-z0-9/._-]{0,12}".prop_map(|s| format!("{s:?}")),
        Just("[]".to_string()),
        Just("[\"cpu\", \"\"]".to_string()),
        Just("{ a = 1 }".to_string()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn arbitrary_configurations_load_or_fail_cleanly(
        entries in prop::collection::vec((0..KEYS.len(), value()), 0..8),
    ) {
        let mut by_section: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
        let mut seen = std::collections::HashSet::new();
        for (i, v) in entries {
            let (section, key) = KEYS[i];
            // A key twice is a TOML syntax error; that path is covered by `garbage_never_panics`.
            if seen.insert(i) {
                by_section.entry(section).or_default().push(format!("{key} = {v}"));
            }
        }
        let mut text = String::new();
        for (section, lines) in by_section {
            text.push_str(&format!("[{section}]\n{}\n", lines.join("\n")));
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let main = dir.path().join("moed.toml");
        std::fs::write(&main, &text).expect("write");
        if let Ok(config) = Config::load_with_env(Some(&main), Some(Default::default())) {
            let rendered = dir.path().join("rendered.toml");
            std::fs::write(&rendered, config.to_toml()).expect("write");
            let again = Config::load_with_env(Some(&rendered), Some(Default::default()));
            prop_assert!(again.is_ok(), "the rendered configuration does not load: {again:?}\n{}", config.to_toml());
        }
    }

    #[test]
    fn garbage_never_panics(text in "(\\[[a-z.]{0,10}\\]|[a-z_]{1,10} = .{0,10}|\n){0,12}") {
        let dir = tempfile::tempdir().expect("tempdir");
        let main = dir.path().join("moed.toml");
        std::fs::write(&main, &text).expect("write");
        let _ = Config::load_with_env(Some(&main), Some(Default::default()));
    }
}
