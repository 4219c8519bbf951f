//! Configuration loading: layering of file, drop-ins and environment; errors naming the key.

use std::collections::HashMap;

use super::checks::parse_bytes;
use super::*;
use crate::engine::MatmulKernel;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(&path, text).expect("write");
    path
}

fn env(pairs: &[(&str, &str)]) -> Option<HashMap<String, String>> {
    Some(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn load(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let main = write(dir.path(), "moed.toml", text);
    Config::load_with_env(Some(&main), env(vars))
}

fn key_of(err: ConfigError) -> String {
    match err {
        ConfigError::Invalid { key, .. } | ConfigError::InvalidAt { key, .. } => key,
        other => other.to_string(),
    }
}

#[test]
fn defaults_without_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config::load_with_env(None, env(&[])).expect("defaults");
    let _ = dir;
    assert_eq!(config.service.max_concurrent, 8);
    assert_eq!(config.service.max_batch, 8);
    assert_eq!(config.service.max_batch_tokens, 512);
    assert_eq!(config.service.queue_depth, 16);
    assert_eq!(config.engine.providers, vec![Provider::Cpu]);
    assert_eq!(config.access.authorizer, AuthorizerKind::Polkit);
    assert_eq!(config.models.dirs[0], PathBuf::from("/var/lib/moed/models"));
}

#[test]
fn drop_ins_in_name_order_then_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let main = write(
        dir.path(),
        "moed.toml",
        "[service]\nmax_concurrent = 3\nqueue_depth = 4\n",
    );
    write(
        dir.path(),
        "moed.toml.d/20-b.toml",
        "[service]\nmax_concurrent = 6\n",
    );
    write(
        dir.path(),
        "moed.toml.d/10-a.toml",
        "[service]\nmax_concurrent = 5\nqueue_depth = 7\n",
    );
    write(dir.path(), "moed.toml.d/30-ignored.conf", "not toml at all");
    let config = Config::load_with_env(Some(&main), env(&[])).expect("load");
    assert_eq!(config.service.max_concurrent, 6, "20-b wins over 10-a");
    assert_eq!(config.service.queue_depth, 7);
    assert_eq!(config.sources.len(), 3);

    let config = Config::load_with_env(
        Some(&main),
        env(&[
            ("MOED_SERVICE__MAX_CONCURRENT", "9"),
            ("MOED_MODELS__DIRS", "/a,/b"),
            ("MOED_ENGINE__EXPERT_MEMORY_BUDGET", "512MiB"),
        ]),
    )
    .expect("load with env");
    assert_eq!(config.service.max_concurrent, 9);
    assert_eq!(
        config.models.dirs,
        vec![PathBuf::from("/a"), PathBuf::from("/b")]
    );
    assert_eq!(config.engine.expert_memory_budget, Some(512 << 20));
}

#[test]
fn every_bad_value_names_its_key() {
    let cases = [
        ("[service]\nmax_concurrent = 0\n", "service.max_concurrent"),
        ("[service]\nqueue_depth = -1\n", "service.queue_depth"),
        ("[engine]\nproviders = [\"gpu\"]\n", "engine.providers"),
        ("[engine]\nproviders = []\n", "engine.providers"),
        (
            "[engine]\nexpert_memory_budget = \"lots\"\n",
            "engine.expert_memory_budget",
        ),
        ("[engine]\nort_library = \"lib.so\"\n", "engine.ort_library"),
        ("[models]\ndirs = [\"relative/dir\"]\n", "models.dirs"),
        ("[access]\nauthorizer = \"open\"\n", "access.authorizer"),
        (
            "[access]\nadmin_group = \"bad group!\"\n",
            "access.admin_group",
        ),
        ("[log]\nlevel = \"loud\"\n", "log.level"),
        (
            "[service]\nstate_directory = \"state\"\n",
            "service.state_directory",
        ),
        (
            "[service]\nmax_prompt_bytes = 100\n",
            "service.max_prompt_bytes",
        ),
        (
            "[service]\nmax_requests_per_user = 0\n",
            "service.max_requests_per_user",
        ),
        ("[models]\ndefault = \"\\u0000\"\n", "models.default"),
        ("[models]\ndefault = \"a\\tb\"\n", "models.default"),
    ];
    for (text, key) in cases {
        let err = load(text, &[])
            .err()
            .unwrap_or_else(|| panic!("{text} was accepted"));
        assert_eq!(key_of(err), key, "for {text}");
    }
}

