//! `moectl plugins list|info|install|enable|disable|reload|config|remove` over
//! `org.moed.Moed1.Plugins`. `install` always
//! passes the component as a file descriptor (`InstallFd`) with the manifest's text: moed runs as
//! its own user without access to home directories, and the caller proves it can read the files.
//! Managing calls allow interactive authorization, so polkit may ask for a password.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use moed_dbus::actions::MANAGE_PLUGINS;
use moed_dbus::plugins::{GrantLimit, PluginsProxy};
use moed_dbus::wire::ToWire;
use moed_dbus::{InstallOptions, MoedError, PluginInfo};
use serde_json::{Map, Value, json};
use zbus::proxy::{CacheProperties, MethodFlags};

mod show;

pub use show::plugin_json;
use show::{config_lines, status_text};

use crate::bus::App;
use crate::cli::{PluginConfigArgs, PluginInstallArgs, PluginsCommand};
use crate::error::CtlError;
use crate::style::{out_json_pretty, outln};

pub async fn run(app: &App, command: PluginsCommand) -> Result<(), CtlError> {
    let p = proxy(app).await?;
    match command {
        PluginsCommand::List => show::list(app, &p).await,
        PluginsCommand::Info { name } => show::info(app, &p, &name).await,
        PluginsCommand::Install(args) => install(app, &p, args).await,
        PluginsCommand::Enable { name } => manage(app, &p, "Enable", &name).await,
        PluginsCommand::Disable { name } => manage(app, &p, "Disable", &name).await,
        PluginsCommand::Reload { name } => manage(app, &p, "Reload", &name).await,
        PluginsCommand::Config(args) => config(app, &p, args).await,
        PluginsCommand::Remove { name } => remove(app, &p, &name).await,
    }
}

pub(super) async fn proxy(app: &App) -> Result<PluginsProxy<'static>, CtlError> {
    PluginsProxy::builder(&app.conn)
        .cache_properties(CacheProperties::No)
        .build()
        .await
        .map_err(|e| app.fail_zbus(e))
}

/// A managing call, allowing polkit to ask for a password.
pub(super) async fn call<B, R>(
    app: &App,
    p: &PluginsProxy<'_>,
    method: &str,
    body: &B,
) -> Result<R, CtlError>
where
    B: serde::Serialize + zbus::zvariant::DynamicType,
    R: for<'d> zbus::zvariant::DynamicDeserialize<'d>,
{
    let reply: Result<Option<R>, zbus::Error> = p
        .inner()
        .call_with_flags(method, MethodFlags::ALLOW_INTERACTIVE_AUTH, body)
        .await;
    match reply {
        Ok(Some(r)) => Ok(r),
        Ok(None) => Err(CtlError::Failed(format!("{method}: moed sent no reply"))),
        Err(e) => Err(app.fail(MoedError::from(e), Some(MANAGE_PLUGINS))),
    }
}

/// `KEY=VALUE`, VALUE as JSON when it parses, else as a string.
fn key_value(text: &str, what: &str) -> Result<(String, Value), CtlError> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| CtlError::Usage(format!("{what} '{text}': expected KEY=VALUE")))?;
    if key.trim().is_empty() {
        return Err(CtlError::Usage(format!(
            "{what} '{text}': the key is empty"
        )));
    }
    let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_string()));
    Ok((key.trim().to_string(), value))
}

fn grant_limit(items: &[String]) -> Result<GrantLimit, CtlError> {
    let mut g = GrantLimit::default();
    for item in items {
        let (key, value) = key_value(item, "--grant")?;
        let bad =
            |expected: &str| CtlError::Usage(format!("--grant {item}: expected {key}={expected}"));
        match key.as_str() {
            "alerts" => g.alerts = Some(value.as_bool().ok_or_else(|| bad("true|false"))?),
            "fewer_experts" => {
                g.fewer_experts = Some(value.as_bool().ok_or_else(|| bad("true|false"))?)
            }
            "clocks" => g.clocks = Some(value.as_bool().ok_or_else(|| bad("true|false"))?),
            "kv_quota" => g.kv_quota = Some(value.as_u64().ok_or_else(|| bad("BYTES"))?),
            "sources" => {
                let text = match &value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                g.sources = Some(
                    text.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect(),
                );
            }
            other => {
                return Err(CtlError::Usage(format!(
                    "--grant {item}: unknown capability '{other}'; known: {}",
                    moed_dbus::plugins::GRANT_KEYS.join(", ")
                )));
            }
        }
    }
    Ok(g)
}

/// The manifest and component of a built plugin, as moed's `Install` finds them.
fn plugin_files(path: &Path) -> Result<(PathBuf, PathBuf), CtlError> {
    if path.is_dir() {
        let wasm = std::fs::read_dir(path)
            .map_err(|e| CtlError::io(format!("reading {}", path.display()), e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "wasm"))
            .ok_or_else(|| {
                CtlError::Invalid(format!("{} holds no .wasm component", path.display()))
            })?;
        Ok((path.join("plugin.toml"), wasm))
    } else if path.extension().is_some_and(|x| x == "wasm") {
        Ok((path.with_extension("toml"), path.to_owned()))
    } else {
        Err(CtlError::Invalid(format!(
            "{}: expected NAME.wasm (with NAME.toml beside it) or a plugin directory",
            path.display()
        )))
    }
}

