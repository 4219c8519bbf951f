//! `moectl generate`: one prompt through `Engine.Generate`, the text streamed from the request's
//! `Token` signals as it is produced. The stream printer here serves `chat` too.

use futures_util::StreamExt;
use moed_dbus::client::{RequestEvent, RequestStream};
use moed_dbus::{GenerateOptions, GenerationInfo, MoedError, OutputConstraint};
use serde_json::{Value, json};
use tokio::signal::unix::{SignalKind, signal};

use crate::bus::App;
use crate::cli::{GenerateArgs, SamplingArgs};
use crate::error::CtlError;
use crate::style::{self, out, out_json_pretty};

pub async fn run(app: &App, args: GenerateArgs) -> Result<(), CtlError> {
    let prompt = crate::text_or_stdin(&args.prompt, "prompt")?;
    let mut options = options(&args.sampling);
    options.system = args.system;
    options.raw = args.raw;
    let stream = moed_dbus::client::generate(&app.conn, &prompt, &options)
        .await
        .map_err(|e| app.fail(e, None))?;
    let outcome = follow(app, stream, &args.sampling, "--max-tokens").await?;
    if app.json {
        out_json_pretty(&outcome.to_json())?;
    }
    Ok(())
}

/// The request options the sampling flags stand for.
pub fn options(sampling: &SamplingArgs) -> GenerateOptions {
    GenerateOptions {
        max_tokens: sampling.max_tokens,
        temperature: sampling.temperature,
        top_p: sampling.top_p,
        top_k: sampling.top_k,
        min_p: sampling.min_p,
        repetition_penalty: sampling.repetition_penalty,
        seed: sampling.seed,
        stop: sampling.stop.clone(),
        model: sampling.model.clone(),
        ignore_eos: sampling.ignore_eos,
        plugins: sampling.plugins.clone(),
        plugin_params: sampling.plugin_params.clone(),
        retrieval: sampling.no_retrieval.then_some(false),
        sources: sampling.sources.clone(),
        constraint: if let Some(schema) = &sampling.json_schema {
            Some(OutputConstraint::JsonSchema(schema.clone()))
        } else if let Some(rx) = &sampling.regex {
            Some(OutputConstraint::Regex(rx.clone()))
        } else {
            sampling.json_object.then_some(OutputConstraint::JsonObject)
        },
        ..GenerateOptions::default()
    }
}

/// A finished request.
pub struct Outcome {
    pub info: GenerationInfo,
    pub alerts: Vec<Value>,
}

impl Outcome {
    pub fn to_json(&self) -> Value {
        let mut value = crate::json::generation_info(&self.info);
        if let Value::Object(map) = &mut value {
            map.insert("alerts".into(), Value::Array(self.alerts.clone()));
        }
        value
    }
}

/// Prints a request's events as they arrive (unless `--json`: then only the outcome is
/// printed, by the caller): text on stdout, thinking dimmed on stderr, alerts on stderr, and
/// the retrieved sources after the answer (stderr).
/// Ctrl-C cancels the request and waits for its end.
/// Prints a request's stream as it comes; `limit_flag` names how the caller raises the token limit
/// (`--max-tokens`, or chat's `/max-tokens`) in the note shown when an answer was cut.
pub async fn follow(
    app: &App,
    mut stream: RequestStream,
    sampling: &SamplingArgs,
    limit_flag: &str,
) -> Result<Outcome, CtlError> {
    let mut interrupt =
        signal(SignalKind::interrupt()).map_err(|e| CtlError::io("listening for Ctrl-C", e))?;
    // If moed leaves the bus (it stopped, or the bus dropped it), no Finished will come.
    let dbus = zbus::fdo::DBusProxy::new(&app.conn)
        .await
        .map_err(|e| app.fail_zbus(e))?;
    let mut departures = dbus
        .receive_name_owner_changed_with_args(&[(0, moed_dbus::BUS_NAME)])
        .await
        .map_err(|e| app.fail_zbus(e))?;
    let name = zbus::names::BusName::try_from(moed_dbus::BUS_NAME).map_err(|e| app.fail_zbus(e))?;
    if !dbus
        .name_has_owner(name)
        .await
        .map_err(|e| app.fail_zbus(e.into()))?
    {
        return Err(moed_left(app));
    }
    let mut interrupted = false;
    let mut printer = Printer::default();
    let mut alerts = Vec::new();
    let (reason, info) = loop {
        let event = tokio::select! {
            event = stream.next() => event,
            _ = interrupt.recv() => {
                if interrupted {
                    return Err(CtlError::Interrupted);
                }
                interrupted = true;
                // NotFound: it finished meanwhile; its Finished signal is on its way.
                if let Err(err) = stream.cancel().await
                    && !matches!(err, MoedError::NotFound(_))
                {
                    return Err(app.fail(err, None));
                }
                continue;
            }
            Some(change) = departures.next() => {
                if change.args().is_ok_and(|args| args.new_owner().is_none()) {
                    return Err(moed_left(app));
                }
                continue;
            }
        };
        match event {
            None => {
                return Err(CtlError::Failed(
                    "the connection to moed closed before the request finished".into(),
                ));
            }
            Some(Err(err)) => return Err(app.fail(err, None)),
            Some(Ok(RequestEvent::Token { text, thinking })) => {
                if !app.json {
                    printer.token(app, &text, thinking && !sampling.no_thinking, thinking)?;
                }
            }
            Some(Ok(RequestEvent::Alert {
                severity,
                code,
                message,
                source,
            })) => {
                if !app.json {
                    printer.break_lines()?;
                    let t = moed_dbus::wire::terminal;
                    style::err(&format!(
                        "{} {} from {}: {}\n",
                        severity_label(&app.err, &t(&severity)),
                        t(&code),
                        t(&source),
                        t(&message)
                    ));
                }
                alerts.push(json!({
                    "severity": severity, "code": code, "message": message, "source": source,
                }));
            }
            Some(Ok(RequestEvent::Finished { reason, info })) => break (reason, info),
        }
    };
    if !app.json {
        printer.finish()?;
        if let Some(sources) = info.sources.as_ref().filter(|s| !s.is_empty()) {
            style::err(&app.err.dim(&sources_text(sources)));
        }
    }
    if let Some(note) = cut_note(&reason, &info, limit_flag).filter(|_| !app.json) {
        style::err(&app.err.dim(&note));
    }
    if sampling.stats && !app.json {
        style::err(&app.err.dim(&format!("[{}]\n", stats_line(&info))));
    }
    match reason.as_str() {
        "error" => Err(app.fail(
            MoedError::from_parts(
                info.error_name.as_deref().unwrap_or("Failed"),
                info.error_message
                    .clone()
                    .unwrap_or_else(|| "the request failed".into()),
            ),
            None,
        )),
        "cancelled" if interrupted => Err(CtlError::Interrupted),
        "cancelled" => Err(CtlError::Daemon(MoedError::Cancelled(
            info.error_message
                .clone()
                .unwrap_or_else(|| "the request was cancelled".into()),
        ))),
        _ => Ok(Outcome { info, alerts }),
    }
}

