//! How a plugin's effective settings follow from what was recorded at installation (or the
//! defaults of a `plugins.filters` entry) and what the configuration file fixes: the grant is
//! narrowed, never widened; `enabled`, `always` and `config` from the file win.

use moed_plugins::{Grant, Kind, Manifest};
use serde_json::{Map, Value};

use crate::ServiceError;
use crate::config::{GrantSettings, PluginSettings};

/// Filters and retrieval apply to every request unless told otherwise; a gate replaces the
/// model's routing, so it applies only when named (or made the default).
pub fn default_always(kind: Kind) -> bool {
    kind != Kind::Gate
}

/// `base` narrowed by `limit`: each capability the limit sets is at most what it allows.
pub fn narrow(base: &Grant, limit: &GrantSettings) -> Grant {
    Grant {
        alerts: base.alerts && limit.alerts.unwrap_or(true),
        kv_quota: match (base.kv_quota, limit.kv_quota) {
            (Some(b), Some(l)) => Some(b.min(l)),
            (b, None) => b,
            (None, Some(_)) => None,
        },
        sources: match &limit.sources {
            Some(allowed) => base
                .sources
                .iter()
                .filter(|s| allowed.contains(s))
                .cloned()
                .collect(),
            None => base.sources.clone(),
        },
        fewer_experts: base.fewer_experts && limit.fewer_experts.unwrap_or(true),
        clocks: base.clocks && limit.clocks.unwrap_or(true),
    }
}

/// The grant of the `grant` option of `Install`: what the manifest asks for, narrowed. Asking
/// for more than the manifest does is refused, naming the capability.
pub fn grant_option(manifest: &Manifest, limit: &GrantSettings) -> Result<Grant, ServiceError> {
    let requested = Grant::as_requested(manifest);
    let refuse = |key: &str, what: String| {
        ServiceError::InvalidArgument(format!(
            "option 'grant.{key}': {what}; a grant can only narrow what the manifest of '{}' asks for",
            manifest.name
        ))
    };
    if limit.alerts == Some(true) && !requested.alerts {
        return Err(refuse(
            "alerts",
            "the plugin does not ask for alerts".into(),
        ));
    }
    if limit.fewer_experts == Some(true) && !requested.fewer_experts {
        return Err(refuse(
            "fewer_experts",
            "the plugin does not ask for fewer_experts".into(),
        ));
    }
    if limit.clocks == Some(true) && !requested.clocks {
        return Err(refuse(
            "clocks",
            "the plugin does not ask for clocks".into(),
        ));
    }
    if let Some(q) = limit.kv_quota {
        match requested.kv_quota {
            None => {
                return Err(refuse(
                    "kv_quota",
                    "the plugin does not ask for a key-value store".into(),
                ));
            }
            Some(asked) if q > asked => {
                return Err(refuse(
                    "kv_quota",
                    format!("{q} bytes is more than the {asked} it asks for"),
                ));
            }
            _ => {}
        }
    }
    if let Some(labels) = &limit.sources
        && let Some(extra) = labels.iter().find(|l| !requested.sources.contains(l))
    {
        return Err(refuse(
            "sources",
            format!("the plugin does not ask for data source '{extra}'"),
        ));
    }
    Ok(narrow(&requested, limit))
}

/// A grant in words, for `PluginInfo.granted`/`requested`: `alerts`, `kv=BYTES`,
/// `source=LABEL`, `fewer_experts`, `clocks`.
pub fn grant_words(g: &Grant) -> Vec<String> {
    let mut out = Vec::new();
    if g.alerts {
        out.push("alerts".to_string());
    }
    if let Some(q) = g.kv_quota {
        out.push(format!("kv={q}"));
    }
    out.extend(g.sources.iter().map(|s| format!("source={s}")));
    if g.fewer_experts {
        out.push("fewer_experts".to_string());
    }
    if g.clocks {
        out.push("clocks".to_string());
    }
    out
}

/// What the administrator recorded for a plugin (at installation and with later calls), before
/// the configuration file's settings apply.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub enabled: bool,
    pub always: Option<bool>,
    pub grant: Grant,
    pub config: Map<String, Value>,
}

/// The settings a plugin runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Effective {
    pub enabled: bool,
    pub always: bool,
    pub grant: Grant,
    pub config: Map<String, Value>,
}

