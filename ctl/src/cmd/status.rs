//! `moectl status`: the daemon's state, active model and load, from the Engine and Models
//! properties.

use moed_dbus::wire::terminal;
use serde_json::json;

use crate::bus::App;
use crate::error::CtlError;
use crate::style::{out_json_pretty, outln};

pub async fn run(app: &App) -> Result<(), CtlError> {
    let engine = super::engine(app).await?;
    let models = super::models(app).await?;
    let fail = |e| app.fail_zbus(e);
    let owner = zbus::fdo::DBusProxy::new(&app.conn)
        .await
        .map_err(fail)?
        .get_name_owner(moed_dbus::BUS_NAME.try_into().map_err(fail)?)
        .await
        .map_err(|e| app.fail_zbus(e.into()))?;
    let version = engine.version().await.map_err(fail)?;
    let state = engine.state().await.map_err(fail)?;
    let model = engine.model().await.map_err(fail)?;
    let provider = engine.execution_provider().await.map_err(fail)?;
    let providers = engine.providers().await.map_err(fail)?;
    let active = engine.active_requests().await.map_err(fail)?;
    let queued = engine.queued_requests().await.map_err(fail)?;
    let max_concurrent = engine.max_concurrent().await.map_err(fail)?;
    let queue_depth = engine.queue_depth().await.map_err(fail)?;
    let loaded = models.loaded_models().await.map_err(fail)?;
    let dirs = models.model_directories().await.map_err(fail)?;

    if app.json {
        return out_json_pretty(&json!({
            "bus": app.bus.as_arg(),
            "unique_name": owner.as_str(),
            "version": version,
            "state": state,
            "model": model,
            "execution_provider": provider,
            "providers": providers
                .iter()
                .map(|(name, usable, lacks)| json!({
                    "name": name,
                    "usable": usable,
                    "lacks": (!usable).then_some(lacks),
                }))
                .collect::<Vec<_>>(),
            "active_requests": active,
            "queued_requests": queued,
            "max_concurrent": max_concurrent,
            "queue_depth": queue_depth,
            "loaded_models": loaded,
            "model_directories": dirs,
        }));
    }
    // A model's name is its package's directory name, the provider from its runtime.
    let (model, provider) = (terminal(&model), terminal(&provider));
    let s = &app.out;
    let state_text = match state.as_str() {
        "ready" => s.green(&state),
        "loading" | "no-model" => s.yellow(&state),
        _ => s.red(&state),
    };
    let model_text = if model.is_empty() {
        s.dim("none loaded (moectl models load NAME)")
    } else {
        format!("{} ({provider})", s.bold(&model))
    };
    let lines = [
        format!(
            "{} {version} on {} ({})",
            s.bold("moed"),
            app.bus,
            owner.as_str()
        ),
        format!("  state:              {state_text}"),
        format!("  active model:       {model_text}"),
        format!("  loaded models:      {}", list_or_none(&loaded)),
        format!(
            "  requests:           {active} running, {queued} queued (limits: {max_concurrent} running at once, {queue_depth} in the queue)"
        ),
        format!("  model directories:  {}", list_or_none(&dirs)),
        provider_lines(&providers, &provider),
    ];
    outln(&lines.join("\n"))
}

/// One line per execution provider: in use, usable, or what it lacks.
fn provider_lines(providers: &[(String, bool, String)], in_use: &str) -> String {
    if providers.is_empty() {
        return "  providers:          unknown (moed found no ONNX Runtime library)".into();
    }
    providers
        .iter()
        .enumerate()
        .map(|(i, (name, usable, lacks))| {
            let label = if i == 0 {
                "  providers:          "
            } else {
                "                      "
            };
            let verdict = if name == in_use {
                "in use".to_string()
            } else if *usable {
                "usable (its libraries are here; a GPU is still needed)".to_string()
            } else {
                format!("unusable: {}", terminal(lacks))
            };
            format!("{label}{}: {verdict}", terminal(name))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        terminal(&items.join(", ")).into_owned()
    }
}
