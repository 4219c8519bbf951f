//! One module per verb.

pub mod alert_log;
pub mod alerts;
pub mod assets;
pub mod chat;
pub mod config;
pub mod experts;
pub mod generate;
pub mod import;
pub mod knowledge;
pub mod models;
pub mod plugins;
pub mod score;
pub mod status;

use moed_dbus::proxy::{EngineProxy, ModelsProxy};
use zbus::proxy::CacheProperties;

use crate::bus::App;
use crate::error::CtlError;

/// Proxies that read properties from the daemon on each access (a short-lived client gains
/// nothing from a cache, and must see the value a call just changed).
pub async fn engine(app: &App) -> Result<EngineProxy<'static>, CtlError> {
    EngineProxy::builder(&app.conn)
        .cache_properties(CacheProperties::No)
        .build()
        .await
        .map_err(|e| app.fail_zbus(e))
}

pub async fn models(app: &App) -> Result<ModelsProxy<'static>, CtlError> {
    ModelsProxy::builder(&app.conn)
        .cache_properties(CacheProperties::No)
        .build()
        .await
        .map_err(|e| app.fail_zbus(e))
}