pub fn effective(kind: Kind, recorded: &Recorded, file: Option<&PluginSettings>) -> Effective {
    let file = file.cloned().unwrap_or_default();
    Effective {
        enabled: file.enabled.unwrap_or(recorded.enabled),
        always: file
            .always
            .or(recorded.always)
            .unwrap_or_else(|| default_always(kind)),
        grant: match &file.grant {
            Some(g) => narrow(&recorded.grant, g),
            None => recorded.grant.clone(),
        },
        config: file.config.unwrap_or_else(|| recorded.config.clone()),
    }
}

/// The settings the configuration file fixes, by name.
pub fn pinned(file: Option<&PluginSettings>) -> Vec<String> {
    let Some(f) = file else { return Vec::new() };
    [
        ("enabled", f.enabled.is_some()),
        ("always", f.always.is_some()),
        ("grant", f.grant.is_some()),
        ("config", f.config.is_some()),
    ]
    .into_iter()
    .filter(|(_, set)| *set)
    .map(|(k, _)| k.to_string())
    .collect()
}

/// `InvalidArgument` when the configuration file fixes `setting` of `name`.
pub fn check_not_pinned(
    name: &str,
    file: Option<&PluginSettings>,
    setting: &str,
) -> Result<(), ServiceError> {
    if pinned(file).iter().any(|p| p == setting) {
        return Err(ServiceError::InvalidArgument(format!(
            "the configuration file fixes plugins.{name}.{setting}; change it there and reload the configuration (systemctl reload moed)"
        )));
    }
    Ok(())
}

/// A JSON object from a client (`Configure`, option `config`).
pub fn json_object(what: &str, text: &str) -> Result<Map<String, Value>, ServiceError> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(ServiceError::InvalidArgument(format!(
            "{what}: expected a JSON object of configuration keys, got {other}"
        ))),
        Err(e) => Err(ServiceError::InvalidArgument(format!(
            "{what}: not valid JSON: {e}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest::parse(
            "[plugin]\nname = \"r\"\nversion = \"0.1.0\"\nkind = \"retrieval\"\n[capabilities]\nalerts = true\nkv = 4096\nsources = [\"a\", \"b\"]\n",
        )
        .expect("manifest")
    }

    #[test]
    fn grants_only_narrow() {
        let m = manifest();
        let all = grant_option(&m, &GrantSettings::default()).expect("as requested");
        assert_eq!(all, Grant::as_requested(&m));
        let narrowed = grant_option(
            &m,
            &GrantSettings {
                alerts: Some(false),
                kv_quota: Some(1024),
                sources: Some(vec!["b".into()]),
                ..GrantSettings::default()
            },
        )
        .expect("narrowed");
        assert_eq!(grant_words(&narrowed), ["kv=1024", "source=b"]);
        for (limit, key) in [
            (
                GrantSettings {
                    clocks: Some(true),
                    ..GrantSettings::default()
                },
                "grant.clocks",
            ),
            (
                GrantSettings {
                    kv_quota: Some(1 << 20),
                    ..GrantSettings::default()
                },
                "grant.kv_quota",
            ),
            (
                GrantSettings {
                    sources: Some(vec!["c".into()]),
                    ..GrantSettings::default()
                },
                "grant.sources",
            ),
        ] {
            let e = grant_option(&m, &limit).unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
        }
    }

    #[test]
    fn the_configuration_file_wins_and_narrows() {
        let m = manifest();
        let recorded = Recorded {
            enabled: false,
            always: None,
            grant: Grant::as_requested(&m),
            config: Map::from_iter([("x".to_string(), Value::from(1))]),
        };
        let plain = effective(Kind::Retrieval, &recorded, None);
        assert!(!plain.enabled && plain.always);
        assert_eq!(plain.grant, recorded.grant);
        assert!(!effective(Kind::Gate, &recorded, None).always);

        let file = PluginSettings {
            enabled: Some(true),
            always: Some(false),
            grant: Some(GrantSettings {
                // A file limit above what was granted does not widen it.
                kv_quota: Some(1 << 30),
                clocks: Some(true),
                sources: Some(vec!["a".into()]),
                ..GrantSettings::default()
            }),
            config: Some(Map::new()),
        };
        let e = effective(Kind::Retrieval, &recorded, Some(&file));
        assert!(e.enabled && !e.always);
        assert_eq!(grant_words(&e.grant), ["alerts", "kv=4096", "source=a"]);
        assert!(e.config.is_empty());
        assert_eq!(
            pinned(Some(&file)),
            ["enabled", "always", "grant", "config"]
        );
        let err = check_not_pinned("r", Some(&file), "config")
            .unwrap_err()
            .to_string();
        assert!(err.contains("plugins.r.config"), "{err}");
    }
}
