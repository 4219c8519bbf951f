//! The D-Bus shapes of a request: its options and input as the service's request, and the
//! service's results as `GenerationInfo` and `ScoredToken`s.

use moed_dbus::{
    ChatMessage, ChatTurn, GenerateOptions, GenerationInfo, MoedError, OutputConstraint,
    ScoreOptions, ScoredToken, ToolChoice,
};
use moed_service::runner::{PromptInput, TokenScore};
use moed_service::service::{Finished, GenerateParams, ScoreParams};
use moed_wire::quote;

use crate::generate::SamplingOverrides;
use crate::text::constraint::ConstraintSpec;
use crate::text::template;
use crate::text::tools::{self, ToolCall};

/// A conversation as the service takes it.
pub fn chat(messages: Vec<ChatMessage>) -> PromptInput {
    PromptInput::Chat(
        messages
            .into_iter()
            .map(|m| template::ChatMessage {
                role: m.role,
                content: m.content,
                ..Default::default()
            })
            .collect(),
    )
}

/// A conversation of turns with extras (`ChatTurns`) as the service takes it; an unknown extra
/// is refused by name (its role and content are the service's to check).
pub fn turns(messages: Vec<ChatTurn>) -> Result<PromptInput, MoedError> {
    let mut out = Vec::with_capacity(messages.len().min(1024));
    for (i, turn) in messages.into_iter().enumerate() {
        let mut m = template::ChatMessage {
            role: turn.role,
            content: turn.content,
            ..Default::default()
        };
        for (key, value) in turn.extras {
            let slot = match key.as_str() {
                "tool_calls" => &mut m.tool_calls,
                "tool_call_id" => &mut m.tool_call_id,
                "name" => &mut m.name,
                _ => {
                    return Err(MoedError::InvalidArgument(format!(
                        "messages[{i}]: unknown extra {}; expected tool_calls, tool_call_id or name",
                        quote(&key)
                    )));
                }
            };
            *slot = Some(value);
        }
        out.push(m);
    }
    Ok(PromptInput::Chat(out))
}

/// The answer's calls as `info.tool_calls` gives them (CONTRACT.md, *Tools*).
fn tool_calls_json(request_id: &str, calls: &[ToolCall]) -> Option<String> {
    if calls.is_empty() {
        return None;
    }
    let list: Vec<serde_json::Value> = calls
        .iter()
        .enumerate()
        .map(|(n, c)| {
            serde_json::json!({
                "id": format!("call_{request_id}_{n}"),
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments},
            })
        })
        .collect();
    serde_json::to_string(&list).ok()
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
        tools: options.tools,
        tool_choice: options.tool_choice.map(|c| match c {
            ToolChoice::Auto => tools::ToolChoice::Auto,
            ToolChoice::None => tools::ToolChoice::None,
            ToolChoice::Required => tools::ToolChoice::Required,
            ToolChoice::Function(name) => tools::ToolChoice::Function(name),
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
    let tool_calls = tool_calls_json(&request_id, &outcome.tool_calls);
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
        tool_calls,
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