/// The note shown (on stderr) when an answer ended because a limit was reached, not because the
/// model finished: the text above it may stop mid-sentence.
fn cut_note(reason: &str, info: &GenerationInfo, limit_flag: &str) -> Option<String> {
    match reason {
        "max_tokens" => Some(format!(
            "[cut short: the answer reached the limit of {} generated tokens; raise it with {limit_flag}]\n",
            info.completion_tokens
        )),
        "length" => Some(
            "[cut short: the model's context is full (prompt and answer); start a shorter conversation]\n"
                .into(),
        ),
        _ => None,
    }
}

/// The documents retrieval put into the prompt, as printed after the answer.
fn sources_text(sources: &[(String, String)]) -> String {
    let mut out = String::from("Sources:\n");
    for (i, (source, id)) in sources.iter().enumerate() {
        let t = moed_dbus::wire::terminal;
        out.push_str(&format!("  [{}] {} (id {})\n", i + 1, t(source), t(id)));
    }
    out
}

fn moed_left(app: &App) -> CtlError {
    CtlError::NotRunning {
        bus: app.bus.to_string(),
        detail: "moed left the bus before the request finished".into(),
        hint: format!(
            "see why in its log (`journalctl -u moed`); {}",
            app.bus.start_hint()
        ),
    }
}

pub fn severity_label(style: &crate::style::Style, severity: &str) -> String {
    let label = format!("[{severity}]");
    match severity {
        "critical" | "error" => style.red(&style.bold(&label)),
        "warning" => style.yellow(&label),
        _ => style.cyan(&label),
    }
}

fn stats_line(info: &GenerationInfo) -> String {
    let decode_ms = info.total_ms - info.first_token_ms;
    let speed = if info.completion_tokens > 1 && decode_ms > 0.0 {
        format!(
            ", {:.1} tok/s",
            f64::from(info.completion_tokens - 1) * 1000.0 / decode_ms
        )
    } else {
        String::new()
    };
    format!(
        "{}: {} prompt + {} generated tokens, first token {:.0} ms{speed}, total {:.0} ms, queued {:.0} ms, model {}",
        info.finish_reason,
        info.prompt_tokens,
        info.completion_tokens,
        info.first_token_ms,
        info.total_ms,
        info.queue_ms,
        info.model
    )
}

/// Keeps stdout (answer) and stderr (thinking) each ending on a line break when done.
#[derive(Default)]
struct Printer {
    /// Something was written to stdout and it did not end with a newline.
    open_out: bool,
    open_err: bool,
}

impl Printer {
    fn token(&mut self, app: &App, text: &str, show: bool, thinking: bool) -> Result<(), CtlError> {
        if thinking {
            if show {
                style::err(&app.err.dim(text));
                self.open_err = !text.ends_with('\n');
            }
            return Ok(());
        }
        if self.open_err {
            style::err("\n");
            self.open_err = false;
        }
        out(text)?;
        if !text.is_empty() {
            self.open_out = !text.ends_with('\n');
        }
        Ok(())
    }

    fn break_lines(&mut self) -> Result<(), CtlError> {
        if self.open_err {
            style::err("\n");
            self.open_err = false;
        }
        if self.open_out {
            out("\n")?;
            self.open_out = false;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), CtlError> {
        self.break_lines()
    }
}
