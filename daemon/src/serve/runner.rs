//! The bridge from a D-Bus request to the library's generation loop and scoring; runs on a
//! blocking thread, never on the D-Bus executor.

use std::sync::atomic::{AtomicBool, Ordering};

use moed_dbus::{ChatMessage, GenerateOptions, GenerationInfo, MoedError, ScoredToken};
use moed_plugins::{Alert, FilterError, Severity};

use super::models::LoadedModel;
use super::request_plugins::RequestPlugins;
use super::retrieval;
use crate::config::RetrievalConfig;
use crate::engine::{EngineError, score_tokens_until};
use crate::generate::{self, Event, GenerateError, GenerateRequest, Prompt, SamplingOverrides};
use crate::plugins::{FilteredEvents, RequestFilters};
use crate::text::model::TextModelError;
use crate::text::template;

/// What a request asks the model.
#[derive(Debug, Clone)]
pub enum PromptInput {
    /// `Complete`/`Generate`: a user prompt (chat template unless `raw`).
    Text(String),
    /// `Chat`/`GenerateChat`: a conversation.
    Chat(Vec<ChatMessage>),
}

/// Text on its way to the client.
#[derive(Debug, Clone)]
pub enum StreamEvent {
    Text {
        text: String,
        thinking: bool,
    },
    /// A filter plugin's alert (`source`: the plugin's name).
    Alert {
        severity: String,
        code: String,
        message: String,
        source: String,
    },
}

fn build_request(input: &PromptInput, options: &GenerateOptions) -> GenerateRequest {
    let prompt = match input {
        PromptInput::Text(prompt) if options.raw => Prompt::Raw(prompt.clone()),
        PromptInput::Text(prompt) => {
            let mut messages = Vec::new();
            if let Some(system) = &options.system {
                messages.push(template::ChatMessage::new("system", system));
            }
            messages.push(template::ChatMessage::new("user", prompt));
            Prompt::Chat(messages)
        }
        PromptInput::Chat(messages) => Prompt::Chat(
            messages
                .iter()
                .map(|m| template::ChatMessage::new(&m.role, &m.content))
                .collect(),
        ),
    };
    let mut req = GenerateRequest::new(prompt);
    req.sampling = SamplingOverrides {
        temperature: options.temperature.map(|v| v as f32),
        top_k: options.top_k.map(|v| v as usize),
        top_p: options.top_p.map(|v| v as f32),
        min_p: options.min_p.map(|v| v as f32),
        repetition_penalty: options.repetition_penalty.map(|v| v as f32),
    };
    req.max_tokens = options.max_tokens.map(|v| v as usize);
    req.stop = options.stop.clone();
    req.seed = options.seed;
    req.ignore_eos = options.ignore_eos;
    req
}

fn map_error(err: GenerateError) -> MoedError {
    match err {
        GenerateError::Sampling(_)
        | GenerateError::EmptyPrompt
        | GenerateError::PromptTooLong { .. }
        | GenerateError::ZeroMaxTokens
        | GenerateError::EmptyStop
        | GenerateError::Text(TextModelError::NoChatTemplate)
        | GenerateError::Text(TextModelError::Sampling(_))
        | GenerateError::Engine(EngineError::ContextOverflow { .. }) => {
            MoedError::InvalidArgument(err.to_string())
        }
        other => MoedError::Failed(other.to_string()),
    }
}

/// A filter's verdict as the request's error: a rejection is the client's input, a failed
/// filter refuses the request (filters fail closed).
fn filter_error(err: FilterError) -> MoedError {
    match err {
        FilterError::Rejected { .. } => MoedError::InvalidArgument(err.to_string()),
        FilterError::Failed { .. } => MoedError::PluginFailed(err.to_string()),
    }
}

fn alert_event(alert: &Alert) -> StreamEvent {
    StreamEvent::Alert {
        severity: alert.severity.as_str().to_string(),
        code: alert.code.clone(),
        message: dbus_text(alert.message.clone()),
        source: alert.plugin.clone(),
    }
}

