//! Typed request options parsed from the `a{sv}` a client sends, and written back for clients.
//!
//! Integers are accepted as any D-Bus integer type (`gdbus` sends `<42>` as `i`, `busctl` whatever
//! its caller writes) when the value fits; floating-point options also take integers. Anything
//! else, and any unknown key, is `InvalidArgument` naming the key.

use std::collections::HashMap;

use zbus::{OwnedVariant, Str, Variant};

use crate::MoedError;
use crate::params::{params_dict, plugin_params};

/// The options dictionary as it arrives.
pub type OptionDict = HashMap<String, OwnedVariant>;

/// Options of `Complete`, `Chat`, `Generate` and `GenerateChat`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenerateOptions {
    /// `max_tokens` (u, >= 1): most tokens to generate.
    pub max_tokens: Option<u32>,
    /// `temperature` (d, >= 0; 0 is greedy).
    pub temperature: Option<f64>,
    /// `top_p` (d, in (0, 1]).
    pub top_p: Option<f64>,
    /// `top_k` (u, >= 1).
    pub top_k: Option<u32>,
    /// `min_p` (d, in [0, 1]).
    pub min_p: Option<f64>,
    /// `repetition_penalty` (d, > 0).
    pub repetition_penalty: Option<f64>,
    /// `seed` (t): makes sampling repeatable.
    pub seed: Option<u64>,
    /// `stop` (as, or s): generation ends before any of these strings.
    pub stop: Vec<String>,
    /// `raw` (b): `Complete`/`Generate` only; the prompt goes to the model as it is, without the
    /// chat template.
    pub raw: bool,
    /// `system` (s): `Complete`/`Generate` only; a system message before the prompt.
    pub system: Option<String>,
    /// `model` (s): a loaded model to use instead of the active one.
    pub model: Option<String>,
    /// `plugins` (as): plugins to apply to this request, by name (installed and enabled): a
    /// gate routes it, filters run after those applied to every request, retrieval plugins are
    /// used instead of those applied to every request.
    pub plugins: Vec<String>,
    /// `ignore_eos` (b): keep generating past end-of-sequence tokens, up to `max_tokens`
    /// (benchmarks and tests that need a fixed length).
    pub ignore_eos: bool,
    /// `plugin_params` (a{sv} or a{ss}): parameters given to this request's plugins, as
    /// (key, JSON text) pairs sorted by key; see [`plugin_params`].
    pub plugin_params: Vec<(String, String)>,
    /// `retrieval` (b): `Some(false)` turns retrieval off for this request; `None` is on.
    pub retrieval: Option<bool>,
    /// `sources` (as): retrieval searches only these data source labels.
    pub sources: Vec<String>,
}

/// The keys [`GenerateOptions`] knows, for error messages and documentation.
pub const GENERATE_OPTION_KEYS: &[&str] = &[
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repetition_penalty",
    "seed",
    "stop",
    "raw",
    "system",
    "model",
    "plugins",
    "ignore_eos",
    "plugin_params",
    "retrieval",
    "sources",
];

/// The keys [`ScoreOptions`] knows.
pub const SCORE_OPTION_KEYS: &[&str] = &["model", "plugins", "plugin_params"];

/// Most labels in `sources`.
pub const MAX_SOURCES: usize = 32;

/// Most stop strings one request may carry.
pub const MAX_STOP_STRINGS: usize = 16;

