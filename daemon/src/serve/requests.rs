//! One inference request from admission to its result: option checks, the request's plugins,
//! queue place, execution on the blocking pool, alerts into the audit log, expert statistics
//! persisted before the caller is answered.

use std::sync::Arc;
use std::time::Instant;

use moed_dbus::options::OptionDict;
use moed_dbus::{ChatMessage, GenerateOptions, GenerationInfo, MoedError};
use tokio::sync::mpsc::UnboundedSender;

use super::auth::Caller;
use super::daemon::Daemon;
use super::models::LoadedModel;
use super::request_plugins::{self, RequestPlugins, Use};
use super::runner::{self, PromptInput, StreamEvent};
use super::scheduler::Ticket;

/// A checked request holding its queue place.
pub struct Prepared {
    pub model: Arc<LoadedModel>,
    pub ticket: Ticket,
    pub input: PromptInput,
    pub options: GenerateOptions,
    /// Its plugins, chosen at admission from the plugin set of that moment.
    pub plugins: RequestPlugins,
    /// The caller's uid, for the alert audit log.
    pub uid: Option<u32>,
}

const ROLES: &[&str] = &["system", "user", "assistant"];

/// Parses options, checks the input, picks the model and takes a queue place (or `Busy`).
pub fn prepare(
    daemon: &Daemon,
    caller: &Caller,
    input: PromptInput,
    options: &OptionDict,
) -> Result<Prepared, MoedError> {
    let options = GenerateOptions::from_dict(options)?;
    match &input {
        PromptInput::Text(_) => {}
        PromptInput::Chat(messages) => check_messages(messages, &options)?,
    }
    if options.ignore_eos && options.max_tokens.is_none() {
        return Err(MoedError::InvalidArgument(
            "option 'ignore_eos' needs 'max_tokens': generation would only end at the context length".into(),
        ));
    }
    check_sources(daemon, &options.sources)?;
    let model = daemon.registry.for_request(options.model.as_deref())?;
    let plugins = request_plugins::resolve(
        daemon.plugin_set(),
        &options.plugins,
        options.plugin_params.clone(),
        &model,
        Use::Generate {
            retrieval: options.retrieval_on(),
        },
    )?;
    let ticket = daemon.scheduler.admit(&caller.unique_name)?;
    Ok(Prepared {
        model,
        ticket,
        input,
        options,
        plugins,
        uid: Some(caller.uid),
    })
}

/// Every label of the `sources` option must be a data source the daemon holds.
fn check_sources(daemon: &Daemon, sources: &[String]) -> Result<(), MoedError> {
    if sources.is_empty() {
        return Ok(());
    }
    let known = daemon.sources.labels();
    for label in sources {
        if !known.contains(label) {
            return Err(MoedError::NotFound(format!(
                "option 'sources': no data source labelled '{label}'; the sources are: {}",
                if known.is_empty() {
                    "(none configured)".to_string()
                } else {
                    known.join(", ")
                }
            )));
        }
    }
    Ok(())
}

fn check_messages(messages: &[ChatMessage], options: &GenerateOptions) -> Result<(), MoedError> {
    if messages.is_empty() {
        return Err(MoedError::InvalidArgument(
            "messages: the conversation is empty; send at least one user message".into(),
        ));
    }
    for (i, m) in messages.iter().enumerate() {
        if !ROLES.contains(&m.role.as_str()) {
            return Err(MoedError::InvalidArgument(format!(
                "messages[{i}]: unknown role '{}'; expected system, user or assistant",
                m.role
            )));
        }
    }
    if options.raw {
        return Err(MoedError::InvalidArgument(
            "option 'raw' applies to Complete and Generate only; Chat always uses the chat template".into(),
        ));
    }
    if options.system.is_some() {
        return Err(MoedError::InvalidArgument(
            "option 'system' applies to Complete and Generate only; put a system message into the conversation".into(),
        ));
    }
    Ok(())
}

/// Waits for a slot, runs the request on the blocking pool, sends text to `events` as it comes.
pub async fn execute(
    daemon: Arc<Daemon>,
    prepared: Prepared,
    events: Option<UnboundedSender<StreamEvent>>,
) -> Result<GenerationInfo, MoedError> {
    let Prepared {
        model,
        mut ticket,
        input,
        options,
        plugins,
        uid,
    } = prepared;
    let request_id = ticket.id().to_string();
    let queued_at = Instant::now();
    ticket.run_slot().await?;
    let queue_ms = queued_at.elapsed().as_secs_f64() * 1e3;
    let cancel = ticket.cancel_flag();
    let run_model = model.clone();
    let run_daemon = daemon.clone();
    let run_request_id = request_id.clone();
    log::info!(
        request_id = request_id.as_str(), model = model.name.as_str();
        "request {request_id} started on {}", model.name
    );
    let result = tokio::task::spawn_blocking(move || {
        let mut emit = |event: StreamEvent| {
            if let Some(tx) = &events {
                // The receiver is gone only when the emitting task ended; nothing to tell then.
                let _ = tx.send(event);
            }
        };
        let retrieval = run_daemon.config().retrieval;
        let mut alerts = Vec::new();
        let result = runner::generate(
            &run_model,
            &input,
            &options,
            &plugins,
            &retrieval,
            &cancel,
            &mut alerts,
            &mut emit,
        );
        run_daemon.record_alerts(Some(&run_request_id), uid, &alerts);
        result
    })
    .await
    .map_err(|e| MoedError::Failed(format!("the generation thread failed: {e}")))?;

    let state = daemon.state.clone();
    let persist_model = model.clone();
    let persisted = tokio::task::spawn_blocking(move || persist_model.persist_stats(&state, 1))
        .await
        .map_err(|e| MoedError::Failed(format!("the state thread failed: {e}")))?;
    if let Err(err) = persisted {
        log::error!(request_id = request_id.as_str(); "persisting expert statistics: {err}");
    }
    drop(ticket);
    let mut info = result.inspect_err(|err| {
        log::info!(request_id = request_id.as_str(), model = model.name.as_str(); "request {request_id} failed: {err}");
    })?;
    info.request_id = request_id.clone();
    info.queue_ms = queue_ms;
    log::info!(
        request_id = request_id.as_str(), model = model.name.as_str();
        "request {request_id} finished ({}, {} tokens)", info.finish_reason, info.completion_tokens
    );
    Ok(info)
}
