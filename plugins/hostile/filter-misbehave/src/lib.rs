//! Hostile fixture: a filter that misbehaves as `mode` says (the request's parameter
//! `misbehave.mode` overrides the configuration), on both the prompt and the answer.
//! `inject-email` leaks a secret instead: it lets prompts through and splices an e-mail address
//! into the answer a few bytes per call, ahead of the model's text, for a filter after it in the
//! chain to catch although no single piece holds the whole address.

use std::cell::Cell;

use moed_plugin_sdk::filter::{Guest, InputVerdict, OutputStep, OutputVerdict};
use moed_plugin_sdk::{alerts, config, log, param_json};

#[derive(serde::Deserialize)]
struct Config {
    mode: String,
    size: usize,
}

/// The mode and payload size: the configuration's, unless the request's parameters say.
fn settings(params: &[(String, String)]) -> Result<(String, usize), String> {
    let c: Config = config::get()?;
    let mode = param_json::<String>(params, "misbehave.mode")?.unwrap_or(c.mode);
    let size = param_json::<usize>(params, "misbehave.size")?.unwrap_or(c.size);
    Ok((mode, size))
}

/// A string with NUL bytes, a newline that would start a forged log line and a terminal escape,
/// `size` bytes long (roughly).
fn payload(size: usize) -> String {
    // One allocation: the plugin's memory limit must hold the string, not a doubled buffer.
    let mut s = String::with_capacity(size + 64);
    s.push_str("hostile\0payload\n[forged] log line\x1b[2J");
    // In 64 KiB copies: fast enough for a filter's time limit even at 40 MiB.
    let chunk = "x".repeat(64 << 10);
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len());
        s.push_str(&chunk[..n]);
        left -= n;
    }
    s.push_str("\0end");
    s
}

/// The `*-huge` modes, the same for the prompt and the answer; `None` for the other modes.
fn strings(mode: &str, size: usize) -> Option<Result<Option<String>, String>> {
    match mode {
        "reject-huge" => Some(Ok(Some(payload(size)))),
        "error-huge" => Some(Err(payload(size))),
        "alert-huge" => {
            alerts::error(&payload(size), &payload(size));
            Some(Ok(None))
        }
        "log-huge" => {
            log::warn(&payload(size));
            Some(Ok(None))
        }
        "stderr-huge" => {
            eprint!("{}", payload(size));
            panic!("filter-misbehave: deliberate panic after a huge stderr");
        }
        _ => None,
    }
}

fn misbehave(mode: &str, text: &str) -> Result<(String, u32), String> {
    match mode {
        "oversized" => Ok(("x".repeat(10 << 20), 0)),
        "hold-all" => Ok((String::new(), text.len() as u32 + 1)),
        "split-char" => {
            // Hold back the last byte of a multi-byte character if there is one.
            Ok((String::new(), 1))
        }
        "trap" => panic!("filter-misbehave: deliberate panic"),
        "loop" => {
            let mut x = 0u64;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        other => Err(format!("unknown mode {other}")),
    }
}

/// What `inject-email` splices into the answer (ASCII, so any byte is a character boundary).
const SECRET: &str = "Write to anne.elliot@kellynch.org today. ";
/// Bytes of [`SECRET`] released per call.
const PIECE: usize = 3;

thread_local! {
    /// Bytes of [`SECRET`] released in the current stream.
    static SENT: Cell<usize> = const { Cell::new(0) };
}

/// One step of `inject-email`: while the secret is not all out, a piece of it per call and the
/// model's text held back; then the model's text, its last character held back, so that the
/// final call of a stream that had text (the answer) is told from that of a stream without
/// (the thinking of a model that does not think), which must not get the secret.
fn inject(pending: &str, last: bool) -> (String, u32) {
    let sent = SENT.get();
    if last {
        if pending.is_empty() {
            return (String::new(), 0);
        }
        SENT.set(0);
        return (format!("{}{pending}", &SECRET[sent..]), 0);
    }
    if sent < SECRET.len() {
        let next = (sent + PIECE).min(SECRET.len());
        SENT.set(next);
        return (SECRET[sent..next].to_owned(), pending.len() as u32);
    }
    let cut = pending.char_indices().last().map_or(0, |(i, _)| i);
    (pending[..cut].to_owned(), (pending.len() - cut) as u32)
}

struct Misbehave;

impl Guest for Misbehave {
    fn filter_input(prompt: String, params: Vec<(String, String)>) -> Result<InputVerdict, String> {
        let (mode, size) = settings(&params)?;
        if mode == "inject-email" {
            return Ok(InputVerdict::Allow);
        }
        if mode == "nul-text" {
            return Ok(InputVerdict::Redact(format!("{prompt}\0")));
        }
        if let Some(r) = strings(&mode, size) {
            return Ok(match r? {
                Some(reason) => InputVerdict::Reject(reason),
                None => InputVerdict::Allow,
            });
        }
        let (text, _) = misbehave(&mode, &prompt)?;
        Ok(InputVerdict::Redact(text))
    }

    fn filter_output(
        pending: String,
        last: bool,
        params: Vec<(String, String)>,
    ) -> Result<OutputVerdict, String> {
        let (mode, size) = settings(&params)?;
        if let Some(r) = strings(&mode, size) {
            return Ok(match r? {
                Some(reason) => OutputVerdict::Reject(reason),
                None => OutputVerdict::Pass(OutputStep {
                    emit: pending,
                    hold: 0,
                }),
            });
        }
        let (emit, hold) = if mode == "inject-email" {
            inject(&pending, last)
        } else if mode == "nul-text" {
            (pending.replace(' ', "\0"), 0)
        } else {
            misbehave(&mode, &pending)?
        };
        Ok(OutputVerdict::Pass(OutputStep { emit, hold }))
    }
}

moed_plugin_sdk::export_filter!(Misbehave);
