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

#[path = "option_values.rs"]
mod values;
pub(crate) use values::*;

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
    /// `json_schema` (s), `regex` (s) or `json_object` (b, true): what the answer must match; at
    /// most one of them.
    pub constraint: Option<OutputConstraint>,
    /// `tools` (s): JSON text of the functions the model may call, OpenAI's shape
    /// `[{"type": "function", "function": {"name", "description", "parameters"}}]`; chat only.
    /// Its size and NUL are checked here, its content by the engine (CONTRACT.md, *Tools*).
    pub tools: Option<String>,
    /// `tool_choice` (s): `auto`, `none`, `required` or one function's name (the engine checks
    /// that `tools` offers it).
    pub tool_choice: Option<ToolChoice>,
}

/// Whether and which tool the answer must call (`tool_choice`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    /// The model decides (the default when `tools` is given).
    Auto,
    /// No call: the tools are still shown to the model, its answer is text.
    None,
    /// The answer is one call of any of the tools.
    Required,
    /// The answer is one call of this function.
    Function(String),
}

impl ToolChoice {
    /// The option's text for this choice.
    pub fn as_str(&self) -> &str {
        match self {
            ToolChoice::Auto => "auto",
            ToolChoice::None => "none",
            ToolChoice::Required => "required",
            ToolChoice::Function(name) => name,
        }
    }

    fn parse(key: &str, text: String) -> Result<Self, MoedError> {
        Ok(match text.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            _ if !text.is_empty() && !text.chars().any(char::is_control) => {
                ToolChoice::Function(text)
            }
            _ => {
                return Err(invalid(
                    key,
                    "expected auto, none, required or a function's name",
                ));
            }
        })
    }
}

/// Most bytes of `tool_choice` (a function's name is at most 64, as OpenAI allows).
pub const MAX_FUNCTION_NAME: usize = wire::limits::FUNCTION_NAME;

/// A request's constrained decoding: the answer's tokens are chosen only among those that keep
/// it inside this language, and generation ends (`stop`) when it is complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputConstraint {
    /// `json_schema`: a JSON value valid under this JSON schema (its text: an object or a boolean).
    JsonSchema(String),
    /// `regex`: text matching this regular expression (Rust `regex` syntax), whole.
    Regex(String),
    /// `json_object`: any JSON object.
    JsonObject,
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
    "json_schema",
    "regex",
    "json_object",
    "tools",
    "tool_choice",
    crate::CLIENT_SOCKET_OPTION,
];

/// The keys [`ScoreOptions`] knows.
pub const SCORE_OPTION_KEYS: &[&str] = &["model", "plugins", "plugin_params"];

/// Most labels in `sources`.
pub const MAX_SOURCES: usize = 32;

/// Most stop strings one request may carry.
pub const MAX_STOP_STRINGS: usize = 16;

/// Most bytes of one stop string.
pub const MAX_STOP_BYTES: usize = 1024;

/// Most bytes of `json_schema`.
pub const MAX_JSON_SCHEMA_BYTES: usize = 64 * 1024;

/// Most bytes of `regex`.
pub const MAX_REGEX_BYTES: usize = 4 * 1024;

/// Most bytes of `tools`.
pub const MAX_TOOLS_BYTES: usize = 256 * 1024;

/// Most plugin names in `plugins`. Every collection's count is checked before any per-item work,
/// so a caller that sends 100,000 names costs one comparison, not a pass over them.
pub const MAX_REQUEST_PLUGINS: usize = 32;

/// The range of a floating-point sampling option: one rule for the daemon's check of a client's
/// options and for `moectl`'s check of its flags, so the two cannot disagree.
#[derive(Debug, Clone, Copy)]
pub struct FloatRule {
    /// The option's key in the dictionary.
    pub key: &'static str,
    ok: fn(f64) -> bool,
    /// The accepted range, as error messages say it.
    pub expected: &'static str,
}

impl FloatRule {
    /// `v` when it is finite and in range, else the reason (without the key).
    pub fn check(&self, v: f64) -> Result<f64, String> {
        if v.is_finite() && (self.ok)(v) {
            Ok(v)
        } else {
            Err(format!("{v} is out of range; expected {}", self.expected))
        }
    }
}

