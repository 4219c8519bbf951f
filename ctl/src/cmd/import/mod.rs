//! `moectl models import HF_DIR`: converts a Hugging Face checkpoint into a model package on this
//! machine, by running the Python exporter that the moed-import package ships with the system's
//! python3 (no virtualenv); moed is not involved until the package is loaded.

mod exporter;
mod paths;

use std::path::Path;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::cli::ImportArgs;
use crate::error::CtlError;
use crate::style::{Style, out_json_pretty, outln};

/// A manifest larger than this is not one the exporter wrote.
const MAX_MANIFEST: u64 = 64 * 1024 * 1024;

pub fn run(args: &ImportArgs, json: bool) -> Result<(), CtlError> {
    let plan = paths::plan(
        &args.src,
        args.out.as_deref(),
        args.name.as_deref(),
        args.force,
    )?;
    let exporter = exporter::locate()?;
    let quant = if args.quant == "none" {
        "fp32"
    } else {
        &args.quant
    };
    let bar = progress_bar(json);
    bar.set_message(format!("reading {}", plan.src.display()));
    let result = exporter.run(&plan, quant, args.force, |done, total, graph| {
        bar.set_length(total);
        bar.set_position(done.saturating_sub(1));
        bar.set_message(graph.to_string());
    });
    bar.finish_and_clear();
    result.map_err(|e| with_default_dir_advice(e, args.out.is_none()))?;
    let (files, bytes) = package_size(&plan.out)?;
    let load = format!("moectl models load {}", plan.out.display());
    if json {
        return out_json_pretty(&json!({
            "package": plan.out.display().to_string(),
            "name": plan.name,
            "quant": quant,
            "files": files,
            "bytes": bytes,
            "load": load,
        }));
    }
    let s = Style::stdout();
    outln(&format!(
        "{} {} ({}, {quant}, {files} files, {:.1} MB)\nload it with: {}",
        s.green("imported"),
        plan.out.display(),
        plan.name,
        bytes as f64 / 1e6,
        s.bold(&load)
    ))
}

/// A user who is not root cannot write the default output folder: say what to do instead.
fn with_default_dir_advice(err: CtlError, defaulted: bool) -> CtlError {
    match err {
        CtlError::Invalid(m) if defaulted && m.contains("Permission denied") => {
            CtlError::Invalid(format!(
                "{m}; {} needs root: run it with sudo or choose --out DIR",
                paths::MODELS_DIR
            ))
        }
        other => other,
    }
}

fn progress_bar(json: bool) -> ProgressBar {
    if json {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{bar:32} {pos}/{len} graphs {elapsed} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// The number of files and their bytes, from the manifest the exporter wrote.
fn package_size(out: &Path) -> Result<(usize, u64), CtlError> {
    let path = out.join("manifest.json");
    let broken = |why: String| {
        CtlError::Failed(format!(
            "the exporter finished but {} is unusable: {why}",
            path.display()
        ))
    };
    let meta = std::fs::metadata(&path).map_err(|e| broken(e.to_string()))?;
    if meta.len() > MAX_MANIFEST {
        return Err(broken(format!("{} bytes", meta.len())));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| broken(e.to_string()))?;
    let manifest: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| broken(e.to_string()))?;
    let files = manifest["files"]
        .as_object()
        .ok_or_else(|| broken("no files table".into()))?;
    let bytes = files.values().filter_map(|f| f["bytes"].as_u64()).sum();
    Ok((files.len(), bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_denied_on_the_default_folder_says_what_to_do() {
        let denied =
            || CtlError::Invalid("[Errno 13] Permission denied: '/var/lib/moed/models'".into());
        let advised = with_default_dir_advice(denied(), true).to_string();
        assert!(
            advised
                .ends_with("/var/lib/moed/models needs root: run it with sudo or choose --out DIR")
        );
        assert!(
            !with_default_dir_advice(denied(), false)
                .to_string()
                .contains("sudo")
        );
        let other =
            with_default_dir_advice(CtlError::Invalid("tensor 'x' is missing".into()), true);
        assert_eq!(other.to_string(), "tensor 'x' is missing");
    }
}