impl GenerateOptions {
    /// Parses and checks a client's options.
    pub fn from_dict(dict: &OptionDict) -> Result<Self, MoedError> {
        let mut opts = GenerateOptions::default();
        for (key, value) in dict {
            let value = unwrap_variant(value);
            match key.as_str() {
                "max_tokens" => {
                    let v = uint(key, value, 1, u32::MAX as u64)?;
                    opts.max_tokens = Some(v as u32);
                }
                "temperature" => {
                    opts.temperature = Some(float(key, value, |v| v >= 0.0, "0 or more")?);
                }
                "top_p" => {
                    opts.top_p = Some(float(key, value, |v| v > 0.0 && v <= 1.0, "in (0, 1]")?);
                }
                "top_k" => opts.top_k = Some(uint(key, value, 1, u32::MAX as u64)? as u32),
                "min_p" => {
                    opts.min_p = Some(float(
                        key,
                        value,
                        |v| (0.0..=1.0).contains(&v),
                        "in [0, 1]",
                    )?);
                }
                "repetition_penalty" => {
                    opts.repetition_penalty =
                        Some(float(key, value, |v| v > 0.0, "greater than 0")?);
                }
                "seed" => opts.seed = Some(uint(key, value, 0, u64::MAX)?),
                "stop" => {
                    let stop = strings(key, value)?;
                    if stop.len() > MAX_STOP_STRINGS {
                        return Err(invalid(key, &format!("at most {MAX_STOP_STRINGS} strings")));
                    }
                    if stop.iter().any(String::is_empty) {
                        return Err(invalid(key, "stop strings must not be empty"));
                    }
                    opts.stop = stop;
                }
                "raw" => opts.raw = boolean(key, value)?,
                "system" => opts.system = Some(string(key, value)?),
                "model" => {
                    let model = string(key, value)?;
                    if model.is_empty() {
                        return Err(invalid(key, "a model name must not be empty"));
                    }
                    opts.model = Some(model);
                }
                "plugins" => opts.plugins = plugin_names(key, value)?,
                "ignore_eos" => opts.ignore_eos = boolean(key, value)?,
                "plugin_params" => opts.plugin_params = plugin_params(key, value)?,
                "retrieval" => opts.retrieval = Some(boolean(key, value)?),
                "sources" => {
                    let sources = strings(key, value)?;
                    if sources.len() > MAX_SOURCES {
                        return Err(invalid(key, &format!("at most {MAX_SOURCES} labels")));
                    }
                    if sources.iter().any(|s| s.trim().is_empty()) {
                        return Err(invalid(key, "a source label must not be empty"));
                    }
                    opts.sources = sources;
                }
                _ => return Err(unknown_key(key, GENERATE_OPTION_KEYS)),
            }
        }
        Ok(opts)
    }

    /// The dictionary a client sends for these options.
    pub fn to_dict(&self) -> OptionDict {
        let mut dict = OptionDict::new();
        if let Some(v) = self.max_tokens {
            dict.insert("max_tokens".into(), v.into());
        }
        for (key, value) in [
            ("temperature", self.temperature),
            ("top_p", self.top_p),
            ("min_p", self.min_p),
            ("repetition_penalty", self.repetition_penalty),
        ] {
            if let Some(v) = value {
                dict.insert(key.into(), v.into());
            }
        }
        if let Some(v) = self.top_k {
            dict.insert("top_k".into(), v.into());
        }
        if let Some(v) = self.seed {
            dict.insert("seed".into(), v.into());
        }
        if !self.stop.is_empty() {
            dict.insert("stop".into(), string_array(&self.stop));
        }
        if self.raw {
            dict.insert("raw".into(), true.into());
        }
        if let Some(v) = &self.system {
            dict.insert("system".into(), Str::from(v.clone()).into());
        }
        if let Some(v) = &self.model {
            dict.insert("model".into(), Str::from(v.clone()).into());
        }
        if !self.plugins.is_empty() {
            dict.insert("plugins".into(), string_array(&self.plugins));
        }
        if self.ignore_eos {
            dict.insert("ignore_eos".into(), true.into());
        }
        if !self.plugin_params.is_empty() {
            dict.insert("plugin_params".into(), params_dict(&self.plugin_params));
        }
        if let Some(on) = self.retrieval {
            dict.insert("retrieval".into(), on.into());
        }
        if !self.sources.is_empty() {
            dict.insert("sources".into(), string_array(&self.sources));
        }
        dict
    }

    /// Whether retrieval runs for this request (on unless `retrieval` is false).
    pub fn retrieval_on(&self) -> bool {
        self.retrieval != Some(false)
    }
}

/// Options of `Score`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScoreOptions {
    /// `model` (s): a loaded model to use instead of the active one.
    pub model: Option<String>,
    /// `plugins` (as): a gate plugin to route the scoring (Score runs no filters or retrieval).
    pub plugins: Vec<String>,
    /// `plugin_params` (a{sv} or a{ss}): as for generation.
    pub plugin_params: Vec<(String, String)>,
}

impl ScoreOptions {
    pub fn from_dict(dict: &OptionDict) -> Result<Self, MoedError> {
        let mut opts = ScoreOptions::default();
        for (key, value) in dict {
            let value = unwrap_variant(value);
            match key.as_str() {
                "model" => opts.model = Some(string(key, value)?),
                "plugins" => opts.plugins = plugin_names(key, value)?,
                "plugin_params" => opts.plugin_params = plugin_params(key, value)?,
                _ => return Err(unknown_key(key, SCORE_OPTION_KEYS)),
            }
        }
        Ok(opts)
    }

    pub fn to_dict(&self) -> OptionDict {
        let mut dict = OptionDict::new();
        if let Some(v) = &self.model {
            dict.insert("model".into(), Str::from(v.clone()).into());
        }
        if !self.plugins.is_empty() {
            dict.insert("plugins".into(), string_array(&self.plugins));
        }
        if !self.plugin_params.is_empty() {
            dict.insert("plugin_params".into(), params_dict(&self.plugin_params));
        }
        dict
    }
}

