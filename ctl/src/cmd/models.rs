//! `moectl models list|info|load|unload|switch` over `org.moed.Moed1.Models`. Managing calls
//! allow interactive authorization, so polkit may ask for a password through the user's agent.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use moed_dbus::actions::MANAGE_MODELS;
use moed_dbus::proxy::ModelsProxy;
use moed_dbus::wire::{ToWire, terminal};
use serde_json::json;
use zbus::proxy::MethodFlags;

use crate::bus::App;
use crate::cli::ModelsCommand;
use crate::error::CtlError;
use crate::style::{out_json_pretty, outln};

pub async fn run(app: &App, command: ModelsCommand) -> Result<(), CtlError> {
    let models = super::models(app).await?;
    match command {
        ModelsCommand::List => list(app, &models).await,
        ModelsCommand::Info { name } => info(app, &models, &name).await,
        ModelsCommand::Load { name } => manage(app, &models, "Load", &name).await,
        ModelsCommand::Unload { name } => manage(app, &models, "Unload", &name).await,
        ModelsCommand::Switch { name } => manage(app, &models, "Switch", &name).await,
        // Run by lib.rs before any bus connection: it needs no daemon.
        ModelsCommand::Import(_) => Ok(()),
    }
}

async fn list(app: &App, models: &ModelsProxy<'_>) -> Result<(), CtlError> {
    let list = models.list().await.map_err(|e| app.fail(e, None))?;
    if app.json {
        let entries: Vec<_> = list.iter().map(crate::json::model_summary).collect();
        return out_json_pretty(&json!(entries));
    }
    if list.is_empty() {
        let dirs = models.model_directories().await.unwrap_or_default();
        return outln(&format!(
            "no model packages in {}",
            if dirs.is_empty() {
                "the model directories".to_string()
            } else {
                moed_dbus::wire::terminal(&dirs.join(", ")).into_owned()
            }
        ));
    }
    // Names, architectures and errors come from model packages' manifests.
    let list = list.for_terminal();
    let s = &app.out;
    let name_width = list.iter().map(|m| m.name.len()).max().unwrap_or(4).max(4);
    let arch_width = list
        .iter()
        .map(|m| m.architecture.len())
        .max()
        .unwrap_or(12)
        .max(12);
    let mut lines = vec![s.bold(&format!(
        "{:name_width$}  {:arch_width$}  {:9}  PATH",
        "NAME", "ARCHITECTURE", "STATE"
    ))];
    for model in &list {
        let state = if model.error.is_some() {
            s.red(&format!("{:9}", "unusable"))
        } else if model.active {
            s.green(&format!("{:9}", "active"))
        } else if model.loaded {
            s.cyan(&format!("{:9}", "loaded"))
        } else {
            format!("{:9}", "available")
        };
        let mut line = format!(
            "{:name_width$}  {:arch_width$}  {state}  {}",
            model.name, model.architecture, model.path
        );
        if let Some(error) = &model.error {
            line.push_str(&format!("\n{:name_width$}  {}", "", s.red(error)));
        }
        lines.push(line);
    }
    outln(&lines.join("\n"))
}

async fn info(app: &App, models: &ModelsProxy<'_>, name: &str) -> Result<(), CtlError> {
    let info = models.info(name).await.map_err(|e| app.fail(e, None))?;
    if app.json {
        return out_json_pretty(&crate::json::model_info(&info));
    }
    let info = info.for_terminal();
    let state = match (&info.execution_provider, info.active, info.loaded) {
        (Some(ep), true, _) => format!("loaded, active ({ep})"),
        (Some(ep), false, _) => format!("loaded ({ep})"),
        (None, _, true) => "loaded".into(),
        (None, _, false) => "not loaded".into(),
    };
    let rows = [
        ("name", info.name.clone()),
        ("path", info.path.clone()),
        ("manifest name", info.manifest_name.clone()),
        ("architecture", info.architecture.clone()),
        ("format version", info.format_version.to_string()),
        ("layers", info.num_layers.to_string()),
        ("hidden size", info.hidden_size.to_string()),
        ("vocabulary", info.vocab_size.to_string()),
        ("context length", info.context_length.to_string()),
        (
            "experts",
            format!(
                "{} per MoE layer, {} per token",
                info.num_experts, info.top_k
            ),
        ),
        ("expert precision", info.expert_precision.clone()),
        ("size", human_bytes(info.total_bytes)),
        ("state", state),
    ];
    let lines: Vec<String> = rows
        .iter()
        .map(|(key, value)| format!("{}  {value}", app.out.bold(&format!("{key:>16}:"))))
        .collect();
    outln(&lines.join("\n"))
}

