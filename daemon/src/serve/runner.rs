//! The bridge from a D-Bus request to the library's generation loop and scoring; runs on a
//! blocking thread, never on the D-Bus executor.

use std::sync::atomic::{AtomicBool, Ordering};

use moed_dbus::{ChatMessage, GenerateOptions, GenerationInfo, MoedError, ScoredToken};

use super::models::LoadedModel;
use crate::engine::{EngineError, Logits};
use crate::generate::{self, Event, GenerateError, GenerateRequest, Prompt, SamplingOverrides};
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
    #[allow(dead_code)] // Sent by plugins (issue 5); the signal and its forwarding exist already.
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

/// Runs one generation to its end, reporting text through `on_event`.
pub fn generate(
    model: &LoadedModel,
    input: &PromptInput,
    options: &GenerateOptions,
    cancel: &AtomicBool,
    on_event: &mut dyn FnMut(StreamEvent),
) -> Result<GenerationInfo, MoedError> {
    let req = build_request(input, options);
    let mut forward = |event: Event| match event {
        Event::Text(text) => on_event(StreamEvent::Text {
            text: dbus_text(text),
            thinking: false,
        }),
        Event::Thinking(text) => on_event(StreamEvent::Text {
            text: dbus_text(text),
            thinking: true,
        }),
        Event::Finished(_) => {}
    };
    let outcome = generate::generate(&model.engine, &model.text, &req, cancel, &mut forward)
        .map_err(map_error)?;
    let stats = &outcome.stats;
    Ok(GenerationInfo {
        request_id: String::new(),
        model: model.name.clone(),
        finish_reason: stats.finish_reason.as_str().to_string(),
        text: dbus_text(outcome.text.clone()),
        thinking: dbus_text(outcome.thinking.clone()),
        prompt_tokens: stats.prompt_tokens as u32,
        completion_tokens: stats.generated_tokens as u32,
        token_ids: outcome.token_ids.clone(),
        queue_ms: 0.0,
        first_token_ms: stats.time_to_first_token_s * 1e3,
        total_ms: stats.total_s * 1e3,
        error_name: None,
        error_message: None,
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