fn plugin_names(key: &str, value: &Variant<'_>) -> Result<Vec<String>, MoedError> {
    let names = strings(key, value)?;
    if names.iter().any(|n| n.trim().is_empty()) {
        return Err(invalid(key, "a plugin name must not be empty"));
    }
    let mut out: Vec<String> = Vec::with_capacity(names.len());
    for n in names {
        if out.contains(&n) {
            return Err(invalid(key, &format!("plugin '{n}' is named twice")));
        }
        out.push(n);
    }
    Ok(out)
}

pub(crate) fn string_array(items: &[String]) -> OwnedVariant {
    // A Vec<String> always converts: strings need no fds and no signature checks.
    OwnedVariant::try_from(Variant::from(items.to_vec()))
        .unwrap_or_else(|_| OwnedVariant::from(Str::from("")))
}

/// `gdbus` and some bindings wrap values once more (`v` inside `v`).
pub(crate) fn unwrap_variant<'a, 'b>(value: &'a Variant<'b>) -> &'a Variant<'b> {
    let mut v = value;
    while let Variant::Variant(inner) = v {
        v = inner;
    }
    v
}

pub(crate) fn type_name(value: &Variant<'_>) -> String {
    format!("'{}'", value.value_signature())
}

pub(crate) fn invalid(key: &str, why: &str) -> MoedError {
    MoedError::InvalidArgument(format!("option '{key}': {why}"))
}

pub(crate) fn unknown_key(key: &str, known: &[&str]) -> MoedError {
    MoedError::InvalidArgument(format!(
        "unknown option '{key}'; known options: {}",
        known.join(", ")
    ))
}

pub(crate) fn integer(value: &Variant<'_>) -> Option<i128> {
    Some(match value {
        Variant::U8(v) => *v as i128,
        Variant::I16(v) => *v as i128,
        Variant::U16(v) => *v as i128,
        Variant::I32(v) => *v as i128,
        Variant::U32(v) => *v as i128,
        Variant::I64(v) => *v as i128,
        Variant::U64(v) => *v as i128,
        _ => return None,
    })
}

pub(crate) fn uint(key: &str, value: &Variant<'_>, min: u64, max: u64) -> Result<u64, MoedError> {
    let v = integer(value).ok_or_else(|| {
        invalid(
            key,
            &format!("expected an integer, got type {}", type_name(value)),
        )
    })?;
    if v < min as i128 || v > max as i128 {
        return Err(invalid(
            key,
            &format!("{v} is out of range; expected {min} to {max}"),
        ));
    }
    Ok(v as u64)
}

fn float(
    key: &str,
    value: &Variant<'_>,
    ok: impl Fn(f64) -> bool,
    expected: &str,
) -> Result<f64, MoedError> {
    let v = match value {
        Variant::F64(v) => *v,
        other => match integer(other) {
            Some(i) => i as f64,
            None => {
                return Err(invalid(
                    key,
                    &format!("expected a number, got type {}", type_name(value)),
                ));
            }
        },
    };
    if !v.is_finite() || !ok(v) {
        return Err(invalid(
            key,
            &format!("{v} is out of range; expected {expected}"),
        ));
    }
    Ok(v)
}

pub(crate) fn boolean(key: &str, value: &Variant<'_>) -> Result<bool, MoedError> {
    match value {
        Variant::Bool(b) => Ok(*b),
        other => Err(invalid(
            key,
            &format!("expected a boolean, got type {}", type_name(other)),
        )),
    }
}

pub(crate) fn string(key: &str, value: &Variant<'_>) -> Result<String, MoedError> {
    match value {
        Variant::Str(s) => Ok(s.to_string()),
        other => Err(invalid(
            key,
            &format!("expected a string, got type {}", type_name(other)),
        )),
    }
}

