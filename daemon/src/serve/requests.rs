//! One inference request from admission to its result: option checks, the request's plugins,
//! queue place, execution on the blocking pool, alerts into the audit log, expert statistics
//! persisted before the caller is answered.

use std::sync::Arc;
use std::time::Instant;

use moed_dbus::options::OptionDict;
use moed_dbus::wire;
use moed_dbus::{GenerateOptions, GenerationInfo, MoedError};
use moed_service::models::LoadedModel;
use moed_service::request_plugins::{self, RequestPlugins, Use};
use moed_service::runner::{self, PromptInput, StreamEvent};
use moed_service::scheduler::Ticket;
use tokio::sync::mpsc::UnboundedSender;

use super::auth::Caller;
use super::daemon::Daemon;
use super::error::wire_error;
use super::request_wire;
use crate::text::template::ChatMessage;

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

/// Most messages of one conversation (`Chat`, `GenerateChat`).
pub const MAX_CHAT_MESSAGES: usize = 1024;

/// Bytes of prompt allowed per token of the model's context: generous (text averages about 4
/// bytes a token), so any prompt that fits the context passes, while one that cannot fit is
/// refused before the tokenizer spends seconds and gigabytes on it.
pub const PROMPT_BYTES_PER_TOKEN: usize = 16;

/// Parses options, checks the input, picks the model and takes a queue place (or `Busy`).
/// Every size is checked before the work it bounds: the input's total against the configured
/// cap first, then the options, then the input against the model's context.
pub fn prepare(
    daemon: &Daemon,
    caller: &Caller,
    input: PromptInput,
    options: &OptionDict,
) -> Result<Prepared, MoedError> {
    let cap = daemon.config().service.max_prompt_bytes as usize;
    let input_bytes = input_size(&input, cap)?;
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
    let model = daemon
        .registry
        .for_request(options.model.as_deref())
        .map_err(wire_error)?;
    let system = options.system.as_ref().map_or(0, String::len);
    check_prompt_bytes("prompt", input_bytes + system, &model, cap)?;
    let plugins = request_plugins::resolve(
        daemon.plugin_set(),
        &options.plugins,
        options.plugin_params.clone(),
        &model,
        Use::Generate {
            retrieval: options.retrieval_on(),
        },
    )
    .map_err(wire_error)?;
    let ticket = admit(daemon, caller)?;
    Ok(Prepared {
        model,
        ticket,
        input,
        options,
        plugins,
        uid: Some(caller.uid),
    })
}

/// A queue place for `caller`'s request (or `Busy`, `ShuttingDown`).
pub fn admit(daemon: &Daemon, caller: &Caller) -> Result<Ticket, MoedError> {
    daemon
        .scheduler
        .admit(&caller.unique_name, caller.uid)
        .map_err(wire_error)
}

/// Adds what one finished request counted to `model`'s expert statistics in the state store,
/// flushed, before its caller is answered. A store failure is logged, not returned: the request
/// itself succeeded.
pub async fn persist_stats(
    daemon: &Daemon,
    model: Arc<LoadedModel>,
    request_id: &str,
) -> Result<(), MoedError> {
    let state = daemon.state.clone();
    let persisted = tokio::task::spawn_blocking(move || model.persist_stats(&state, 1))
        .await
        .map_err(|e| MoedError::Failed(format!("the state thread failed: {e}")))?;
    if let Err(err) = persisted {
        log::error!(request_id = request_id; "persisting expert statistics: {err}");
    }
    Ok(())
}

/// The bytes of a request's input, refused past `cap` (`service.max_prompt_bytes`) or, for a
/// conversation, past [`MAX_CHAT_MESSAGES`]; counts first, then lengths, nothing copied.
fn input_size(input: &PromptInput, cap: usize) -> Result<usize, MoedError> {
    let (what, bytes) = match input {
        PromptInput::Text(prompt) => ("prompt", prompt.len()),
        PromptInput::Chat(messages) => {
            if messages.len() > MAX_CHAT_MESSAGES {
                return Err(MoedError::InvalidArgument(format!(
                    "messages: {} messages, at most {MAX_CHAT_MESSAGES}",
                    messages.len()
                )));
            }
            let bytes = messages
                .iter()
                .map(|m| m.role.len() + m.content.len())
                .fold(0usize, usize::saturating_add);
            ("messages", bytes)
        }
    };
    if bytes > cap {
        return Err(MoedError::InvalidArgument(format!(
            "{what}: {bytes} bytes, at most {cap} (service.max_prompt_bytes)"
        )));
    }
    Ok(bytes)
}

/// The most bytes of input (prompt, conversation or scored text) for `model`: what its context
/// could hold at [`PROMPT_BYTES_PER_TOKEN`], within `cap` (`service.max_prompt_bytes`).
pub fn prompt_limit(model: &LoadedModel, cap: usize) -> usize {
    model
        .text
        .context_length()
        .saturating_mul(PROMPT_BYTES_PER_TOKEN)
        .min(cap)
}

/// Refuses `bytes` of input for `model` past [`prompt_limit`], before tokenization.
pub fn check_prompt_bytes(
    what: &str,
    bytes: usize,
    model: &LoadedModel,
    cap: usize,
) -> Result<(), MoedError> {
    let limit = prompt_limit(model, cap);
    if bytes <= limit {
        return Ok(());
    }
    Err(MoedError::InvalidArgument(format!(
        "{what}: {bytes} bytes cannot fit the context of model {} ({} tokens); at most {limit} bytes \
         ({PROMPT_BYTES_PER_TOKEN} a token, within service.max_prompt_bytes = {cap})",
        wire::quote(&model.name),
        model.text.context_length()
    )))
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
                "option 'sources': no data source labelled {}; the sources are: {}",
                wire::quote(label),
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
                "messages[{i}]: unknown role {}; expected system, user or assistant",
                wire::quote(&m.role)
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
    ticket.run_slot().await.map_err(wire_error)?;
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
            request_wire::request(&input, &options),
            &options.sources,
            &plugins,
            &retrieval,
            &cancel,
            &mut alerts,
            &mut emit,
        );
        run_daemon.record_alerts(Some(&run_request_id), uid, &alerts);
        result.map(|generation| request_wire::info(generation, &alerts))
    })
    .await
    .map_err(|e| MoedError::Failed(format!("the generation thread failed: {e}")))?;

    persist_stats(&daemon, model.clone(), &request_id).await?;
    drop(ticket);
    let mut info = result.map_err(wire_error).inspect_err(|err| {
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
