//! `moectl config show|check`: the configuration as the service reads it on this machine. moed
//! publishes no configuration over D-Bus, so this runs `moed check-config`, the daemon's own
//! loader and checker, and reports its result.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

use crate::cli::{ConfigArgs, ConfigCommand};
use crate::error::CtlError;
use crate::style::{out, out_json_pretty, outln};

pub fn run(command: &ConfigCommand, json: bool) -> Result<(), CtlError> {
    let (args, show) = match command {
        ConfigCommand::Show(args) => (args, true),
        ConfigCommand::Check(args) => (args, false),
    };
    let moed = moed_program(args)?;
    let mut cmd = Command::new(&moed);
    cmd.arg("check-config");
    if let Some(config) = &args.config {
        cmd.arg("--config").arg(config);
    }
    let output = cmd.output().map_err(|e| {
        CtlError::Failed(format!(
            "cannot run {} check-config: {e}; install moed or name it with --moed PATH",
            moed.display()
        ))
    })?;
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let message = stderr.trim().trim_start_matches("moed: ");
        let message = message
            .strip_prefix("configuration: ")
            .unwrap_or(message)
            .to_string();
        if json {
            out_json_pretty(&json!({ "valid": false, "error": message }))?;
        }
        return Err(CtlError::Invalid(format!(
            "invalid configuration: {message}"
        )));
    }
    let sources: Vec<String> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("# read "))
        .map(str::to_string)
        .collect();
    match (show, json) {
        (true, false) => out(&stdout),
        (true, true) => {
            let body: String = stdout
                .lines()
                .filter(|l| !l.starts_with('#'))
                .map(|l| format!("{l}\n"))
                .collect();
            let table: toml::Table = toml::from_str(&body).map_err(|e| {
                CtlError::Failed(format!(
                    "moed check-config printed TOML that does not parse: {e}"
                ))
            })?;
            let config = serde_json::to_value(&table)
                .map_err(|e| CtlError::Failed(format!("converting the configuration: {e}")))?;
            out_json_pretty(&json!({ "sources": sources, "config": config }))
        }
        (false, true) => out_json_pretty(&json!({ "valid": true, "sources": sources })),
        (false, false) => outln(&if sources.is_empty() {
            "configuration is valid (no file found: built-in defaults and MOED_* variables)"
                .to_string()
        } else {
            format!("configuration is valid (read {})", sources.join(", "))
        }),
    }
}

/// `--moed`, else `moed` next to this program (an installed or built pair), else on PATH.
fn moed_program(args: &ConfigArgs) -> Result<PathBuf, CtlError> {
    if let Some(path) = &args.moed {
        return Ok(path.clone());
    }
    if let Some(sibling) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("moed")))
        .filter(|p| p.is_file())
    {
        return Ok(sibling);
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("moed"))
                .find(|p| is_executable(p))
        })
        .ok_or_else(|| {
            CtlError::Failed(
                "moed is not installed here (not next to moectl, not on PATH); name it with --moed PATH".into(),
            )
        })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
