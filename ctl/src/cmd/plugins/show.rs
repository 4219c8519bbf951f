//! What `moectl plugins list`, `info` and `config` print: the `--json` shape of a plugin and
//! its text form.

use moed_dbus::PluginInfo;
use moed_dbus::plugins::PluginsProxy;
use moed_dbus::wire::ToWire;
use serde_json::{Map, Value, json};

use crate::bus::App;
use crate::error::CtlError;
use crate::style::{out_json_pretty, outln};

/// The `--json` shape of a plugin: `PluginInfo`'s fields, with `config` and `config_schema`
/// as JSON objects.
pub fn plugin_json(i: &PluginInfo) -> Value {
    let parsed = |text: &str| serde_json::from_str::<Value>(text).unwrap_or(Value::Null);
    json!({
        "name": i.name,
        "version": i.version,
        "kind": i.kind,
        "description": i.description,
        "enabled": i.enabled,
        "always": i.always,
        "status": i.status,
        "disabled_reason": i.disabled_reason,
        "load_error": i.load_error,
        "origin": i.origin,
        "path": i.path,
        "source": i.source,
        "installed_at": i.installed_at,
        "granted": i.granted,
        "requested": i.requested,
        "config": parsed(&i.config),
        "config_schema": parsed(&i.config_schema),
        "pinned": i.pinned,
        "interface": i.interface,
        "consecutive_failures": i.consecutive_failures,
        "calls": i.calls,
        "failures": i.failures,
        "mean_call_us": i.mean_call_us,
        "compiled_from_cache": i.compiled_from_cache,
    })
}

pub(super) fn status_text(app: &App, i: &PluginInfo) -> String {
    let s = &app.out;
    match i.status.as_str() {
        "active" => s.green("active"),
        "failing" => s.red("failing"),
        "broken" => s.red("broken"),
        other => other.to_string(),
    }
}

fn reason(i: &PluginInfo) -> Option<&str> {
    i.load_error.as_deref().or(i.disabled_reason.as_deref())
}

pub(super) async fn list(app: &App, p: &PluginsProxy<'_>) -> Result<(), CtlError> {
    let list = p.list().await.map_err(|e| app.fail(e, None))?;
    if app.json {
        return out_json_pretty(&Value::Array(list.iter().map(plugin_json).collect()));
    }
    if list.is_empty() {
        return outln("no plugins installed (install one with `moectl plugins install PATH`)");
    }
    // Names, versions and reasons come from third-party manifests and code.
    let list = list.for_terminal();
    let w = list.iter().map(|i| i.name.len()).max().unwrap_or(4).max(4);
    let s = &app.out;
    let mut lines = vec![s.bold(&format!(
        "{:w$}  {:9}  {:8}  {:8}  {:6}  ORIGIN",
        "NAME", "KIND", "VERSION", "STATUS", "ALWAYS"
    ))];
    for i in &list {
        // Padded before colouring, so that escape codes do not shift the columns.
        let status = status_text(app, i).replace(&i.status, &format!("{:8}", i.status));
        lines.push(format!(
            "{:w$}  {:9}  {:8}  {status}  {:6}  {}",
            i.name,
            i.kind,
            i.version,
            if i.always { "yes" } else { "no" },
            i.origin
        ));
        if let Some(r) = reason(i) {
            lines.push(format!("{:w$}  {}", "", s.red(r)));
        }
    }
    outln(&lines.join("\n"))
}

pub(super) async fn info(app: &App, p: &PluginsProxy<'_>, name: &str) -> Result<(), CtlError> {
    let i = p.info(name).await.map_err(|e| app.fail(e, None))?;
    if app.json {
        return out_json_pretty(&plugin_json(&i));
    }
    let i = i.for_terminal();
    let words = |v: &[String]| {
        if v.is_empty() {
            "nothing".to_string()
        } else {
            v.join(", ")
        }
    };
    let mut rows = vec![
        ("name", i.name.clone()),
        ("version", i.version.clone()),
        ("kind", i.kind.clone()),
        ("description", i.description.clone()),
        ("status", status_text(app, &i)),
        (
            "always",
            if i.always {
                "yes: every request goes through it"
            } else {
                "no: requests name it in option `plugins`"
            }
            .to_string(),
        ),
        ("origin", i.origin.clone()),
        ("path", i.path.clone()),
        ("installed from", i.source.clone()),
    ];
    if let Some(r) = reason(&i) {
        rows.push(("reason", app.out.red(r)));
    }
    if i.installed_at > 0.0 {
        rows.push(("installed", crate::cmd::alert_log::utc(i.installed_at)));
    }
    rows.extend([
        ("interface", i.interface.clone()),
        ("granted", words(&i.granted)),
        ("requested", words(&i.requested)),
        ("fixed by config", words(&i.pinned)),
        (
            "calls",
            format!(
                "{} ({} failed, {} in a row; {:.1} us on average)",
                i.calls, i.failures, i.consecutive_failures, i.mean_call_us
            ),
        ),
    ]);
    let mut lines: Vec<String> = rows
        .iter()
        .map(|(k, v)| format!("{}  {v}", app.out.bold(&format!("{k:>15}:"))))
        .collect();
    lines.extend(config_lines(app, &i));
    outln(&lines.join("\n"))
}

/// The configuration, one key a line with its schema.
pub(super) fn config_lines(app: &App, i: &PluginInfo) -> Vec<String> {
    let config: Map<String, Value> = serde_json::from_str(&i.config).unwrap_or_default();
    let schema: Map<String, Value> = serde_json::from_str(&i.config_schema).unwrap_or_default();
    if schema.is_empty() && config.is_empty() {
        return vec![format!(
            "{}  none",
            app.out.bold(&format!("{:>15}:", "configuration"))
        )];
    }
    let mut lines = vec![app.out.bold(&format!("{:>15}:", "configuration"))];
    let keys: std::collections::BTreeSet<&String> = config.keys().chain(schema.keys()).collect();
    for key in keys {
        let value = config
            .get(key)
            .map_or("(unset)".to_string(), Value::to_string);
        let spec = schema.get(key);
        let ty = spec.and_then(|s| s["type"].as_str()).unwrap_or("?");
        let desc = spec.and_then(|s| s["description"].as_str()).unwrap_or("");
        lines.push(format!(
            "  {key} = {value}  {}",
            app.out.dim(&format!("({ty}) {desc}"))
        ));
    }
    lines
}
