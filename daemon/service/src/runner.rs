//! One request's run through its plugins to the engine: input filters, retrieval, the gate, the
//! generation loop and the output filters; or scoring. Runs on a blocking thread, never on an
//! async executor.

use std::sync::atomic::{AtomicBool, Ordering};

use moed_plugins::{Alert, CallFailure, FilterError, Severity};

use crate::ServiceError;
use crate::config::RetrievalConfig;
use crate::engine::{EngineError, score_tokens_until};
use crate::generate::{self, Event, GenerateError, GenerateRequest, Outcome, Prompt};
use crate::models::LoadedModel;
use crate::plugins::{FilteredEvents, RequestFilters};
use crate::request_plugins::RequestPlugins;
use crate::retrieval;
use crate::text::constraint::ConstraintError;
use crate::text::model::TextModelError;
use crate::text::template::ChatMessage;

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
    /// A filter plugin's alert.
    Alert(Alert),
}

/// What a finished generation reports; the request's alerts are kept by the caller.
#[derive(Debug, Clone)]
pub struct Generation {
    /// The model package that answered.
    pub model: String,
    /// The engine's account (token ids, statistics, the stop string met), its answer and
    /// thinking text being what the output filters released: what the client was sent.
    pub outcome: Outcome,
    /// Retrieved passages put into the prompt, (source, document id), best first.
    pub sources: Vec<(String, String)>,
}

/// One token of a scored text and its logprob given the tokens before it (none for the first).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenScore {
    pub id: u32,
    pub text: String,
    pub logprob: Option<f64>,
}

/// The generation request for `input`: the text as it is when `raw`, else the chat template
/// over an optional system message and the prompt, or over the conversation.
pub fn prompt_of(input: &PromptInput, raw: bool, system: Option<&str>) -> Prompt {
    match input {
        PromptInput::Text(prompt) if raw => Prompt::Raw(prompt.clone()),
        PromptInput::Text(prompt) => {
            let mut messages = Vec::new();
            if let Some(system) = system {
                messages.push(ChatMessage::new("system", system));
            }
            messages.push(ChatMessage::new("user", prompt));
            Prompt::Chat(messages)
        }
        PromptInput::Chat(messages) => Prompt::Chat(messages.clone()),
    }
}

fn map_error(err: GenerateError) -> ServiceError {
    match err {
        GenerateError::Sampling(_)
        | GenerateError::EmptyPrompt
        | GenerateError::PromptTooLong { .. }
        | GenerateError::ZeroMaxTokens
        | GenerateError::EmptyStop
        | GenerateError::Text(TextModelError::NoChatTemplate)
        | GenerateError::Text(TextModelError::Sampling(_))
        | GenerateError::Engine(EngineError::ContextOverflow { .. })
        | GenerateError::Constraint(
            ConstraintError::Invalid { .. } | ConstraintError::Unsupported(_),
        )
        | GenerateError::Tools(_) => ServiceError::InvalidArgument(err.to_string()),
        other => ServiceError::Failed(other.to_string()),
    }
}

/// A filter's verdict as the request's error: a rejection, or a parameter of the request the
/// filter refused, is the client's doing; a failed filter refuses the request (filters fail
/// closed).
fn filter_error(err: FilterError) -> ServiceError {
    match err {
        FilterError::Failed {
            plugin,
            failure: CallFailure::Param { key, message },
            ..
        } => ServiceError::InvalidArgument(param_refused("filter", &plugin, &key, &message)),
        FilterError::Rejected { .. } => ServiceError::InvalidArgument(err.to_string()),
        FilterError::Failed { .. } => ServiceError::PluginFailed(err.to_string()),
    }
}

/// The request's error when a plugin refused one of its `plugin_params`.
pub fn param_refused(kind: &str, plugin: &str, key: &str, message: &str) -> String {
    format!("option 'plugin_params.{key}': {kind} plugin '{plugin}' refused it: {message}")
}

fn alert_event(alert: &Alert) -> StreamEvent {
    StreamEvent::Alert(alert.clone())
}

