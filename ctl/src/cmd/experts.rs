//! `moectl experts`: per-layer expert activation (`Models.ExpertStats`) as a terminal heatmap,
//! the expert cache hit rate, and the same picture as SVG with `--svg`; `--reset` forgets them.

use moed_dbus::actions::MANAGE_MODELS;
use moed_dbus::wire::ToWire;
use serde_json::json;
use zbus::proxy::MethodFlags;

use crate::bus::App;
use crate::cli::ExpertsArgs;
use crate::error::CtlError;
use crate::heatmap;
use crate::style::{self, out, out_json_pretty};

pub async fn run(app: &App, args: ExpertsArgs) -> Result<(), CtlError> {
    let models = super::models(app).await?;
    let name = args.model.clone().unwrap_or_default();
    if args.reset {
        // The daemon resolves "" to the active model for ExpertStats only: name it here.
        let name = if name.is_empty() {
            let active = super::engine(app)
                .await?
                .model()
                .await
                .map_err(|e| app.fail_zbus(e))?;
            if active.is_empty() {
                return Err(CtlError::Daemon(moed_dbus::MoedError::ModelNotLoaded(
                    "no model is active; name one with --model".into(),
                )));
            }
            active
        } else {
            name
        };
        let reset: Result<Option<()>, zbus::Error> = models
            .inner()
            .call_with_flags(
                "ResetExpertStats",
                MethodFlags::ALLOW_INTERACTIVE_AUTH,
                &(name.as_str(),),
            )
            .await;
        reset.map_err(|e| app.fail(e.into(), Some(MANAGE_MODELS)))?;
        if app.json {
            return out_json_pretty(&json!({ "action": "reset", "model": name }));
        }
        return out(&format!("expert statistics of {name} forgotten\n"));
    }
    let stats = models
        .expert_stats(&name)
        .await
        .map_err(|e| app.fail(e, None))?;
    if let Some(path) = &args.svg {
        std::fs::write(path, heatmap::svg::render(&stats))
            .map_err(|e| CtlError::io(format!("writing {}", path.display()), e))?;
        if !app.json {
            style::err(&format!("wrote {}\n", path.display()));
        }
    }
    if app.json {
        return out_json_pretty(&crate::json::expert_stats(&stats));
    }
    let stats = stats.for_terminal();
    out(&heatmap::render_terminal(&stats, app.out, terminal_width()))
}

/// The width of the terminal on stdout, else `$COLUMNS`, else 100.
fn terminal_width() -> usize {
    if let Some((_, columns)) = console::Term::stdout().size_checked() {
        return usize::from(columns);
    }
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .filter(|&c: &usize| c >= 20)
        .unwrap_or(100)
}
