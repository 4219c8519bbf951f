//! The bridge from a D-Bus request to the library's generation loop and scoring; runs on a
//! blocking thread, never on the D-Bus executor.

use std::sync::atomic::{AtomicBool, Ordering};

use moed_dbus::{ChatMessage, GenerateOptions, GenerationInfo, MoedError, ScoredToken};
use moed_plugins::{Alert, FilterError, FilterPlugin};

use super::models::LoadedModel;
use crate::engine::{EngineError, Logits};
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

/// Runs one generation to its end through `filters` (the prompt through the input filters, the
/// streamed text through the output filters), reporting text and alerts through `on_event`.
pub fn generate(
    model: &LoadedModel,
    input: &PromptInput,
    options: &GenerateOptions,
    filters: &[FilterPlugin],
    cancel: &AtomicBool,
    on_event: &mut dyn FnMut(StreamEvent),
) -> Result<GenerationInfo, MoedError> {
    let mut req = build_request(input, options);
    let unfiltered = filters.is_empty();
    let filters = RequestFilters::new(filters.to_vec(), Vec::new());
    let mut alerts = filters
        .filter_prompt(&mut req.prompt)
        .map_err(filter_error)?;
    for a in &alerts {
        on_event(alert_event(a));
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
    let outcome = generate::generate(&model.engine, &model.text, &req, cancel, &mut handle);
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
    })
}

/// The logprob of each token of `text` (raw, BOS rule of the package) given those before it.
pub fn score(
    model: &LoadedModel,
    text: &str,
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
    if cancel.load(Ordering::Relaxed) {
        return Err(MoedError::Cancelled("the request was cancelled".into()));
    }
    let mut seq = model.engine.new_sequence();
    let logits = model
        .engine
        .forward(&mut seq, &ids, Logits::All)
        .map_err(|e| MoedError::Failed(e.to_string()))?;
    let vocab = logits.len() / ids.len();
    let tokenizer = model.text.tokenizer();
    let mut out = Vec::with_capacity(ids.len());
    for (i, &id) in ids.iter().enumerate() {
        let piece = tokenizer.decode(&[id]).unwrap_or_default();
        let logprob = if i == 0 {
            None
        } else {
            let row = &logits[(i - 1) * vocab..i * vocab];
            Some(log_softmax_at(row, id as usize))
        };
        out.push(ScoredToken {
            id,
            text: dbus_text(piece),
            has_logprob: logprob.is_some(),
            logprob: logprob.unwrap_or(0.0),
        });
    }
    Ok(out)
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

fn log_softmax_at(row: &[f32], index: usize) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
    row.get(index)
        .map_or(f64::NEG_INFINITY, |&v| v as f64 - max - sum.ln())
}
