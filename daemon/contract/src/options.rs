//! Typed request options parsed from the `a{sv}` a client sends, and written back for clients.
//!
//! Integers are accepted as any D-Bus integer type (`gdbus` sends `<42>` as `i`, `busctl` whatever
//! its caller writes) when the value fits; floating-point options also take integers. Anything
//! else, and any unknown key, is `InvalidArgument` naming the key.

use std::collections::{HashMap, HashSet};

use zbus::{OwnedVariant, Str, Variant};

use crate::MoedError;
use crate::params::{params_dict, plugin_params};
use crate::wire::{self, limits::NAME};

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

/// Most bytes of one stop string.
pub const MAX_STOP_BYTES: usize = 1024;

/// Most plugin names in `plugins`. Every collection's count is checked before any per-item work,
/// so a caller that sends 100,000 names costs one comparison, not a pass over them.
pub const MAX_REQUEST_PLUGINS: usize = 32;

/// Most bytes of the `system` option (it is part of the prompt, bounded again with it).
pub const MAX_SYSTEM_BYTES: usize = 1024 * 1024;

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
                    let stop = bounded_strings(key, value, MAX_STOP_STRINGS, MAX_STOP_BYTES)?;
                    if stop.iter().any(String::is_empty) {
                        return Err(invalid(key, "stop strings must not be empty"));
                    }
                    opts.stop = stop;
                }
                "raw" => opts.raw = boolean(key, value)?,
                "system" => opts.system = Some(bounded_string(key, value, MAX_SYSTEM_BYTES)?),
                "model" => {
                    let model = bounded_string(key, value, NAME)?;
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
                    let sources = bounded_strings(key, value, MAX_SOURCES, NAME)?;
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
                "model" => opts.model = Some(bounded_string(key, value, NAME)?),
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
    let names = bounded_strings(key, value, MAX_REQUEST_PLUGINS, NAME)?;
    if names.iter().any(|n| n.trim().is_empty()) {
        return Err(invalid(key, "a plugin name must not be empty"));
    }
    // A set keeps the duplicate check linear in the (already bounded) count.
    let mut seen: HashSet<&str> = HashSet::with_capacity(names.len());
    for n in &names {
        if !seen.insert(n) {
            return Err(invalid(
                key,
                &format!("plugin {} is named twice", wire::quote(n)),
            ));
        }
    }
    Ok(names)
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

/// `InvalidArgument` naming the option; the key is quoted (a `plugin_params` key is the
/// client's own text and may be of any length).
pub(crate) fn invalid(key: &str, why: &str) -> MoedError {
    MoedError::InvalidArgument(format!("option {}: {why}", wire::quote(key)))
}

pub(crate) fn unknown_key(key: &str, known: &[&str]) -> MoedError {
    MoedError::InvalidArgument(format!(
        "unknown option {}; known options: {}",
        wire::quote(key),
        known.join(", ")
    ))
}

/// `InvalidArgument` for a string over its byte limit, quoting only its start.
pub(crate) fn too_long(key: &str, s: &str, max_bytes: usize) -> MoedError {
    invalid(
        key,
        &format!("{} is too long: at most {max_bytes} bytes", wire::quote(s)),
    )
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

/// A string, unbounded: for administrators' calls (client options use [`bounded_string`]).
pub(crate) fn string(key: &str, value: &Variant<'_>) -> Result<String, MoedError> {
    bounded_string(key, value, usize::MAX)
}

/// Strings, unbounded: for administrators' calls (client options use [`bounded_strings`]).
pub(crate) fn strings(key: &str, value: &Variant<'_>) -> Result<Vec<String>, MoedError> {
    bounded_strings(key, value, usize::MAX, usize::MAX)
}

/// A string of at most `max_bytes` bytes (checked before it is copied).
pub(crate) fn bounded_string(
    key: &str,
    value: &Variant<'_>,
    max_bytes: usize,
) -> Result<String, MoedError> {
    match value {
        Variant::Str(s) if s.len() > max_bytes => Err(too_long(key, s.as_str(), max_bytes)),
        Variant::Str(s) => Ok(s.to_string()),
        other => Err(invalid(
            key,
            &format!("expected a string, got type {}", type_name(other)),
        )),
    }
}

/// One string or an array of at most `max_count` strings of at most `max_bytes` bytes each; the
/// count is checked before any element is looked at.
pub(crate) fn bounded_strings(
    key: &str,
    value: &Variant<'_>,
    max_count: usize,
    max_bytes: usize,
) -> Result<Vec<String>, MoedError> {
    match value {
        Variant::Str(_) => Ok(vec![bounded_string(key, value, max_bytes)?]),
        Variant::Array(items) if items.len() > max_count => Err(invalid(
            key,
            &format!("{} entries, at most {max_count}", items.len()),
        )),
        Variant::Array(items) => items
            .inner()
            .iter()
            .map(|item| match unwrap_variant(item) {
                s @ Variant::Str(_) => bounded_string(key, s, max_bytes),
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
#[path = "options_tests.rs"]
mod tests;
