//! The plugin manifest (`plugin.toml`): name, version, kind, the capabilities the plugin asks the
//! administrator for, and the schema of its configuration, against which the administrator's
//! configuration is checked (unknown keys and wrong types refused, defaults filled in).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use moed_wire::{self as wire, limits};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::bounds;

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read plugin manifest {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("plugin manifest {}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("plugin manifest of '{plugin}': {message}")]
    Invalid { plugin: String, message: String },
    #[error("plugin '{plugin}': configuration key '{key}': {message}")]
    Config {
        plugin: String,
        key: String,
        message: String,
    },
}

/// The three kinds of plugin, one WIT world each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Gate,
    Filter,
    Retrieval,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Gate => "gate",
            Kind::Filter => "filter",
            Kind::Retrieval => "retrieval",
        }
    }

    /// The interface of `moed:plugin` that a plugin of this kind exports.
    pub fn export_interface(self) -> &'static str {
        match self {
            Kind::Gate => "gating",
            Kind::Filter => "filtering",
            Kind::Retrieval => "retriever",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the plugin asks to be granted (the administrator decides; see `capability::Grant`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requested {
    #[serde(default)]
    pub alerts: bool,
    /// Key-value store quota asked for, bytes.
    #[serde(default)]
    pub kv: Option<u64>,
    /// Data source labels (retrieval).
    #[serde(default)]
    pub sources: Vec<String>,
    /// Choosing fewer experts per token than the model's top-k (gate).
    #[serde(default)]
    pub fewer_experts: bool,
    /// `wasi:clocks`.
    #[serde(default)]
    pub clocks: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ValueType {
    Bool,
    Integer,
    Number,
    String,
    StringList,
    IntegerList,
    /// A table of any content (the plugin checks it).
    Table,
}

/// One configuration key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigKey {
    #[serde(rename = "type")]
    pub ty: ValueType,
    #[serde(default)]
    pub default: Option<toml::Value>,
    #[serde(default)]
    pub description: String,
    /// Bounds for `integer` and `number`.
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PluginSection {
    name: String,
    version: String,
    kind: Kind,
    #[serde(default)]
    description: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestFile {
    plugin: PluginSection,
    #[serde(default)]
    capabilities: Requested,
    #[serde(default)]
    config: BTreeMap<String, ConfigKey>,
}

/// A parsed and checked `plugin.toml`.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub kind: Kind,
    pub description: String,
    pub requested: Requested,
    pub config: BTreeMap<String, ConfigKey>,
}

impl Manifest {
    pub fn from_file(path: &Path) -> Result<Manifest, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
            path: path.to_owned(),
            source,
        })?;
        Manifest::parse(&text).map_err(|e| match e {
            ManifestError::Parse { message, .. } => ManifestError::Parse {
                path: path.to_owned(),
                message,
            },
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
        let file: ManifestFile = toml::from_str(text).map_err(|e| ManifestError::Parse {
            path: PathBuf::from("plugin.toml"),
            message: parse_message(text, &e),
        })?;
        let m = Manifest {
            name: file.plugin.name,
            version: file.plugin.version,
            kind: file.plugin.kind,
            description: file.plugin.description,
            requested: file.capabilities,
            config: file.config,
        };
        m.check()?;
        Ok(m)
    }

    fn check(&self) -> Result<(), ManifestError> {
        let invalid = |message: String| ManifestError::Invalid {
            // Not yet checked: at most a short quote of it.
            plugin: bounds::line(&self.name, limits::NAME),
            message,
        };
        check_name(&self.name).map_err(|m| invalid(format!("name: {m}")))?;
        let parts: Vec<&str> = self.version.split('.').collect();
        if parts.len() != 3
            || parts
                .iter()
                .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(invalid(format!(
                "version {} is not MAJOR.MINOR.PATCH",
                wire::quote(&self.version)
            )));
        }
        if !self.requested.sources.is_empty() && self.kind != Kind::Retrieval {
            return Err(invalid(
                "only retrieval plugins may ask for data sources".into(),
            ));
        }
        if self.requested.fewer_experts && self.kind != Kind::Gate {
            return Err(invalid(
                "only gate plugins may ask for fewer_experts".into(),
            ));
        }
        for (key, spec) in &self.config {
            if let Some(default) = &spec.default {
                let json = toml_to_json(default);
                check_value(spec, &json).map_err(|m| {
                    invalid(format!(
                        "config.{}.default: {m}",
                        bounds::line(key, limits::NAME)
                    ))
                })?;
            }
        }
        Ok(())
    }

    /// Checks the administrator's configuration against the schema and fills in defaults.
    /// Returns the JSON object the plugin reads through `config.get-json`.
    pub fn resolve_config(
        &self,
        given: &Map<String, Value>,
    ) -> Result<Map<String, Value>, ManifestError> {
        let err = |key: &str, message: String| ManifestError::Config {
            plugin: self.name.clone(),
            // The administrator's key, echoed: one short line.
            key: bounds::line(key, limits::NAME),
            message,
        };
        let mut out = Map::new();
        for (key, value) in given {
            let spec = self.config.get(key).ok_or_else(|| {
                let known: Vec<&str> = self.config.keys().map(String::as_str).collect();
                err(
                    key,
                    if known.is_empty() {
                        "the plugin takes no configuration".into()
                    } else {
                        format!(
                            "unknown key (the plugin knows: {})",
                            bounds::line(&known.join(", "), limits::ALERT_MESSAGE / 2)
                        )
                    },
                )
            })?;
            check_value(spec, value).map_err(|m| err(key, m))?;
            out.insert(key.clone(), value.clone());
        }
        for (key, spec) in &self.config {
            if !out.contains_key(key)
                && let Some(default) = &spec.default
            {
                out.insert(key.clone(), toml_to_json(default));
            }
        }
        Ok(out)
    }
}

/// Plugin names: lowercase ASCII letters, digits, `-` and `_`, starting with a letter, at most 64.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_lowercase()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{} must be 1-64 lowercase letters, digits, '-' or '_', starting with a letter",
            wire::quote(name)
        ))
    }
}