/// `temperature`: 0 is greedy.
pub const TEMPERATURE: FloatRule = FloatRule {
    key: "temperature",
    ok: |v| v >= 0.0,
    expected: "0 or more",
};
/// `top_p`: the probability mass kept.
pub const TOP_P: FloatRule = FloatRule {
    key: "top_p",
    ok: |v| v > 0.0 && v <= 1.0,
    expected: "in (0, 1]",
};
/// `min_p`: relative to the most likely token.
pub const MIN_P: FloatRule = FloatRule {
    key: "min_p",
    ok: |v| (0.0..=1.0).contains(&v),
    expected: "in [0, 1]",
};
/// `repetition_penalty`: 1 is off.
pub const REPETITION_PENALTY: FloatRule = FloatRule {
    key: "repetition_penalty",
    ok: |v| v > 0.0,
    expected: "greater than 0",
};

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
                "temperature" => opts.temperature = Some(float(key, value, &TEMPERATURE)?),
                "top_p" => opts.top_p = Some(float(key, value, &TOP_P)?),
                "top_k" => opts.top_k = Some(uint(key, value, 1, u32::MAX as u64)? as u32),
                "min_p" => opts.min_p = Some(float(key, value, &MIN_P)?),
                "repetition_penalty" => {
                    opts.repetition_penalty = Some(float(key, value, &REPETITION_PENALTY)?);
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
                "json_schema" => {
                    let text = bounded_string(key, value, MAX_JSON_SCHEMA_BYTES)?;
                    check_schema_text(key, &text)?;
                    set_constraint(&mut opts, key, OutputConstraint::JsonSchema(text))?;
                }
                "regex" => {
                    let text = bounded_string(key, value, MAX_REGEX_BYTES)?;
                    if text.is_empty() {
                        return Err(invalid(key, "the expression must not be empty"));
                    }
                    set_constraint(&mut opts, key, OutputConstraint::Regex(text))?;
                }
                "json_object" => {
                    if !boolean(key, value)? {
                        return Err(invalid(
                            key,
                            "only true is meaningful (leave it out instead)",
                        ));
                    }
                    set_constraint(&mut opts, key, OutputConstraint::JsonObject)?;
                }
                "tools" => {
                    let text = bounded_string(key, value, MAX_TOOLS_BYTES)?;
                    if text.contains('\0') {
                        return Err(invalid(key, "the tools contain a NUL character"));
                    }
                    opts.tools = Some(text);
                }
                "tool_choice" => {
                    let text = bounded_string(key, value, MAX_FUNCTION_NAME)?;
                    opts.tool_choice = Some(ToolChoice::parse(key, text)?);
                }
                // The caller's identity, not a generation setting: the daemon's transport reads
                // it before these options are parsed.
                crate::CLIENT_SOCKET_OPTION => {}
                _ => return Err(unknown_key(key, GENERATE_OPTION_KEYS)),
            }
        }
        if opts.tools.is_none()
            && matches!(
                opts.tool_choice,
                Some(ToolChoice::Required | ToolChoice::Function(_))
            )
        {
            return Err(invalid(
                "tool_choice",
                "a call is required but no tools are given (option tools)",
            ));
        }
        if opts.tools.is_some() && opts.constraint.is_some() {
            return Err(invalid(
                "tools",
                "tools exclude json_schema, regex and json_object (a tool's parameters are its schema)",
            ));
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
        match &self.constraint {
            Some(OutputConstraint::JsonSchema(text)) => {
                dict.insert("json_schema".into(), Str::from(text.clone()).into());
            }
            Some(OutputConstraint::Regex(text)) => {
                dict.insert("regex".into(), Str::from(text.clone()).into());
            }
            Some(OutputConstraint::JsonObject) => {
                dict.insert("json_object".into(), true.into());
            }
            None => {}
        }
        if let Some(tools) = &self.tools {
            dict.insert("tools".into(), Str::from(tools.clone()).into());
        }
        if let Some(choice) = &self.tool_choice {
            dict.insert(
                "tool_choice".into(),
                Str::from(choice.as_str().to_string()).into(),
            );
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

/// At most one of `json_schema`, `regex` and `json_object`.
fn set_constraint(
    opts: &mut GenerateOptions,
    key: &str,
    constraint: OutputConstraint,
) -> Result<(), MoedError> {
    if opts.constraint.is_some() {
        return Err(invalid(
            key,
            "json_schema, regex and json_object exclude one another",
        ));
    }
    opts.constraint = Some(constraint);
    Ok(())
}

/// A schema must be JSON, an object or a boolean, without NUL; its depth, patterns and meaning
/// are the engine's to check when it compiles it for the model's vocabulary.
fn check_schema_text(key: &str, text: &str) -> Result<(), MoedError> {
    if text.contains('\0') {
        return Err(invalid(key, "the schema contains a NUL character"));
    }
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(v) if v.is_object() || v.is_boolean() => Ok(()),
        Ok(_) => Err(invalid(
            key,
            &format!(
                "{} is not a schema (an object or a boolean)",
                wire::quote(text)
            ),
        )),
        Err(e) => Err(invalid(
            key,
            // serde_json's messages name a position, never the text.
            &format!("{} is not JSON: {e}", wire::quote(text)),
        )),
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

#[cfg(test)]
#[path = "options_tests.rs"]
mod tests;