/// Runs one generation to its end through the request's plugins: the prompt through the input
/// filters, then retrieval puts documents into it, the request's gate routes it, the streamed
/// text goes through the output filters. Text and alerts go to `on_event` as they come; every
/// alert is also left in `alerts` (for the audit log), whether the request succeeds or not.
#[allow(clippy::too_many_arguments)]
pub fn generate(
    model: &LoadedModel,
    mut req: GenerateRequest,
    sources: &[String],
    plugins: &RequestPlugins,
    retrieval_config: &RetrievalConfig,
    cancel: &AtomicBool,
    alerts: &mut Vec<Alert>,
    on_event: &mut dyn FnMut(StreamEvent),
) -> Result<Generation, ServiceError> {
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
    let used = add_documents(model, sources, plugins, retrieval_config, &mut req)?;
    for a in used.alerts {
        raise(a, alerts, on_event);
    }
    let mut events = FilteredEvents::new(&filters, cancel);
    let mut handle = |event: Event| {
        events.on_event(event, &mut |e| match e {
            Event::Text(text) => on_event(StreamEvent::Text {
                text,
                thinking: false,
            }),
            Event::Thinking(text) => on_event(StreamEvent::Text {
                text,
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
    if let Some(message) = refused_param(plugins) {
        return Err(ServiceError::InvalidArgument(message));
    }
    if let Some(a) = gate_fallback_alert(plugins) {
        raise(a, alerts, on_event);
    }
    let released = (
        events.answer.released().to_owned(),
        events.thinking.released().to_owned(),
    );
    events.finish().map_err(filter_error)?;
    let mut outcome = outcome.map_err(map_error)?;
    // Without filters the outcome's own text is the reference; with them, what they released.
    if !unfiltered {
        (outcome.text, outcome.thinking) = released;
    }
    Ok(Generation {
        model: model.name.clone(),
        outcome,
        sources: used.sources,
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
    sources: &[String],
    plugins: &RequestPlugins,
    config: &RetrievalConfig,
    req: &mut GenerateRequest,
) -> Result<Retrieval, ServiceError> {
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
    let params = retrieval::retrieval_params(&plugins.params, sources);
    let (docs, alerts) = retrieval::retrieve(
        &plugins.retrieval,
        &query,
        config.max_documents as usize,
        &params,
    )
    .map_err(ServiceError::InvalidArgument)?;
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
    // A copy: the prompt is rewritten while the count renders it with the request's tools.
    let tools = req.template_tools().cloned();
    let tools = tools.as_ref();
    let mut count = |p: &Prompt| -> Result<usize, GenerateError> {
        Ok(match p {
            Prompt::Raw(raw) => text.encode_raw(raw)?.len(),
            Prompt::Chat(messages) => text
                .encode_rendered(&text.render_chat(messages, tools)?)?
                .len(),
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

/// The request's error when its gate plugin refused one of the request's parameters (the
/// generation stopped there: running on without the parameter would hide the client's mistake).
pub fn refused_param(plugins: &RequestPlugins) -> Option<String> {
    plugins.gate.as_ref()?.param_error()
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
) -> Result<Vec<TokenScore>, ServiceError> {
    let ids = model
        .text
        .encode_raw(text)
        .map_err(|e| ServiceError::InvalidArgument(format!("text: {e}")))?;
    if ids.is_empty() {
        return Err(ServiceError::InvalidArgument(
            "text: it has no tokens".into(),
        ));
    }
    let context = model.text.context_length();
    if ids.len() > context {
        return Err(ServiceError::InvalidArgument(format!(
            "text: {} tokens exceed the model's context length of {context}",
            ids.len()
        )));
    }
    // In chunks whose logits stay within a bound (engine::score), whatever the text length.
    let logprobs = score_tokens_until(&model.engine, &ids, plugins.engine_gate(), &mut || {
        cancel.load(Ordering::Relaxed)
    })
    .map_err(|e| match refused_param(plugins) {
        Some(message) => ServiceError::InvalidArgument(message),
        None => ServiceError::Failed(e.to_string()),
    })?
    .ok_or_else(|| ServiceError::Cancelled("the request was cancelled".into()))?;
    let tokenizer = model.text.tokenizer();
    Ok(ids
        .iter()
        .zip(logprobs)
        .map(|(&id, logprob)| TokenScore {
            id,
            text: tokenizer.decode(&[id]).unwrap_or_default(),
            logprob,
        })
        .collect())
}
