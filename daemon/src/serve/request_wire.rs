//! The D-Bus shapes of a request: its options and input as the service's request, and the
//! service's results as `GenerationInfo` and `ScoredToken`s.

use moed_dbus::{
    ChatMessage, GenerateOptions, GenerationInfo, OutputConstraint, ScoreOptions, ScoredToken,
};
use moed_service::runner::{PromptInput, TokenScore};
use moed_service::service::{Finished, GenerateParams, ScoreParams};

use crate::generate::SamplingOverrides;
use crate::text::constraint::ConstraintSpec;
use crate::text::template;

/// A conversation as the service takes it.
pub fn chat(messages: Vec<ChatMessage>) -> PromptInput {
    PromptInput::Chat(
        messages
            .into_iter()
            .map(|m| template::ChatMessage {
                role: m.role,
                content: m.content,
            })
            .collect(),
    )
}

/// The service's request for `input` under the parsed options.
pub fn params(input: PromptInput, options: GenerateOptions) -> GenerateParams {
    let retrieval = options.retrieval_on();
    GenerateParams {
        input,
        raw: options.raw,
        system: options.system,
        sampling: SamplingOverrides {
            temperature: options.temperature.map(|v| v as f32),
            top_k: options.top_k.map(|v| v as usize),
            top_p: options.top_p.map(|v| v as f32),
            min_p: options.min_p.map(|v| v as f32),
            repetition_penalty: options.repetition_penalty.map(|v| v as f32),
        },
        max_tokens: options.max_tokens.map(|v| v as usize),
        stop: options.stop,
        seed: options.seed,
        ignore_eos: options.ignore_eos,
        retrieval,
        model: options.model,
        plugins: options.plugins,
        plugin_params: options.plugin_params,
        sources: options.sources,
        constraint: options.constraint.map(|c| match c {
            OutputConstraint::JsonSchema(text) => ConstraintSpec::JsonSchema(text),
            OutputConstraint::Regex(text) => ConstraintSpec::Regex(text),
            OutputConstraint::JsonObject => ConstraintSpec::JsonObject,
        }),
    }
}

/// The service's scoring request under the parsed options.
pub fn score_params(options: ScoreOptions) -> ScoreParams {
    ScoreParams {
        model: options.model,
        plugins: options.plugins,
        plugin_params: options.plugin_params,
    }
}

/// What a finished generation reports on the bus, with the alerts its plugins raised.
pub fn info(finished: Finished) -> GenerationInfo {
    let Finished {
        request_id,
        queue_ms,
        generation,
        alerts,
    } = finished;
    let outcome = generation.outcome;
    let stats = &outcome.stats;
    GenerationInfo {
        request_id,
        model: generation.model,
        finish_reason: stats.finish_reason.as_str().to_string(),
        text: dbus_text(outcome.text),
        thinking: dbus_text(outcome.thinking),
        prompt_tokens: stats.prompt_tokens as u32,
        completion_tokens: stats.generated_tokens as u32,
        token_ids: outcome.token_ids,
        queue_ms,
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
        sources: (!generation.sources.is_empty()).then_some(generation.sources),
        tool_calls: None,
    }
}

/// One scored token as `Engine.Score` returns it.
pub fn scored(token: TokenScore) -> ScoredToken {
    ScoredToken {
        id: token.id,
        text: dbus_text(token.text),
        has_logprob: token.logprob.is_some(),
        logprob: token.logprob.unwrap_or(0.0),
    }
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
