//! `moectl alerts`: follows the `Alert` signals of every request (`--log`: prints the audit log,
//! see alert_log.rs). moed sends them to the
//! requesting client only, so this connection becomes a bus monitor, and keeps only alerts whose
//! sender is the current owner of `org.moed.Moed1` (others could forge the signal).

use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use moed_dbus::{BUS_NAME, MoedError, REQUEST_INTERFACE, REQUEST_PATH_PREFIX};
use serde_json::json;
use tokio::signal::unix::{SignalKind, signal};
use zbus::message::Type as MessageType;
use zbus::{MatchRule, Message, MessageStream};

use crate::bus::App;
use crate::cli::AlertsArgs;
use crate::error::CtlError;
use crate::style::{self, out_json, outln};

pub async fn run(app: &App, args: AlertsArgs) -> Result<(), CtlError> {
    if args.log {
        return super::alert_log::run(app, args.limit).await;
    }
    // A monitor may not call methods, so the daemon's name is resolved first; a restart is
    // followed through NameOwnerChanged.
    let dbus = zbus::fdo::DBusProxy::new(&app.conn)
        .await
        .map_err(|e| app.fail_zbus(e))?;
    let name = BUS_NAME.try_into().map_err(|e| app.fail_zbus(e))?;
    let mut owner = Some(
        dbus.get_name_owner(name)
            .await
            .map_err(|e| app.fail_zbus(e.into()))?
            .to_string(),
    );
    let rules = [
        MatchRule::builder()
            .msg_type(MessageType::Signal)
            .interface(REQUEST_INTERFACE)
            .member("Alert")
            .path_namespace(REQUEST_PATH_PREFIX)
            .build(),
        MatchRule::builder()
            .msg_type(MessageType::Signal)
            .sender("org.freedesktop.DBus")
            .interface("org.freedesktop.DBus")
            .member("NameOwnerChanged")
            .arg(0, BUS_NAME)
            .build(),
    ]
    .into_iter()
    .collect::<Result<Vec<_>, _>>()
    .map_err(|e| app.fail_zbus(e))?;
    let mut stream = MessageStream::from(&app.conn);
    let monitoring = zbus::fdo::MonitoringProxy::new(&app.conn)
        .await
        .map_err(|e| app.fail_zbus(e))?;
    if let Err(err) = monitoring.become_monitor(&rules, 0).await {
        let err = app.fail(MoedError::ZBus(err.into()), None);
        return Err(match err {
            CtlError::AccessDenied { message, .. } => CtlError::AccessDenied {
                message,
                hint: "following every client's alerts needs a bus monitor, which the bus allows only to root: run `sudo moectl alerts` (your own requests' alerts are shown by generate and chat)".into(),
            },
            other => other,
        });
    }
    // On stderr in JSON mode too: it tells a watcher the monitor is in place.
    style::err(&app.err.dim("following moed's alerts; Ctrl-C stops\n"));
    let mut interrupt =
        signal(SignalKind::interrupt()).map_err(|e| CtlError::io("listening for Ctrl-C", e))?;
    loop {
        let msg = tokio::select! {
            msg = stream.next() => msg,
            _ = interrupt.recv() => return Ok(()),
        };
        let msg = match msg {
            Some(Ok(msg)) => msg,
            Some(Err(err)) => return Err(app.fail_zbus(err)),
            None => {
                return Err(CtlError::Failed(
                    "the bus closed the monitor connection".into(),
                ));
            }
        };
        if let Some(change) = owner_change(&msg) {
            let note = match &change {
                Some(_) => "moed started",
                None => "moed stopped",
            };
            if app.json {
                out_json(&json!({ "time": now(), "event": note }))?;
            } else {
                style::err(&app.err.dim(&format!("{} {note}\n", clock())));
            }
            owner = change;
        } else if let Some(alert) = alert(&msg, owner.as_deref()) {
            if app.json {
                out_json(&alert)?;
            } else {
                // Everything but the time came from a plugin or a client: escaped for the terminal.
                let field = |k: &str| {
                    moed_dbus::wire::terminal(alert[k].as_str().unwrap_or_default()).into_owned()
                };
                outln(&format!(
                    "{} {} {} from {}: {} (request {} of {})",
                    clock(),
                    super::generate::severity_label(&app.out, &field("severity")),
                    field("code"),
                    field("source"),
                    field("message"),
                    field("request"),
                    field("client"),
                ))?;
            }
        }
    }
}

/// `Some(new owner)` / `Some(None)` when `org.moed.Moed1` changed hands.
fn owner_change(msg: &Message) -> Option<Option<String>> {
    let header = msg.header();
    if header.member().map(|m| m.as_str()) != Some("NameOwnerChanged") {
        return None;
    }
    let (name, _old, new): (String, String, String) = msg.body().deserialize().ok()?;
    (name == BUS_NAME).then(|| (!new.is_empty()).then_some(new))
}

/// An Alert signal sent by the daemon, as JSON.
fn alert(msg: &Message, owner: Option<&str>) -> Option<serde_json::Value> {
    let header = msg.header();
    if header.message_type() != MessageType::Signal
        || header.interface().map(|i| i.as_str()) != Some(REQUEST_INTERFACE)
        || header.member().map(|m| m.as_str()) != Some("Alert")
    {
        return None;
    }
    let sender = header.sender().map(|s| s.to_string());
    if owner.is_none() || sender.as_deref() != owner {
        return None;
    }
    let (severity, code, message, source): (String, String, String, String) =
        msg.body().deserialize().ok()?;
    let path = header.path().map(|p| p.to_string()).unwrap_or_default();
    Some(json!({
        "time": now(),
        "severity": severity,
        "code": code,
        "message": message,
        "source": source,
        "request": path.rsplit('/').next().unwrap_or_default(),
        "client": header.destination().map(|d| d.to_string()).unwrap_or_default(),
    }))
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// `HH:MM:SSZ` (UTC) for text output: the time of day of an RFC 3339 timestamp.
fn clock() -> String {
    let stamp = super::alert_log::utc(now());
    stamp
        .split_once('T')
        .map_or(stamp.clone(), |(_, time)| time.to_string())
}
