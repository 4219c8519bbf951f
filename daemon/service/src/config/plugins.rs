//! `[plugins.NAME]`: the administrator's settings for one plugin, whether installed over D-Bus or
//! listed in `plugins.filters`. Each key set here fixes that setting (the matching D-Bus call is
//! refused and names the key): `enabled`, `always`, `grant` (narrows what the plugin's manifest
//! asks for) and `config` (the plugin's configuration, checked against its schema when it loads).
//! Settings for a plugin that is not installed apply once it is.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};

use super::ConfigError;
use super::checks::{invalid, parse_bytes};

/// The keys of a `[plugins.NAME]` table.
pub const SETTINGS_KEYS: &[&str] = &["enabled", "always", "grant", "config"];
/// The keys of `[plugins.NAME.grant]`.
pub const GRANT_KEYS: &[&str] = &["alerts", "kv_quota", "sources", "fewer_experts", "clocks"];

/// `[plugins.NAME]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PluginSettings {
    /// `enabled`: on or off, fixed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// `always`: applied to every request without being named, fixed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub always: Option<bool>,
    /// `grant`: limits on what the plugin is granted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant: Option<GrantSettings>,
    /// `config`: the plugin's configuration, fixed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<Map<String, Value>>,
}

/// `[plugins.NAME.grant]`, and the `grant` of an installation: each key set narrows what the
/// manifest asks for; a key left out grants what it asks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GrantSettings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alerts: Option<bool>,
    /// Bytes (an integer, or a string with a unit such as "64KiB").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kv_quota: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sources: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fewer_experts: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clocks: Option<bool>,
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a table",
    }
}

fn boolean(key: &str, v: &Value) -> Result<bool, ConfigError> {
    match v {
        Value::Bool(b) => Ok(*b),
        // Environment variables arrive as text.
        Value::String(s) if s == "true" => Ok(true),
        Value::String(s) if s == "false" => Ok(false),
        other => Err(invalid(
            key,
            format!("expected true or false, got {}", kind(other)),
        )),
    }
}

/// Checks the tables of `[plugins]` other than `filters`: each is `[plugins.NAME]`.
pub(super) fn validate(
    raw: BTreeMap<String, Value>,
) -> Result<BTreeMap<String, PluginSettings>, ConfigError> {
    let mut out = BTreeMap::new();
    for (name, table) in raw {
        let key = format!("plugins.{name}");
        let Value::Object(table) = table else {
            return Err(invalid(
                &key,
                format!(
                    "expected a table [plugins.{name}] of a plugin's settings ({}), or the list `filters`",
                    SETTINGS_KEYS.join(", ")
                ),
            ));
        };
        moed_plugins::manifest::check_name(&name)
            .map_err(|m| invalid(&key, format!("not a plugin name: {m}")))?;
        let mut s = PluginSettings::default();
        for (k, v) in table {
            let key = format!("plugins.{name}.{k}");
            match k.as_str() {
                "enabled" => s.enabled = Some(boolean(&key, &v)?),
                "always" => s.always = Some(boolean(&key, &v)?),
                "grant" => s.grant = Some(grant(&key, v)?),
                "config" => match v {
                    Value::Object(map) => s.config = Some(map),
                    other => {
                        return Err(invalid(
                            &key,
                            format!(
                                "expected a table of the plugin's configuration keys, got {}",
                                kind(&other)
                            ),
                        ));
                    }
                },
                _ => {
                    return Err(invalid(
                        &key,
                        format!("unknown key; expected {}", SETTINGS_KEYS.join(", ")),
                    ));
                }
            }
        }
        out.insert(name, s);
    }
    Ok(out)
}

fn grant(key: &str, v: Value) -> Result<GrantSettings, ConfigError> {
    let Value::Object(table) = v else {
        return Err(invalid(
            key,
            format!(
                "expected a table of capabilities ({}), got {}",
                GRANT_KEYS.join(", "),
                kind(&v)
            ),
        ));
    };
    let mut g = GrantSettings::default();
    for (k, v) in table {
        let key = format!("{key}.{k}");
        match k.as_str() {
            "alerts" => g.alerts = Some(boolean(&key, &v)?),
            "fewer_experts" => g.fewer_experts = Some(boolean(&key, &v)?),
            "clocks" => g.clocks = Some(boolean(&key, &v)?),
            "kv_quota" => {
                let bytes = match &v {
                    Value::Number(n) => n.as_u64(),
                    Value::String(s) => parse_bytes(s),
                    _ => None,
                };
                g.kv_quota = Some(bytes.ok_or_else(|| {
                    invalid(
                        &key,
                        format!("{v} is not a byte count (examples: 65536, \"64KiB\")"),
                    )
                })?);
            }
            "sources" => {
                let labels = match &v {
                    Value::Array(items) => items
                        .iter()
                        .map(|i| i.as_str().map(str::to_string))
                        .collect::<Option<Vec<_>>>(),
                    Value::String(s) if s.is_empty() => Some(Vec::new()),
                    Value::String(s) => Some(s.split(',').map(|l| l.trim().to_string()).collect()),
                    _ => None,
                };
                g.sources = Some(labels.ok_or_else(|| {
                    invalid(&key, format!("expected a list of labels, got {}", kind(&v)))
                })?);
            }
            _ => {
                return Err(invalid(
                    &key,
                    format!("unknown capability; expected {}", GRANT_KEYS.join(", ")),
                ));
            }
        }
    }
    Ok(g)
}