async fn install(app: &App, p: &PluginsProxy<'_>, args: PluginInstallArgs) -> Result<(), CtlError> {
    let (manifest_path, wasm_path) = plugin_files(&args.path)?;
    let manifest = std::fs::read_to_string(&manifest_path).map_err(|e| {
        CtlError::Invalid(format!(
            "cannot read the plugin's manifest {}: {e}",
            manifest_path.display()
        ))
    })?;
    let wasm = std::fs::File::open(&wasm_path)
        .map_err(|e| CtlError::Invalid(format!("cannot read {}: {e}", wasm_path.display())))?;
    let mut config = Map::new();
    for item in &args.set {
        let (k, v) = key_value(item, "--set")?;
        config.insert(k, v);
    }
    let options = InstallOptions {
        enabled: args.disabled.then_some(false),
        always: args.always,
        grant: grant_limit(&args.grant)?,
        config: (!config.is_empty()).then(|| Value::Object(config).to_string()),
        replace: args.replace,
    };
    let spinner = ProgressBar::new_spinner();
    spinner.set_style(
        ProgressStyle::with_template("{spinner} {msg} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    spinner.set_message(format!(
        "installing {}: moed checks and compiles it",
        wasm_path.display()
    ));
    spinner.enable_steady_tick(Duration::from_millis(100));
    let body = (
        manifest.as_str(),
        zbus::Fd::from(wasm.as_fd()),
        options.to_dict(),
    );
    let result: Result<PluginInfo, CtlError> = call(app, p, "InstallFd", &body).await;
    spinner.finish_and_clear();
    let i = result?;
    if app.json {
        return out_json_pretty(&plugin_json(&i));
    }
    // Its name, version and grants come from a third-party manifest.
    let i = i.for_terminal();
    outln(&format!(
        "{} {} {} ({}): {}{}\n  granted: {}",
        if args.replace {
            "replaced"
        } else {
            "installed"
        },
        i.name,
        i.version,
        i.kind,
        status_text(app, &i),
        if i.always {
            ", applied to every request"
        } else {
            ", applied to requests that name it"
        },
        if i.granted.is_empty() {
            "nothing beyond logging and its configuration".to_string()
        } else {
            i.granted.join(", ")
        }
    ))
}

async fn manage(app: &App, p: &PluginsProxy<'_>, method: &str, name: &str) -> Result<(), CtlError> {
    let i: PluginInfo = call(app, p, method, &(name,)).await?;
    if app.json {
        return out_json_pretty(&plugin_json(&i));
    }
    let i = i.for_terminal();
    let done = match method {
        "Enable" => "enabled",
        "Disable" => "disabled",
        _ => "reloaded",
    };
    outln(&format!("{done} {name}: {}", status_text(app, &i)))
}

async fn config(app: &App, p: &PluginsProxy<'_>, args: PluginConfigArgs) -> Result<(), CtlError> {
    let i = p.info(&args.name).await.map_err(|e| app.fail(e, None))?;
    if args.settings.is_empty() && !args.reset {
        if app.json {
            let v = plugin_json(&i);
            return out_json_pretty(&json!({
                "name": i.name,
                "config": v["config"],
                "config_schema": v["config_schema"],
                "pinned": i.pinned,
            }));
        }
        return outln(&config_lines(app, &i.for_terminal()).join("\n"));
    }
    let mut config: Map<String, Value> = if args.reset {
        Map::new()
    } else {
        serde_json::from_str(&i.config).unwrap_or_default()
    };
    for item in &args.settings {
        let (k, v) = key_value(item, "setting")?;
        config.insert(k, v);
    }
    let text = Value::Object(config).to_string();
    let i: PluginInfo = call(app, p, "Configure", &(args.name.as_str(), text.as_str())).await?;
    if app.json {
        return out_json_pretty(&plugin_json(&i));
    }
    let i = i.for_terminal();
    let mut lines = vec![format!("configured {}: {}", i.name, status_text(app, &i))];
    lines.extend(config_lines(app, &i));
    outln(&lines.join("\n"))
}

async fn remove(app: &App, p: &PluginsProxy<'_>, name: &str) -> Result<(), CtlError> {
    let () = call(app, p, "Remove", &(name,)).await?;
    if app.json {
        return out_json_pretty(&json!({ "action": "remove", "plugin": name }));
    }
    outln(&format!("removed {name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_and_grants_parse() {
        assert_eq!(key_value("window=128", "x").expect("kv").1, json!(128));
        assert_eq!(
            key_value("action=reject", "x").expect("kv").1,
            json!("reject")
        );
        assert_eq!(
            key_value("reject=[\"a\"]", "x").expect("kv").1,
            json!(["a"])
        );
        assert!(key_value("window", "x").is_err());
        let g = grant_limit(&[
            "alerts=false".into(),
            "sources=a,b".into(),
            "kv_quota=64".into(),
        ])
        .expect("grant");
        assert_eq!(g.alerts, Some(false));
        assert_eq!(g.sources, Some(vec!["a".to_string(), "b".to_string()]));
        assert_eq!(g.kv_quota, Some(64));
        assert!(grant_limit(&["network=true".into()]).is_err());
    }
}