#[test]
fn unknown_keys_and_wrong_types_are_named() {
    let err = load("[service]\nmax_concurent = 2\n", &[]).expect_err("typo refused");
    assert!(err.to_string().contains("max_concurent"), "{err}");
    let err = load("[service]\nmax_concurrent = \"two\"\n", &[]).expect_err("string refused");
    assert!(err.to_string().contains("max_concurrent"), "{err}");
    let err = load("", &[("MOED_SERVICE__QUEUE_DEPTH", "deep")]).expect_err("env string refused");
    assert!(err.to_string().contains("queue_depth"), "{err}");
    let err = load("[servce]\n", &[]).expect_err("unknown table refused");
    assert!(err.to_string().contains("servce"), "{err}");
}

#[test]
fn missing_explicit_file_is_an_error() {
    let err = Config::load_with_env(Some(Path::new("/nonexistent/moed.toml")), env(&[]))
        .expect_err("missing");
    assert!(err.to_string().contains("/nonexistent/moed.toml"), "{err}");
}

#[test]
fn printed_configuration_reads_back_the_same() {
    let config = load(
        "[models]\ndirs = [\"/m\"]\ndefault = \"x\"\n[engine]\nexpert_memory_budget = 1000\n[access]\nadmin_group = \"root\"\n",
        &[],
    )
    .expect("load");
    let again = load(&config.to_toml(), &[]).expect("reload printed");
    assert_eq!(
        Config {
            sources: vec![],
            ..config
        },
        Config {
            sources: vec![],
            ..again
        }
    );
}

#[test]
fn byte_sizes() {
    assert_eq!(parse_bytes("123"), Some(123));
    assert_eq!(parse_bytes("2GiB"), Some(2 << 30));
    assert_eq!(parse_bytes("2G"), Some(2_000_000_000));
    assert_eq!(parse_bytes("1.5G"), None);
    assert_eq!(parse_bytes("G"), None);
}

#[test]
fn plugin_filters_are_absolute_and_listed_once() {
    let c = load("[plugins]\nfilters = [\"/p/pii-redact.wasm\"]\n", &[]).expect("valid");
    assert_eq!(c.plugins.filters, [PathBuf::from("/p/pii-redact.wasm")]);
    let from_env = load("", &[("MOED_PLUGINS__FILTERS", "/p/a.wasm,/p/b.wasm")]).expect("env");
    assert_eq!(from_env.plugins.filters.len(), 2);
    for (text, key) in [
        ("filters = [\"pii-redact.wasm\"]", "plugins.filters[0]"),
        ("filters = [\"/p/a.wasm\", \" \"]", "plugins.filters[1]"),
        (
            "filters = [\"/p/a.wasm\", \"/p/a.wasm\"]",
            "plugins.filters[1]",
        ),
    ] {
        let err = load(&format!("[plugins]\n{text}\n"), &[]).expect_err(text);
        assert_eq!(key_of(err), key, "{text}");
    }
    assert!(load("[plugins]\nfilterz = []\n", &[]).is_err());
}