pub(crate) fn strings(key: &str, value: &Variant<'_>) -> Result<Vec<String>, MoedError> {
    match value {
        Variant::Str(s) => Ok(vec![s.to_string()]),
        Variant::Array(items) => items
            .inner()
            .iter()
            .map(|item| match unwrap_variant(item) {
                Variant::Str(s) => Ok(s.to_string()),
                other => Err(invalid(
                    key,
                    &format!(
                        "expected strings, got an element of type {}",
                        type_name(other)
                    ),
                )),
            })
            .collect(),
        other => Err(invalid(
            key,
            &format!("expected a string array, got type {}", type_name(other)),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dict(pairs: Vec<(&str, OwnedVariant)>) -> OptionDict {
        pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }

    fn err_of(pairs: Vec<(&str, OwnedVariant)>) -> String {
        match GenerateOptions::from_dict(&dict(pairs)) {
            Err(MoedError::InvalidArgument(m)) => m,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn integers_of_any_width_and_round_trip() {
        let opts = GenerateOptions::from_dict(&dict(vec![
            ("max_tokens", OwnedVariant::from(12i32)),
            ("top_k", OwnedVariant::from(5u8)),
            ("seed", OwnedVariant::from(9i64)),
            ("temperature", OwnedVariant::from(1i32)),
            ("stop", OwnedVariant::from(Str::from("END"))),
        ]))
        .expect("valid");
        assert_eq!(opts.max_tokens, Some(12));
        assert_eq!(opts.top_k, Some(5));
        assert_eq!(opts.seed, Some(9));
        assert_eq!(opts.temperature, Some(1.0));
        assert_eq!(opts.stop, vec!["END".to_string()]);
        let full = GenerateOptions {
            max_tokens: Some(3),
            temperature: Some(0.5),
            top_p: Some(0.9),
            top_k: Some(4),
            min_p: Some(0.1),
            repetition_penalty: Some(1.1),
            seed: Some(u64::MAX),
            stop: vec!["a".into(), "b".into()],
            raw: true,
            system: Some("sys".into()),
            model: Some("m".into()),
            plugins: vec!["p".into()],
            ignore_eos: true,
            plugin_params: vec![
                ("expert_budget.k".into(), "1".into()),
                ("expert_budget.masked".into(), "[3,5]".into()),
            ],
            retrieval: Some(false),
            sources: vec!["handbook".into()],
        };
        assert_eq!(
            GenerateOptions::from_dict(&full.to_dict()).expect("round trip"),
            full
        );
    }

    #[test]
    fn wrong_types_and_values_name_the_key() {
        assert!(
            err_of(vec![("max_tokens", OwnedVariant::from(Str::from("5")))])
                .contains("'max_tokens'")
        );
        assert!(err_of(vec![("max_tokens", OwnedVariant::from(-1i32))]).contains("out of range"));
        assert!(err_of(vec![("top_p", OwnedVariant::from(0.0f64))]).contains("'top_p'"));
        assert!(
            err_of(vec![("temperature", OwnedVariant::from(f64::NAN))]).contains("'temperature'")
        );
        assert!(err_of(vec![("raw", OwnedVariant::from(1u32))]).contains("boolean"));
        assert!(err_of(vec![("stop", OwnedVariant::from(Str::from("")))]).contains("'stop'"));
        assert!(err_of(vec![("model", OwnedVariant::from(true))]).contains("'model'"));
        let unknown = err_of(vec![("temprature", OwnedVariant::from(1.0f64))]);
        assert!(
            unknown.contains("'temprature'") && unknown.contains("temperature"),
            "{unknown}"
        );
    }

    #[test]
    fn nested_variants_are_unwrapped() {
        let inner = Variant::from(7u32);
        let outer = OwnedVariant::try_from(Variant::Variant(Box::new(inner))).expect("variant");
        let opts = GenerateOptions::from_dict(&dict(vec![("max_tokens", outer)])).expect("valid");
        assert_eq!(opts.max_tokens, Some(7));
    }

    #[test]
    fn retrieval_and_sources() {
        let opts = GenerateOptions::from_dict(&dict(vec![
            ("retrieval", OwnedVariant::from(false)),
            ("sources", OwnedVariant::from(Str::from("handbook"))),
        ]))
        .expect("valid");
        assert!(!opts.retrieval_on());
        assert_eq!(opts.sources, ["handbook"]);
        assert!(GenerateOptions::default().retrieval_on());
        assert!(err_of(vec![("retrieval", OwnedVariant::from(1u8))]).contains("'retrieval'"));
        assert!(err_of(vec![("sources", OwnedVariant::from(Str::from("")))]).contains("'sources'"));
        assert!(
            err_of(vec![(
                "plugins",
                OwnedVariant::try_from(Variant::from(vec!["a", "a"])).expect("as")
            )])
            .contains("twice")
        );
    }

    #[test]
    fn score_options() {
        let opts =
            ScoreOptions::from_dict(&dict(vec![("model", OwnedVariant::from(Str::from("m")))]))
                .expect("valid");
        assert_eq!(opts.model.as_deref(), Some("m"));
        assert!(
            ScoreOptions::from_dict(&dict(vec![("max_tokens", OwnedVariant::from(1u32))])).is_err()
        );
        let full = ScoreOptions {
            model: Some("m".into()),
            plugins: vec!["expert-budget".into()],
            plugin_params: vec![("expert_budget.k".into(), "1".into())],
        };
        assert_eq!(
            ScoreOptions::from_dict(&full.to_dict()).expect("round trip"),
            full
        );
    }
}
