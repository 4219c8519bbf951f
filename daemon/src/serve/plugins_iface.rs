//! `org.moed.Moed1.Plugins`: listing plugins (any allowed user), installing from a path or a
//! passed file descriptor, enabling, disabling, reloading, configuring and removing them, and
//! reading the alert audit log (polkit action `org.moed.manage-plugins`); the `PluginFailed`
//! signal. The work runs on the blocking pool (files, compilation, flushes).

use std::sync::Arc;

use moed_dbus::options::OptionDict;
use moed_dbus::wire::{ToWire, WireStr};
use moed_dbus::{AlertRecord, InstallOptions, MoedError, PluginInfo};
use zbus::interface;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;

use moed_service::plugin_manager::Package;
use moed_service::{Service, ServiceError};

use super::auth::Action;
use super::daemon::Daemon;
use super::error::wire_error;
use super::plugin_wire;
use crate::state::ALERT_LOG_MAX;

pub struct PluginsIface {
    pub daemon: Arc<Daemon>,
}

impl PluginsIface {
    /// Runs `f` on the blocking pool. Every reply of this interface comes through here and
    /// passes the outgoing-string boundary on its way out: plugin names, descriptions and
    /// failure messages come from third-party manifests and code.
    async fn blocking<T: ToWire + Send + 'static>(
        &self,
        what: &'static str,
        f: impl FnOnce(&Service) -> Result<T, ServiceError> + Send + 'static,
    ) -> Result<T, MoedError> {
        let service = self.daemon.service.clone();
        tokio::task::spawn_blocking(move || f(&service).map(ToWire::to_wire).map_err(wire_error))
            .await
            .map_err(|e| MoedError::Failed(format!("{what}: the worker thread failed: {e}")))?
    }
}

#[interface(name = "org.moed.Moed1.Plugins")]
impl PluginsIface {
    /// Every installed plugin and every plugin of `plugins.filters`, by name.
    #[zbus(out_args("plugins"))]
    async fn list(&self, #[zbus(header)] header: Header<'_>) -> Result<Vec<PluginInfo>, MoedError> {
        self.daemon.user(&header).await?;
        self.blocking("listing plugins", |d| {
            Ok(d.plugins
                .list()
                .into_iter()
                .map(plugin_wire::info)
                .collect())
        })
        .await
    }

    /// One plugin's state, grant, configuration and call statistics.
    #[zbus(out_args("info"))]
    async fn info(
        &self,
        name: String,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<PluginInfo, MoedError> {
        self.daemon.user(&header).await?;
        self.blocking("reading plugin info", move |d| {
            d.plugins.info(&name).map(plugin_wire::info)
        })
        .await
    }

    /// Installs the built plugin at `path`, read by the daemon (`NAME.wasm` with `NAME.toml`
    /// beside it, or a directory with `plugin.toml` and one `.wasm`).
    #[zbus(out_args("info"))]
    async fn install(
        &self,
        path: String,
        options: OptionDict,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<PluginInfo, MoedError> {
        let options = plugin_wire::install_options(InstallOptions::from_dict(&options)?);
        let caller = self.daemon.admin(&header, Action::ManagePlugins).await?;
        // The path is read with the caller's permissions (CONTRACT.md, Limits).
        let who = caller.identity();
        self.blocking("installing a plugin", move |d| {
            let pkg = Package::from_path(std::path::Path::new(&path), who.as_ref())?;
            d.plugins.install(pkg, &options).map(plugin_wire::info)
        })
        .await
    }

    /// Installs a plugin from its manifest (`plugin.toml` text) and its component, passed as a
    /// file descriptor the daemon reads to its end.
    #[zbus(out_args("info"))]
    async fn install_fd(
        &self,
        manifest: String,
        wasm: zbus::OwnedFd,
        options: OptionDict,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<PluginInfo, MoedError> {
        let options = plugin_wire::install_options(InstallOptions::from_dict(&options)?);
        self.daemon.admin(&header, Action::ManagePlugins).await?;
        let fd = std::os::fd::OwnedFd::from(wasm);
        self.blocking("installing a plugin", move |d| {
            let pkg = Package::from_fd(manifest, fd)?;
            d.plugins.install(pkg, &options).map(plugin_wire::info)
        })
        .await
    }

    /// Switches a plugin on (clearing a disable after repeated failures).
    #[zbus(out_args("info"))]
    async fn enable(
        &self,
        name: String,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<PluginInfo, MoedError> {
        self.daemon.admin(&header, Action::ManagePlugins).await?;
        self.blocking("enabling a plugin", move |d| {
            d.plugins.set_enabled(&name, true).map(plugin_wire::info)
        })
        .await
    }

    /// Switches a plugin off: requests no longer go through it.
    #[zbus(out_args("info"))]
    async fn disable(
        &self,
        name: String,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<PluginInfo, MoedError> {
        self.daemon.admin(&header, Action::ManagePlugins).await?;
        self.blocking("disabling a plugin", move |d| {
            d.plugins.set_enabled(&name, false).map(plugin_wire::info)
        })
        .await
    }

    /// Loads a plugin's files again and swaps the new code in; requests in flight finish on the
    /// old code. Clears a disable after repeated failures.
    #[zbus(out_args("info"))]
    async fn reload(
        &self,
        name: String,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<PluginInfo, MoedError> {
        self.daemon.admin(&header, Action::ManagePlugins).await?;
        self.blocking("reloading a plugin", move |d| {
            d.plugins.reload(&name).map(plugin_wire::info)
        })
        .await
    }

    /// Replaces an installed plugin's configuration with `config_json` (a JSON object, checked
    /// against the plugin's schema) and reloads it.
    #[zbus(out_args("info"))]
    async fn configure(
        &self,
        name: String,
        config_json: String,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<PluginInfo, MoedError> {
        self.daemon.admin(&header, Action::ManagePlugins).await?;
        self.blocking("configuring a plugin", move |d| {
            d.plugins
                .configure(&name, &config_json)
                .map(plugin_wire::info)
        })
        .await
    }

    /// Uninstalls a plugin: its files, record and key-value store.
    async fn remove(
        &self,
        name: String,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(), MoedError> {
        self.daemon.admin(&header, Action::ManagePlugins).await?;
        self.blocking("removing a plugin", move |d| d.plugins.remove(&name))
            .await
    }

    /// The newest `limit` entries of the alert audit log (0: all it keeps), oldest first.
    #[zbus(out_args("alerts"))]
    async fn recent_alerts(
        &self,
        limit: u32,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<Vec<AlertRecord>, MoedError> {
        self.daemon.admin(&header, Action::ManagePlugins).await?;
        let limit = if limit == 0 {
            ALERT_LOG_MAX as usize
        } else {
            limit as usize
        };
        self.blocking("reading the alert log", move |d| {
            let entries = d
                .state
                .recent_alerts(limit)
                .map_err(|e| ServiceError::Failed(format!("the alert log: {e}")))?;
            Ok(entries
                .into_iter()
                .map(|e| AlertRecord {
                    seq: e.seq,
                    time: e.time,
                    request_id: e.request_id,
                    plugin: e.plugin,
                    severity: e.severity,
                    code: e.code,
                    message: e.message,
                    uid: e.uid,
                })
                .collect())
        })
        .await
    }

    /// A plugin failed a call (at most one signal per plugin per second), or was disabled after
    /// repeated failures (`disabled`: always signalled).
    #[zbus(signal)]
    pub async fn plugin_failed(
        emitter: &SignalEmitter<'_>,
        name: &WireStr,
        kind: &WireStr,
        message: &WireStr,
        disabled: bool,
    ) -> zbus::Result<()>;
}