fn check_value(spec: &ConfigKey, value: &Value) -> Result<(), String> {
    let type_ok = match spec.ty {
        ValueType::Bool => value.is_boolean(),
        ValueType::Integer => value.is_i64() || value.is_u64(),
        ValueType::Number => value.is_number(),
        ValueType::String => value.is_string(),
        ValueType::StringList => value
            .as_array()
            .is_some_and(|a| a.iter().all(Value::is_string)),
        ValueType::IntegerList => value
            .as_array()
            .is_some_and(|a| a.iter().all(|v| v.is_i64() || v.is_u64())),
        ValueType::Table => value.is_object(),
    };
    if !type_ok {
        return Err(format!(
            "expected {}, got {}",
            type_name(spec.ty),
            wire::quote(&value.to_string())
        ));
    }
    if let Some(x) = value.as_f64() {
        if let Some(min) = spec.min
            && x < min
        {
            return Err(format!("{x} is below the minimum {min}"));
        }
        if let Some(max) = spec.max
            && x > max
        {
            return Err(format!("{x} is above the maximum {max}"));
        }
    }
    Ok(())
}

/// A TOML error without the excerpt of the file that `toml` quotes: the position and the reason,
/// bounded. The file may be one the caller could not read, and its lines may be any length.
fn parse_message(text: &str, e: &toml::de::Error) -> String {
    let reason = bounds::line(e.message(), limits::NAME);
    match e.span() {
        Some(span) => {
            let before = &text.as_bytes()[..span.start.min(text.len())];
            let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
            let column = before.len()
                - before
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |i| i + 1)
                + 1;
            format!("line {line}, column {column}: {reason}")
        }
        None => reason,
    }
}

fn type_name(t: ValueType) -> &'static str {
    match t {
        ValueType::Bool => "true or false",
        ValueType::Integer => "an integer",
        ValueType::Number => "a number",
        ValueType::String => "a string",
        ValueType::StringList => "a list of strings",
        ValueType::IntegerList => "a list of integers",
        ValueType::Table => "a table",
    }
}

/// TOML to JSON (datetimes become strings).
pub fn toml_to_json(v: &toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => {
            serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number)
        }
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => Value::Array(a.iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => Value::Object(
            t.iter()
                .map(|(k, v)| (k.clone(), toml_to_json(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests;