/// Runs one generation to its end through the request's plugins: the prompt through the input
/// filters, then retrieval puts documents into it, the request's gate routes it, the streamed
/// text goes through the output filters. Text and alerts go to `on_event` as they come; every
/// alert is also left in `alerts` (for the audit log), whether the request succeeds or not.
#[allow(clippy::too_many_arguments)]
pub fn generate(
    model: &LoadedModel,
    input: &PromptInput,
    options: &GenerateOptions,
    plugins: &RequestPlugins,
    retrieval_config: &RetrievalConfig,
    cancel: &AtomicBool,
    alerts: &mut Vec<Alert>,
    on_event: &mut dyn FnMut(StreamEvent),
) -> Result<GenerationInfo, MoedError> {
    let mut req = build_request(input, options);
    let unfiltered = plugins.filters.is_empty();
    let filters = RequestFilters::new(plugins.filters.clone(), plugins.params.clone());
    let raise = |a: Alert, alerts: &mut Vec<Alert>, on_event: &mut dyn FnMut(StreamEvent)| {
        on_event(alert_event(&a));
        alerts.push(a);
    };
    let prompt_alerts = filters
        .filter_prompt(&mut req.prompt)
        .map_err(filter_error)?;
    for a in prompt_alerts {
        raise(a, alerts, on_event);
    }
    let used = add_documents(model, options, plugins, retrieval_config, &mut req)?;
    for a in used.alerts {
        raise(a, alerts, on_event);
    }
    let mut events = FilteredEvents::new(&filters, cancel);
    let mut handle = |event: Event| {
        events.on_event(event, &mut |e| match e {
            Event::Text(text) => on_event(StreamEvent::Text {
                text: dbus_text(text),
                thinking: false,
            }),
            Event::Thinking(text) => on_event(StreamEvent::Text {
                text: dbus_text(text),
                thinking: true,
            }),
            Event::Finished(_) => {}
        });
        let raised = events.answer.take_alerts();
        let raised = raised.into_iter().chain(events.thinking.take_alerts());
        for a in raised {
            on_event(alert_event(&a));
            alerts.push(a);
        }
    };
    let outcome = generate::generate_with_gate(
        &model.engine,
        &model.text,
        &req,
        plugins.engine_gate(),
        cancel,
        &mut handle,
    );
    if let Some(a) = gate_fallback_alert(plugins) {
        raise(a, alerts, on_event);
    }
    let released = (
        events.answer.released().to_owned(),
        events.thinking.released().to_owned(),
    );
    events.finish().map_err(filter_error)?;
    let outcome = outcome.map_err(map_error)?;
    // Without filters the outcome's own text is the reference; with them, what they released.
    let (text, thinking) = if unfiltered {
        (outcome.text.clone(), outcome.thinking.clone())
    } else {
        released
    };
    let stats = &outcome.stats;
    Ok(GenerationInfo {
        request_id: String::new(),
        model: model.name.clone(),
        finish_reason: stats.finish_reason.as_str().to_string(),
        text: dbus_text(text),
        thinking: dbus_text(thinking),
        prompt_tokens: stats.prompt_tokens as u32,
        completion_tokens: stats.generated_tokens as u32,
        token_ids: outcome.token_ids.clone(),
        queue_ms: 0.0,
        first_token_ms: stats.time_to_first_token_s * 1e3,
        total_ms: stats.total_s * 1e3,
        error_name: None,
        error_message: None,
        alerts: (!alerts.is_empty()).then(|| {
            alerts
                .iter()
                .map(|a| {
                    (
                        a.severity.as_str().to_string(),
                        a.code.clone(),
                        dbus_text(a.message.clone()),
                        a.plugin.clone(),
                    )
                })
                .collect()
        }),
        sources: (!used.sources.is_empty()).then_some(used.sources),
    })
}

/// Documents retrieval put into a request's prompt, and the alerts it raised.
struct Retrieval {
    sources: Vec<(String, String)>,
    alerts: Vec<Alert>,
}