#[test]
fn request_limits_default_and_render() {
    let config = load("[service]\nmax_concurrent = 2\nqueue_depth = 5\n", &[]).expect("valid");
    assert_eq!(config.service.max_prompt_bytes, 4 << 20);
    assert_eq!(config.service.max_requests_per_user, None);
    assert_eq!(config.service.requests_per_user(), 4);
    let config = load(
        "[service]\nmax_prompt_bytes = 65536\nmax_requests_per_user = 3\n",
        &[],
    )
    .expect("valid");
    assert_eq!(config.service.max_prompt_bytes, 65536);
    assert_eq!(config.service.requests_per_user(), 3);
    let rendered = config.to_toml();
    assert!(
        rendered.contains("max_prompt_bytes = 65536\n"),
        "{rendered}"
    );
    assert!(
        rendered.contains("max_requests_per_user = 3\n"),
        "{rendered}"
    );
    let again = load(&rendered, &[]).expect("the rendering loads");
    assert_eq!(again.service, config.service);
}

#[test]
fn rendered_strings_are_toml_strings() {
    // Rust's `{:?}` would write ESC as `\u{1b}`, which TOML refuses: the rendering must load again.
    let dir_name = "/srv/moe \"models\" \\ \u{1b} é";
    let text = format!(
        "[models]\ndirs = [{}]\n",
        toml::Value::String(dir_name.into())
    );
    let config = load(&text, &[]).expect("an absolute directory loads");
    let dir = tempfile::tempdir().expect("tempdir");
    let rendered = write(dir.path(), "rendered.toml", &config.to_toml());
    let again = Config::load_with_env(Some(&rendered), env(&[])).expect("the rendering loads");
    assert_eq!(again.models.dirs, vec![PathBuf::from(dir_name)]);
}

#[test]
fn an_invalid_value_names_the_file_and_line_that_set_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let main = write(dir.path(), "moed.toml", "[service]\nmax_concurrent = 4\n");
    let drop_ins = dir.path().join("moed.toml.d");
    std::fs::create_dir(&drop_ins).expect("mkdir");
    let part = write(
        &drop_ins,
        "10-x.toml",
        "# a drop-in\n[service]\n\nmax_concurrent = 0\n",
    );
    let err = Config::load_with_env(Some(&main), env(&[])).expect_err("0 is refused");
    assert_eq!(
        err.to_string(),
        format!(
            "{}:4: configuration key 'service.max_concurrent': 0 is out of range; expected 1 to 1024",
            part.display()
        )
    );
    let err = Config::load_with_env(Some(&main), env(&[("MOED_SERVICE__MAX_CONCURRENT", "0")]))
        .expect_err("from the environment too");
    assert!(
        err.to_string()
            .starts_with("the environment variable MOED_SERVICE__MAX_CONCURRENT: "),
        "{err}"
    );
}

#[test]
fn quantized_matmul_is_moed_unless_set_and_names_its_key() {
    assert_eq!(
        load("", &[]).expect("defaults").engine.quantized_matmul,
        MatmulKernel::Moed
    );
    let ort = load("[engine]\nquantized_matmul = \"onnxruntime\"\n", &[]).expect("ort");
    assert_eq!(ort.engine.quantized_matmul, MatmulKernel::OnnxRuntime);
    assert!(ort.to_toml().contains("quantized_matmul = \"onnxruntime\""));
    let err = load("[engine]\nquantized_matmul = \"fast\"\n", &[])
        .expect_err("unknown kernel")
        .to_string();
    assert!(err.contains("engine.quantized_matmul"), "{err}");
    assert!(
        err.contains("'fast'") && err.contains("moed, onnxruntime"),
        "{err}"
    );
}

