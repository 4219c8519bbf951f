//! `moectl alerts --log`: the newest entries of moed's alert audit log (`Plugins.RecentAlerts`,
//! polkit action `org.moed.manage-plugins`).

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

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ` (the proleptic Gregorian calendar).
pub fn utc(secs: f64) -> String {
    let secs = secs.max(0.0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0.0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400.0), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_764_366_000.5), "2025-11-28T21:40:00Z");
    }
}