/// Asks the request's retrieval plugins for documents for its query and puts the best into the
/// prompt within the token budget (`[retrieval]`; the prompt keeps room for the answer: the
/// request's `max_tokens`, at most a quarter of the context). Fails open.
fn add_documents(
    model: &LoadedModel,
    options: &GenerateOptions,
    plugins: &RequestPlugins,
    config: &RetrievalConfig,
    req: &mut GenerateRequest,
) -> Result<Retrieval, MoedError> {
    let mut out = Retrieval {
        sources: Vec::new(),
        alerts: Vec::new(),
    };
    if plugins.retrieval.is_empty() {
        return Ok(out);
    }
    let Some(query) = retrieval::query_of(&req.prompt).map(str::to_owned) else {
        return Ok(out);
    };
    let params = retrieval::retrieval_params(&plugins.params, &options.sources);
    let (docs, alerts) = retrieval::retrieve(
        &plugins.retrieval,
        &query,
        config.max_documents as usize,
        &params,
    );
    out.alerts = alerts;
    if docs.is_empty() {
        return Ok(out);
    }
    let context = model.text.context_length();
    let reserve = req
        .max_tokens
        .or(model.text.default_max_tokens())
        .unwrap_or(64)
        .min(context / 4)
        .max(1);
    let budget = retrieval::Budget {
        passage_tokens: config.max_context_tokens as usize,
        prompt_tokens: context.saturating_sub(reserve),
    };
    let text = &model.text;
    let mut count = |p: &Prompt| -> Result<usize, GenerateError> {
        Ok(match p {
            Prompt::Raw(raw) => text.encode_raw(raw)?.len(),
            Prompt::Chat(messages) => text.encode_rendered(&text.render_chat(messages)?)?.len(),
        })
    };
    let assembled =
        retrieval::assemble(&mut req.prompt, &docs, budget, &mut count).map_err(map_error)?;
    out.sources = assembled
        .used
        .iter()
        .map(|d| (d.source.clone(), d.id.clone()))
        .collect();
    Ok(out)
}

/// An alert when the request's gate plugin failed and layers were routed natively.
pub fn gate_fallback_alert(plugins: &RequestPlugins) -> Option<Alert> {
    let gate = plugins.gate.as_ref()?;
    let n = gate.fallbacks();
    (n > 0).then(|| Alert {
        plugin: gate.plugin().name().to_owned(),
        severity: Severity::Warning,
        code: "gate.fallback".into(),
        message: format!(
            "{n} layer call(s) were routed by the model's own rule because the gate plugin failed: {}",
            gate.last_failure().unwrap_or_default()
        ),
    })
}

/// The logprob of each token of `text` (raw, BOS rule of the package) given those before it.
pub fn score(
    model: &LoadedModel,
    text: &str,
    plugins: &RequestPlugins,
    cancel: &AtomicBool,
) -> Result<Vec<ScoredToken>, MoedError> {
    let ids = model
        .text
        .encode_raw(text)
        .map_err(|e| MoedError::InvalidArgument(format!("text: {e}")))?;
    if ids.is_empty() {
        return Err(MoedError::InvalidArgument("text: it has no tokens".into()));
    }
    let context = model.text.context_length();
    if ids.len() > context {
        return Err(MoedError::InvalidArgument(format!(
            "text: {} tokens exceed the model's context length of {context}",
            ids.len()
        )));
    }
    // In chunks whose logits stay within a bound (engine::score), whatever the text length.
    let logprobs = score_tokens_until(&model.engine, &ids, plugins.engine_gate(), &mut || {
        cancel.load(Ordering::Relaxed)
    })
    .map_err(|e| MoedError::Failed(e.to_string()))?
    .ok_or_else(|| MoedError::Cancelled("the request was cancelled".into()))?;
    let tokenizer = model.text.tokenizer();
    Ok(ids
        .iter()
        .zip(logprobs)
        .map(|(&id, logprob)| ScoredToken {
            id,
            text: dbus_text(tokenizer.decode(&[id]).unwrap_or_default()),
            has_logprob: logprob.is_some(),
            logprob: logprob.unwrap_or(0.0),
        })
        .collect())
}

/// D-Bus strings may not contain U+0000, and the bus disconnects a peer that sends one; a
/// model can generate it (a byte-level token for byte 0), so it travels as U+FFFD. The token ids
/// in `info` keep what was generated.
fn dbus_text(text: String) -> String {
    if text.contains('\0') {
        text.replace('\0', "\u{FFFD}")
    } else {
        text
    }
}
