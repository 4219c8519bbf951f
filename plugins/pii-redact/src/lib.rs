//! `pii-redact`: redacts (or rejects) e-mail addresses, phone numbers, payment cards (Luhn),
//! IBANs (mod 97), IPv4/IPv6 addresses and API keys/tokens in prompts and in streamed answers.
//! The output side holds back a window so that a secret split across tokens is seen whole.

pub mod detect;

use std::cell::RefCell;

use moed_plugin_sdk::filter::{Guest, InputVerdict, OutputStep, OutputVerdict, hold_cut};
use moed_plugin_sdk::{alerts, config, param_json};

use detect::{Found, Kinds, Pii};

#[derive(serde::Deserialize, Clone)]
struct Config {
    email: bool,
    phone: bool,
    card: bool,
    iban: bool,
    ip: bool,
    secret: bool,
    /// `redact` or `reject`.
    action: String,
    /// Raise an alert per finding kind (needs the `alerts` grant).
    alert: bool,
    /// Bytes held back at least.
    window: usize,
    /// Bytes held back at most while a word or key block is still arriving.
    max_hold: usize,
}

impl Config {
    fn kinds(&self) -> Kinds {
        Kinds {
            email: self.email,
            phone: self.phone,
            card: self.card,
            iban: self.iban,
            ip: self.ip,
            secret: self.secret,
        }
    }
}

thread_local! {
    static CONFIG: RefCell<Option<Config>> = const { RefCell::new(None) };
}

fn cfg(params: &[(String, String)]) -> Result<Config, String> {
    let mut c = CONFIG.with_borrow_mut(|c| match c {
        Some(c) => Ok::<Config, String>(c.clone()),
        None => {
            let loaded: Config = config::get()?;
            if loaded.action != "redact" && loaded.action != "reject" {
                return Err(format!(
                    "action must be 'redact' or 'reject', not '{}'",
                    loaded.action
                ));
            }
            *c = Some(loaded.clone());
            Ok(loaded)
        }
    })?;
    // A request may switch kinds off (never on beyond what the administrator configured).
    if let Some(off) = param_json::<Vec<String>>(params, "pii_redact.skip")? {
        for k in off {
            match k.as_str() {
                "email" => c.email = false,
                "phone" => c.phone = false,
                "card" => c.card = false,
                "iban" => c.iban = false,
                "ip" => c.ip = false,
                "secret" => c.secret = false,
                other => return Err(format!("pii_redact.skip: unknown kind '{other}'")),
            }
        }
    }
    Ok(c)
}

/// `text` with every finding replaced by `[REDACTED:kind]`.
fn redact(text: &str, found: &[Found]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for f in found {
        out.push_str(&text[at..f.start]);
        out.push_str("[REDACTED:");
        out.push_str(f.kind.name());
        out.push(']');
        at = f.end;
    }
    out.push_str(&text[at..]);
    out
}

fn report(c: &Config, found: &[Found], where_: &str) {
    if !c.alert {
        return;
    }
    let mut kinds: Vec<Pii> = found.iter().map(|f| f.kind).collect();
    kinds.sort();
    kinds.dedup();
    for k in kinds {
        let n = found.iter().filter(|f| f.kind == k).count();
        alerts::warning(
            &format!("pii.{}", k.name()),
            &format!("{n} {} found in the {where_}", k.name()),
        );
    }
}

struct PiiRedact;

impl Guest for PiiRedact {
    fn filter_input(prompt: String, params: Vec<(String, String)>) -> Result<InputVerdict, String> {
        let c = cfg(&params)?;
        let found = detect::find_all(&prompt, &c.kinds());
        if found.is_empty() {
            return Ok(InputVerdict::Allow);
        }
        report(&c, &found, "prompt");
        if c.action == "reject" {
            let kinds: Vec<&str> = found.iter().map(|f| f.kind.name()).collect();
            return Ok(InputVerdict::Reject(format!(
                "the prompt contains personal data or secrets ({})",
                kinds.join(", ")
            )));
        }
        Ok(InputVerdict::Redact(redact(&prompt, &found)))
    }

    fn filter_output(
        pending: String,
        last: bool,
        params: Vec<(String, String)>,
    ) -> Result<OutputVerdict, String> {
        let c = cfg(&params)?;
        let found = detect::find_all(&pending, &c.kinds());
        let mut cut = hold_cut(&pending, last, c.window, c.max_hold);
        if !last {
            if let Some(open) = detect::open_private_key(&pending) {
                cut = cut.min(open);
            }
            // Never release part of a finding: hold it back from its start.
            for f in &found {
                if f.start < cut && f.end > cut {
                    cut = f.start;
                }
            }
        }
        let released: Vec<Found> = found.into_iter().filter(|f| f.end <= cut).collect();
        if !released.is_empty() {
            report(&c, &released, "answer");
            if c.action == "reject" {
                return Ok(OutputVerdict::Reject(
                    "the answer contains personal data or secrets".into(),
                ));
            }
        }
        Ok(OutputVerdict::Pass(OutputStep {
            emit: redact(&pending[..cut], &released),
            hold: (pending.len() - cut) as u32,
        }))
    }
}

moed_plugin_sdk::export_filter!(PiiRedact);
