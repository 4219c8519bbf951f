//! `org.moed.Moed1.Plugins`: the types its methods take and return, the options of `Install`
//! and `InstallFd`, and the client proxy. CONTRACT.md documents every member.

use std::collections::HashMap;

use zbus::{DeserializeDict, OwnedFd, OwnedVariant, SerializeDict, Type, Variant, proxy};

use crate::MoedError;
use crate::options::{
    OptionDict, boolean, invalid, string, string_array, strings, uint, unknown_key, unwrap_variant,
};

/// One plugin as `Plugins.List` and `Plugins.Info` describe it (`a{sv}`). Optional fields are
/// left out when absent.
#[derive(Debug, Clone, Default, PartialEq, SerializeDict, DeserializeDict, Type)]
#[zbus(signature = "dict")]
pub struct PluginInfo {
    pub name: String,
    /// The manifest's version; empty when the manifest could not be read.
    pub version: String,
    /// `gate`, `filter` or `retrieval`; empty when unknown.
    pub kind: String,
    pub description: String,
    /// The administrator's switch (`Enable`/`Disable`, or `plugins.NAME.enabled`).
    pub enabled: bool,
    /// Applied to every request without being named in the request's `plugins` option.
    pub always: bool,
    /// `active` (enabled and loaded), `disabled` (switched off), `failing` (disabled by the
    /// host after repeated failures: `disabled_reason` says why; `Enable` or `Reload` clears
    /// it), or `broken` (could not be loaded: `load_error` says why).
    pub status: String,
    pub disabled_reason: Option<String>,
    pub load_error: Option<String>,
    /// `installed` (over D-Bus, files in the state directory) or `configuration` (a path in
    /// `plugins.filters`: not removable or configurable over D-Bus).
    pub origin: String,
    /// Where its files are now.
    pub path: String,
    /// Where it was installed from: a path, or `fd` (`InstallFd`).
    pub source: String,
    /// Seconds since the Unix epoch; 0 for plugins of the configuration.
    pub installed_at: f64,
    /// What it was granted, in words: `alerts`, `kv=BYTES`, `source=LABEL` (one per label),
    /// `fewer_experts`, `clocks`.
    pub granted: Vec<String>,
    /// What its manifest asks for, in the same words.
    pub requested: Vec<String>,
    /// Its effective configuration as JSON (defaults filled in).
    pub config: String,
    /// Its configuration schema as JSON: key -> {type, default, description, min, max}.
    pub config_schema: String,
    /// Settings the configuration file fixes (`enabled`, `always`, `grant`, `config`): the
    /// matching calls are refused for them.
    pub pinned: Vec<String>,
    /// The `moed:plugin` interface version it was built against.
    pub interface: String,
    pub consecutive_failures: u32,
    pub calls: u64,
    pub failures: u64,
    pub mean_call_us: f64,
    /// Its compiled code came from the cache.
    pub compiled_from_cache: bool,
}

/// One entry of the alert audit log (`Plugins.RecentAlerts`, `a{sv}`).
#[derive(Debug, Clone, Default, PartialEq, SerializeDict, DeserializeDict, Type)]
#[zbus(signature = "dict")]
pub struct AlertRecord {
    /// Position in the log, increasing.
    pub seq: u64,
    /// Seconds since the Unix epoch.
    pub time: f64,
    /// The request it is about, when it came from one.
    pub request_id: Option<String>,
    pub plugin: String,
    /// `info`, `warning` or `error`.
    pub severity: String,
    pub code: String,
    pub message: String,
    /// The user id of the request's client, when known.
    pub uid: Option<u32>,
}

/// Limits on what a plugin is granted: each key set here narrows what the manifest asks for;
/// keys left out grant what it asks. Used by the `grant` option of `Install` and by
/// `[plugins.NAME] grant` in the configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrantLimit {
    pub alerts: Option<bool>,
    /// Largest key-value store, bytes.
    pub kv_quota: Option<u64>,
    /// The data source labels it may use (of those it asks for).
    pub sources: Option<Vec<String>>,
    pub fewer_experts: Option<bool>,
    pub clocks: Option<bool>,
}

/// The keys of [`GrantLimit`].
pub const GRANT_KEYS: &[&str] = &["alerts", "kv_quota", "sources", "fewer_experts", "clocks"];

/// Options of `Install` and `InstallFd`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InstallOptions {
    /// `enabled` (b, default true): enabled right away.
    pub enabled: Option<bool>,
    /// `always` (b): applied to every request; default: true for filters and retrieval, false
    /// for gates.
    pub always: Option<bool>,
    /// `grant` (a{sv}): narrows what the manifest asks for (keys as in [`GrantLimit`]).
    pub grant: GrantLimit,
    /// `config` (s): the plugin's configuration as a JSON object, checked against its schema.
    pub config: Option<String>,
    /// `replace` (b, default false): replace an installed plugin of the same name (its
    /// key-value store stays); otherwise that is `InvalidArgument`.
    pub replace: bool,
}

pub const INSTALL_OPTION_KEYS: &[&str] = &["enabled", "always", "grant", "config", "replace"];

impl InstallOptions {
    pub fn from_dict(dict: &OptionDict) -> Result<InstallOptions, MoedError> {
        let mut opts = InstallOptions::default();
        for (key, value) in dict {
            let value = unwrap_variant(value);
            match key.as_str() {
                "enabled" => opts.enabled = Some(boolean(key, value)?),
                "always" => opts.always = Some(boolean(key, value)?),
                "config" => opts.config = Some(string(key, value)?),
                "replace" => opts.replace = boolean(key, value)?,
                "grant" => opts.grant = grant_limit(value)?,
                _ => return Err(unknown_key(key, INSTALL_OPTION_KEYS)),
            }
        }
        Ok(opts)
    }