#[test]
fn held_experts_percent_defaults_to_half_and_is_bounded() {
    let defaults = load("", &[]).expect("defaults");
    assert_eq!(defaults.engine.held_experts_percent, 50);
    assert!(defaults.engine.prefetch_next_layer);
    let set = load(
        "[engine]\nheld_experts_percent = 0\nprefetch_next_layer = false\n",
        &[],
    )
    .expect("off");
    assert_eq!(set.engine.held_experts_percent, 0);
    assert!(!set.engine.prefetch_next_layer);
    let text = set.to_toml();
    assert!(text.contains("held_experts_percent = 0"), "{text}");
    assert!(text.contains("prefetch_next_layer = false"), "{text}");
    for bad in ["91", "-1", "\"half\""] {
        let err = load(&format!("[engine]\nheld_experts_percent = {bad}\n"), &[])
            .expect_err("out of range");
        assert!(
            err.to_string().contains("held_experts_percent"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn experts_side_by_side_is_on_unless_set_off() {
    assert!(load("", &[]).expect("defaults").engine.experts_side_by_side);
    let off = load("[engine]\nexperts_side_by_side = false\n", &[]).expect("off");
    assert!(!off.engine.experts_side_by_side);
    assert!(off.to_toml().contains("experts_side_by_side = false"));
    let err =
        load("[engine]\nexperts_side_by_side = \"sometimes\"\n", &[]).expect_err("not a bool");
    assert!(err.to_string().contains("experts_side_by_side"), "{err}");
}

#[test]
fn preload_experts_is_off_unless_set() {
    assert!(!load("", &[]).expect("defaults").engine.preload_experts);
    let on = load("[engine]\npreload_experts = true\n", &[]).expect("on");
    assert!(on.engine.preload_experts);
    assert!(on.to_toml().contains("preload_experts = true"));
    let err = load("[engine]\npreload_experts = \"sometimes\"\n", &[]).expect_err("not a bool");
    assert!(err.to_string().contains("preload_experts"), "{err}");
}

#[test]
fn gpu_memory_budget_is_unset_unless_given_and_needs_a_gpu_provider() {
    let defaults = load("", &[]).expect("defaults");
    assert_eq!(defaults.engine.gpu_memory_budget, None);
    assert_eq!(defaults.engine.tensorrt_cache_dir, None);
    let set = load(
        "[engine]\nproviders = [\"cuda\", \"cpu\"]\ngpu_memory_budget = \"8GiB\"\ntensorrt_cache_dir = \"/srv/trt\"\n",
        &[],
    )
    .expect("set");
    assert_eq!(set.engine.gpu_memory_budget, Some(8 << 30));
    assert_eq!(
        set.engine.tensorrt_cache_dir,
        Some(PathBuf::from("/srv/trt"))
    );
    let toml = set.to_toml();
    assert!(toml.contains("gpu_memory_budget = 8589934592"), "{toml}");
    assert!(toml.contains("tensorrt_cache_dir = \"/srv/trt\""), "{toml}");
    // 0 is kept: every graph on the CPU, whatever the providers.
    let zero = load("[engine]\ngpu_memory_budget = 0\n", &[]).expect("zero");
    assert_eq!(zero.engine.gpu_memory_budget, Some(0));
    let from_env = load("", &[("MOED_ENGINE__GPU_MEMORY_BUDGET", "0")]).expect("env");
    assert_eq!(from_env.engine.gpu_memory_budget, Some(0));

    for (text, key, says) in [
        (
            "[engine]\ngpu_memory_budget = \"plenty\"\n",
            "engine.gpu_memory_budget",
            "'plenty' is not a byte count",
        ),
        (
            "[engine]\ngpu_memory_budget = -1\n",
            "engine.gpu_memory_budget",
            "-1 is negative",
        ),
        (
            "[engine]\ngpu_memory_budget = \"1G\"\n",
            "engine.gpu_memory_budget",
            "names no GPU provider",
        ),
        (
            "[engine]\ntensorrt_cache_dir = \"cache/trt\"\n",
            "engine.tensorrt_cache_dir",
            "not an absolute path",
        ),
    ] {
        let err = load(text, &[]).expect_err(text);
        let msg = err.to_string();
        assert!(msg.contains(says), "{text}: {msg}");
        assert_eq!(key_of(err), key, "{text}");
    }
}
