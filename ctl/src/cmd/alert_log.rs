//! `moectl alerts --log`: the newest entries of moed's alert audit log (`Plugins.RecentAlerts`,
//! polkit action `org.moed.manage-plugins`).

use std::time::{Duration, UNIX_EPOCH};

use moed_dbus::AlertRecord;
use moed_dbus::wire::ToWire;
use serde_json::{Value, json};

use crate::bus::App;
use crate::error::CtlError;
use crate::style::{out_json_pretty, outln};

/// `moectl alerts --log`: the newest `limit` entries of the audit log.
pub async fn run(app: &App, limit: u32) -> Result<(), CtlError> {
    let p = super::plugins::proxy(app).await?;
    let log: Vec<AlertRecord> = super::plugins::call(app, &p, "RecentAlerts", &(limit,)).await?;
    if app.json {
        let entries: Vec<Value> = log
            .iter()
            .map(|a| {
                json!({
                    "seq": a.seq,
                    "time": a.time,
                    "request_id": a.request_id,
                    "plugin": a.plugin,
                    "severity": a.severity,
                    "code": a.code,
                    "message": a.message,
                    "uid": a.uid,
                })
            })
            .collect();
        return out_json_pretty(&Value::Array(entries));
    }
    if log.is_empty() {
        return outln("the alert log is empty");
    }
    // Codes and messages come from plugins: no escape sequence of theirs reaches the terminal.
    let log = log.for_terminal();
    let lines: Vec<String> = log
        .iter()
        .map(|a| {
            let mut about = Vec::new();
            if let Some(r) = &a.request_id {
                about.push(format!("request {r}"));
            }
            if let Some(u) = a.uid {
                about.push(format!("uid {u}"));
            }
            format!(
                "{} {} {} from {}: {}{}",
                utc(a.time),
                super::generate::severity_label(&app.out, &a.severity),
                a.code,
                a.plugin,
                a.message,
                if about.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", about.join(", "))
                }
            )
        })
        .collect();
    outln(&lines.join("\n"))
}

/// The last second RFC 3339 can write (9999-12-31T23:59:59Z).
const LAST_RFC3339_SECOND: f64 = 253_402_300_799.0;

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`, clamped to the years 1970 to 9999 (the daemon's
/// value, so a time past them is shown as the nearest it can be, not refused).
pub fn utc(secs: f64) -> String {
    let secs = secs.clamp(0.0, LAST_RFC3339_SECOND) as u64;
    let time = UNIX_EPOCH + Duration::from_secs(secs);
    humantime::format_rfc3339_seconds(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0.0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400.0), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_764_366_000.5), "2025-11-28T21:40:00Z");
        assert_eq!(utc(-5.0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(f64::NAN), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1e300), "9999-12-31T23:59:59Z");
    }
}