/// `[plugins.NAME]` tables for `moed check-config`.
pub(super) fn render(settings: &BTreeMap<String, PluginSettings>, out: &mut String) {
    for (name, s) in settings {
        let mut table = toml::Table::new();
        if let Some(v) = s.enabled {
            table.insert("enabled".into(), v.into());
        }
        if let Some(v) = s.always {
            table.insert("always".into(), v.into());
        }
        if let Some(g) = &s.grant
            && let Ok(toml::Value::Table(t)) = toml::Value::try_from(g)
        {
            table.insert("grant".into(), toml::Value::Table(t));
        }
        if let Some(c) = &s.config
            && let Ok(v) = toml::Value::try_from(c)
        {
            table.insert("config".into(), v);
        }
        let mut doc = toml::Table::new();
        doc.insert(name.clone(), toml::Value::Table(table));
        let mut wrapped = toml::Table::new();
        wrapped.insert("plugins".into(), toml::Value::Table(doc));
        if let Ok(text) = toml::to_string(&wrapped) {
            out.push('\n');
            out.push_str(&text);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use crate::config::{Config, ConfigError};

    fn load(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let main = dir.path().join("moed.toml");
        std::fs::write(&main, text).expect("write");
        let env: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::load_with_env(Some(&main), Some(env))
    }

    fn key_of(text: &str) -> String {
        match load(text, &[]) {
            Err(
                ConfigError::Invalid { key, message } | ConfigError::InvalidAt { key, message, .. },
            ) => {
                format!("{key}: {message}")
            }
            other => panic!("expected an invalid key for {text:?}, got {other:?}"),
        }
    }

    #[test]
    fn plugin_tables_are_parsed_and_rendered() {
        let c = load(
            "[plugins]\nfilters = [\"/p/input-check.wasm\"]\n\n[plugins.pii-redact]\nenabled = false\nalways = true\n\n[plugins.pii-redact.grant]\nalerts = false\nkv_quota = \"64KiB\"\n\n[plugins.pii-redact.config]\nemail = false\nwindow = 128\n\n[plugins.topk]\nalways = true\n",
            &[],
        )
        .expect("valid");
        assert_eq!(c.plugins.filters.len(), 1);
        let s = &c.plugins.settings["pii-redact"];
        assert_eq!(s.enabled, Some(false));
        assert_eq!(s.always, Some(true));
        let g = s.grant.as_ref().expect("grant");
        assert_eq!(
            (g.alerts, g.kv_quota, g.clocks),
            (Some(false), Some(65536), None)
        );
        let cfg = s.config.as_ref().expect("config");
        assert_eq!(cfg["email"], serde_json::Value::Bool(false));
        assert_eq!(cfg["window"], serde_json::Value::from(128));
        assert_eq!(c.plugins.settings["topk"].always, Some(true));
        let text = c.to_toml();
        assert!(text.contains("[plugins.pii-redact]"), "{text}");
        assert!(text.contains("kv_quota = 65536"), "{text}");
        // What check-config prints reads back as the same configuration.
        let again = load(&text, &[]).expect("rendered config loads");
        assert_eq!(again.plugins, c.plugins);
    }

    #[test]
    fn bad_plugin_settings_name_the_key() {
        for (text, key) in [
            (
                "[plugins.pii-redact]\nenable = true\n",
                "plugins.pii-redact.enable",
            ),
            (
                "[plugins.pii-redact]\nenabled = 3\n",
                "plugins.pii-redact.enabled",
            ),
            (
                "[plugins.pii-redact]\nconfig = 3\n",
                "plugins.pii-redact.config",
            ),
            (
                "[plugins.pii-redact.grant]\nnetwork = true\n",
                "plugins.pii-redact.grant.network",
            ),
            (
                "[plugins.pii-redact.grant]\nkv_quota = \"lots\"\n",
                "plugins.pii-redact.grant.kv_quota",
            ),
            (
                "[plugins.pii-redact.grant]\nsources = 5\n",
                "plugins.pii-redact.grant.sources",
            ),
            ("[plugins.PII]\nenabled = true\n", "plugins.PII"),
            ("[plugins]\nfilterz = []\n", "plugins.filterz"),
        ] {
            let got = key_of(text);
            assert!(got.starts_with(&format!("{key}:")), "{text:?} -> {got}");
        }
    }

    #[test]
    fn plugin_settings_from_the_environment() {
        let c = load("", &[("MOED_PLUGINS__TOPK__ALWAYS", "true")]).expect("env");
        assert_eq!(c.plugins.settings["topk"].always, Some(true));
    }
}