    /// The dictionary a client sends.
    pub fn to_dict(&self) -> OptionDict {
        let mut dict = OptionDict::new();
        for (key, value) in [("enabled", self.enabled), ("always", self.always)] {
            if let Some(v) = value {
                dict.insert(key.into(), v.into());
            }
        }
        if self.replace {
            dict.insert("replace".into(), true.into());
        }
        if let Some(config) = &self.config {
            dict.insert(
                "config".into(),
                OwnedVariant::from(zbus::Str::from(config.clone())),
            );
        }
        let grant = self.grant.to_dict();
        if !grant.is_empty()
            && let Ok(v) = OwnedVariant::try_from(Variant::from(grant))
        {
            dict.insert("grant".into(), v);
        }
        dict
    }
}

impl GrantLimit {
    pub fn is_empty(&self) -> bool {
        *self == GrantLimit::default()
    }

    fn to_dict(&self) -> HashMap<String, OwnedVariant> {
        let mut dict = HashMap::new();
        for (key, value) in [
            ("alerts", self.alerts),
            ("fewer_experts", self.fewer_experts),
            ("clocks", self.clocks),
        ] {
            if let Some(v) = value {
                dict.insert(key.to_string(), v.into());
            }
        }
        if let Some(q) = self.kv_quota {
            dict.insert("kv_quota".into(), q.into());
        }
        if let Some(s) = &self.sources {
            dict.insert("sources".into(), string_array(s));
        }
        dict
    }
}

fn grant_limit(value: &Variant<'_>) -> Result<GrantLimit, MoedError> {
    let Variant::Dict(dict) = value else {
        return Err(invalid(
            "grant",
            &format!(
                "expected a dictionary a{{sv}} of {}, got type '{}'",
                GRANT_KEYS.join(", "),
                value.value_signature()
            ),
        ));
    };
    let mut g = GrantLimit::default();
    for (k, v) in dict.iter() {
        let Variant::Str(k) = unwrap_variant(k) else {
            return Err(invalid("grant", "its keys must be strings"));
        };
        let key = format!("grant.{}", k.as_str());
        let v = unwrap_variant(v);
        match k.as_str() {
            "alerts" => g.alerts = Some(boolean(&key, v)?),
            "kv_quota" => g.kv_quota = Some(uint(&key, v, 0, u64::MAX)?),
            "sources" => g.sources = Some(strings(&key, v)?),
            "fewer_experts" => g.fewer_experts = Some(boolean(&key, v)?),
            "clocks" => g.clocks = Some(boolean(&key, v)?),
            other => {
                return Err(invalid(
                    &key,
                    &format!(
                        "unknown capability '{other}'; known: {}",
                        GRANT_KEYS.join(", ")
                    ),
                ));
            }
        }
    }
    Ok(g)
}

/// `org.moed.Moed1.Plugins` at `/org/moed/Moed1`.
#[proxy(
    interface = "org.moed.Moed1.Plugins",
    default_service = "org.moed.Moed1",
    default_path = "/org/moed/Moed1"
)]
pub trait Plugins {
    /// Every installed or configured plugin.
    async fn list(&self) -> Result<Vec<PluginInfo>, MoedError>;
    async fn info(&self, name: &str) -> Result<PluginInfo, MoedError>;
    /// Installs a built plugin the daemon reads from `path` (see CONTRACT.md).
    async fn install(
        &self,
        path: &str,
        options: HashMap<String, OwnedVariant>,
    ) -> Result<PluginInfo, MoedError>;
    /// Installs a plugin from its manifest text and its component passed as a file descriptor.
    async fn install_fd(
        &self,
        manifest: &str,
        wasm: OwnedFd,
        options: HashMap<String, OwnedVariant>,
    ) -> Result<PluginInfo, MoedError>;
    async fn enable(&self, name: &str) -> Result<PluginInfo, MoedError>;
    async fn disable(&self, name: &str) -> Result<PluginInfo, MoedError>;
    async fn reload(&self, name: &str) -> Result<PluginInfo, MoedError>;
    async fn configure(&self, name: &str, config_json: &str) -> Result<PluginInfo, MoedError>;
    async fn remove(&self, name: &str) -> Result<(), MoedError>;
    /// The newest `limit` entries of the alert audit log, oldest first.
    async fn recent_alerts(&self, limit: u32) -> Result<Vec<AlertRecord>, MoedError>;

    #[zbus(signal)]
    fn plugin_failed(
        &self,
        name: String,
        kind: String,
        message: String,
        disabled: bool,
    ) -> zbus::Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_options_round_trip_and_name_bad_keys() {
        let opts = InstallOptions {
            enabled: Some(false),
            always: None,
            grant: GrantLimit {
                alerts: Some(false),
                kv_quota: Some(4096),
                sources: Some(vec!["documents".into()]),
                ..GrantLimit::default()
            },
            config: Some("{\"email\": false}".into()),
            replace: true,
        };
        assert_eq!(
            InstallOptions::from_dict(&opts.to_dict()).expect("parse"),
            opts
        );

        let mut bad = OptionDict::new();
        bad.insert("enable".into(), true.into());
        let e = InstallOptions::from_dict(&bad).unwrap_err().message();
        assert!(e.contains("'enable'") && e.contains("enabled"), "{e}");

        let mut grant = HashMap::new();
        grant.insert("network".to_string(), OwnedVariant::from(true));
        let mut bad = OptionDict::new();
        bad.insert(
            "grant".into(),
            OwnedVariant::try_from(Variant::from(grant)).expect("variant"),
        );
        let e = InstallOptions::from_dict(&bad).unwrap_err().message();
        assert!(e.contains("grant.network"), "{e}");
    }
}