/// `Load`, `Unload` or `Switch`: a progress bar fed by the daemon's `LoadProgress` signals while
/// a model loads, a spinner otherwise.
async fn manage(
    app: &App,
    models: &ModelsProxy<'_>,
    method: &str,
    name: &str,
) -> Result<(), CtlError> {
    use futures_util::StreamExt;
    let verb = match method {
        "Load" => "loading",
        "Unload" => "unloading",
        _ => "switching to",
    };
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_message(format!("{verb} {name}"));
    bar.enable_steady_tick(Duration::from_millis(100));
    // Subscribed before the call, so no signal of this load is missed.
    let mut progress = match method {
        "Unload" => None,
        _ => models.receive_load_progress().await.ok(),
    };
    let started = Instant::now();
    let body = (name,);
    let call = models.inner().call_with_flags::<_, _, ()>(
        method,
        MethodFlags::ALLOW_INTERACTIVE_AUTH,
        &body,
    );
    tokio::pin!(call);
    let result: Result<Option<()>, zbus::Error> = loop {
        tokio::select! {
            result = &mut call => break result,
            Some(signal) = async {
                match progress.as_mut() {
                    Some(stream) => stream.next().await,
                    None => std::future::pending().await,
                }
            } => {
                let Ok(args) = signal.args() else { continue };
                if args.name != name {
                    continue;
                }
                if bar.length().is_none() {
                    bar.set_style(
                        ProgressStyle::with_template(
                            "{msg} [{bar:30}] {pos}/{len} graphs {elapsed}",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                    );
                }
                bar.set_length(u64::from(args.total));
                bar.set_position(u64::from(args.done));
            }
        }
    };
    bar.finish_and_clear();
    result.map_err(|e| app.fail(e.into(), Some(MANAGE_MODELS)))?;
    let seconds = started.elapsed().as_secs_f64();
    let known_as = match method {
        "Unload" => None,
        _ => name_of_path(models, name).await,
    };
    if app.json {
        return out_json_pretty(&json!({
            "action": method.to_lowercase(),
            "model": name,
            "name": known_as.as_deref().unwrap_or(name),
            "seconds": seconds,
        }));
    }
    let done = match method {
        "Load" => "loaded",
        "Unload" => "unloaded",
        _ => "switched to",
    };
    match known_as {
        Some(known) => outln(&format!(
            "{done} {name} as {} ({seconds:.1} s); name it so: --model {}",
            terminal(&known),
            terminal(&known)
        )),
        None => outln(&format!("{done} {name} ({seconds:.1} s)")),
    }
}

/// The name a model loaded by path goes by (its manifest's name, or its folder's when that is
/// taken), which `--model` and the other commands take: `None` for a name, or when the daemon
/// lists no model at that path.
async fn name_of_path(models: &ModelsProxy<'_>, arg: &str) -> Option<String> {
    if !arg.contains('/') {
        return None;
    }
    let path = std::fs::canonicalize(arg).unwrap_or_else(|_| std::path::PathBuf::from(arg));
    let path = path.to_string_lossy();
    models
        .list()
        .await
        .ok()?
        .into_iter()
        .find(|m| m.path == path && m.name != arg)
        .map(|m| m.name)
}

pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {} ({bytes} bytes)", UNITS[unit])
    }
}
