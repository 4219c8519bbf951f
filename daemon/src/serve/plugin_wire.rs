//! The D-Bus shapes of the plugin manager: `PluginInfo` (`Plugins.List`, `Plugins.Info` and the
//! replies of the managing calls) built from what `moed_service::plugin_manager` reports, and
//! the options of `Install`/`InstallFd` turned into the manager's.

use moed_dbus::PluginInfo;
use moed_dbus::plugins::GrantLimit;
use moed_service::config::GrantSettings;
use moed_service::plugin_manager::settings::grant_words;
use moed_service::plugin_manager::{InstallOptions, PluginDetails, PluginOrigin, PluginState};

/// `PluginInfo.status`.
fn status(state: PluginState) -> &'static str {
    match state {
        PluginState::Active => "active",
        PluginState::Disabled => "disabled",
        PluginState::Failing => "failing",
        PluginState::Broken => "broken",
    }
}

/// One plugin as `Plugins.List` and `Plugins.Info` describe it.
pub fn info(d: PluginDetails) -> PluginInfo {
    let requested = d.requested().map(|g| grant_words(&g)).unwrap_or_default();
    let path = d.path.display().to_string();
    let (origin, source, installed_at) = match d.origin {
        PluginOrigin::Installed {
            source,
            installed_at,
        } => ("installed", source, installed_at),
        PluginOrigin::Configuration => ("configuration", path.clone(), 0.0),
    };
    let m = d.manifest.as_ref();
    let host = d.host.as_ref();
    PluginInfo {
        name: d.name,
        version: m.map(|m| m.version.clone()).unwrap_or_default(),
        kind: m.map(|m| m.kind.to_string()).unwrap_or_default(),
        description: m.map(|m| m.description.clone()).unwrap_or_default(),
        enabled: d.enabled,
        always: d.always,
        status: status(d.state).to_string(),
        disabled_reason: host.and_then(|s| s.disabled_reason.clone()),
        load_error: d.load_error,
        origin: origin.to_string(),
        path,
        source,
        installed_at,
        granted: d.granted.as_ref().map(grant_words).unwrap_or_default(),
        requested,
        config: d
            .config
            .map_or_else(|| "{}".into(), |c| serde_json::Value::Object(c).to_string()),
        config_schema: m
            .and_then(|m| serde_json::to_string(&m.config).ok())
            .unwrap_or_else(|| "{}".into()),
        pinned: d.pinned,
        interface: host.map(|s| s.interface.clone()).unwrap_or_default(),
        consecutive_failures: host.map_or(0, |s| s.consecutive_failures),
        calls: host.map_or(0, |s| s.calls),
        failures: host.map_or(0, |s| s.failures),
        mean_call_us: host.map_or(0.0, |s| s.mean_call_us),
        compiled_from_cache: host.is_some_and(|s| s.compiled_from_cache),
    }
}

/// The manager's form of the options of `Install` and `InstallFd`.
pub fn install_options(o: moed_dbus::InstallOptions) -> InstallOptions {
    InstallOptions {
        enabled: o.enabled,
        always: o.always,
        grant: grant_limit(o.grant),
        config: o.config,
        replace: o.replace,
    }
}

/// Option `grant`: the same limits as `[plugins.NAME.grant]` of the configuration.
fn grant_limit(g: GrantLimit) -> GrantSettings {
    GrantSettings {
        alerts: g.alerts,
        kv_quota: g.kv_quota,
        sources: g.sources,
        fewer_experts: g.fewer_experts,
        clocks: g.clocks,
    }
}
