//! One generation request end to end: chat template, tokenization, prefill, then one token per step
//! with sampling, streamed text (thinking apart from the answer), stop conditions and timing.
//!
//! Free of printing and of process state so that the CLI and the D-Bus service share it: text is
//! handed to a callback as it is produced, and cancellation is a flag the caller may set from
//! another thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde::Serialize;

use crate::engine::{Engine, EngineError, Gate, Logits};
use crate::text::constraint::{Constraint, ConstraintError, ConstraintSpec};
use crate::text::detok::StreamDecoder;
use crate::text::model::{TextModel, TextModelError};
use crate::text::sampler::{Sampler, SamplerError};
use crate::text::stop::StopMatcher;
use crate::text::template::ChatMessage;
use crate::text::thinking::{Segment, ThinkingSplitter, prompt_opens_thinking};
use crate::text::tokenizer::TokenizerError;
use crate::text::tools::{CallSplitter, ToolCall, ToolChoice, ToolError, ToolRequest, ToolSyntax};

pub use crate::text::model::SamplingOverrides;

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error(transparent)]
    Text(#[from] TextModelError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error("invalid sampling parameter: {0}")]
    Sampling(#[from] SamplerError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("the prompt is empty (no tokens)")]
    EmptyPrompt,
    #[error(
        "the prompt is {prompt_tokens} tokens but the model's context length is {context_length} tokens \
         (a prompt may have at most {} tokens to leave room for generation)",
        .context_length.saturating_sub(1)
    )]
    PromptTooLong {
        prompt_tokens: usize,
        context_length: usize,
    },
    #[error("max_tokens must be at least 1")]
    ZeroMaxTokens,
    #[error("stop strings must not be empty")]
    EmptyStop,
    #[error(transparent)]
    Constraint(#[from] ConstraintError),
    #[error(transparent)]
    Tools(#[from] ToolError),
}

/// What the model is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prompt {
    /// Text given to the model as it stands (no chat template); the manifest's BOS rule applies.
    Raw(String),
    /// A conversation, rendered by the package's chat template with the generation prompt.
    Chat(Vec<ChatMessage>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct GenerateRequest {
    pub prompt: Prompt,
    pub sampling: SamplingOverrides,
    /// Most tokens to generate. Default: the package's `max_new_tokens`, else until EOS or the
    /// context is full.
    pub max_tokens: Option<usize>,
    /// Generation ends before the first occurrence of any of these (not included in the text).
    pub stop: Vec<String>,
    /// Random seed; the same seed, request and package give the same tokens. Default: random
    /// (reported in the stats so that a run can be repeated).
    pub seed: Option<u64>,
    /// End-of-sequence tokens cannot be chosen, so generation runs to `max_tokens` or the context
    /// limit (llama.cpp's `--ignore-eos`; transformers' `min_new_tokens`). For tests and benchmarks.
    pub ignore_eos: bool,
    /// What the answer must match (JSON schema, regular expression, any JSON object): tokens
    /// outside it are never sampled, and generation ends with [`FinishReason::Stop`] when the
    /// answer is complete. A thinking section the prompt opens is not constrained; the answer
    /// after it is.
    pub constraint: Option<ConstraintSpec>,
    /// Functions the model may call, through its chat template (a conversation only); with
    /// `required` or a named function the answer is constrained to one call.
    pub tools: Option<ToolRequest>,
}

impl GenerateRequest {
    /// The tools the template is given: none when `tool_choice` is `none`.
    pub fn template_tools(&self) -> Option<&serde_json::Value> {
        self.tools
            .as_ref()
            .filter(|t| t.choice != ToolChoice::None)
            .map(|t| &t.tools.listed)
    }

    pub fn new(prompt: Prompt) -> Self {
        GenerateRequest {
            prompt,
            sampling: SamplingOverrides::default(),
            max_tokens: None,
            stop: Vec::new(),
            seed: None,
            ignore_eos: false,
            constraint: None,
            tools: None,
        }
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// A stop string appeared, or the request's constraint was complete.
    Stop,
    /// The model produced an end-of-sequence token.
    Eos,
    /// `max_tokens` tokens were generated.
    MaxTokens,
    /// The context length was reached.
    Length,
    /// The caller cancelled.
    Cancelled,
    /// The answer called tools ([`Outcome::tool_calls`]).
    ToolCalls,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Eos => "eos",
            FinishReason::MaxTokens => "max_tokens",
            FinishReason::Length => "length",
            FinishReason::Cancelled => "cancelled",
            FinishReason::ToolCalls => "tool_calls",
        }
    }
}

/// What the callback receives, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Answer text, as soon as it is complete characters and cannot be part of a stop string.
    Text(String),
    /// Text of the thinking section (between the package's thinking markers).
    Thinking(String),
    /// The last event.
    Finished(FinishReason),
}

#[derive(Debug, Clone, Serialize)]
pub struct GenerateStats {
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    /// From the start of the request to the first token chosen (template, tokenizer, prefill).
    pub time_to_first_token_s: f64,
    /// The prompt's forward pass.
    pub prefill_s: f64,
    pub prefill_tokens_per_s: f64,
    /// From the first token to the last: one forward pass and one sampling per token.
    pub decode_s: f64,
    pub decode_tokens_per_s: f64,
    pub total_s: f64,
    pub finish_reason: FinishReason,
    pub seed: u64,
    /// Seconds between each generated token and the next (one fewer than the tokens): the
    /// per-token latency a streaming client sees. Not in the JSON form (it grows with the answer).
    #[serde(skip)]
    pub token_intervals_s: Vec<f32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The answer (text outside the thinking section), without the stop string.
    pub text: String,
    /// The thinking section's text; empty when the model did not think.
    pub thinking: String,
    /// Every generated id, including a final EOS id (which has no text).
    pub token_ids: Vec<u32>,
    pub prompt_token_ids: Vec<u32>,
    /// The stop string that ended generation, if one did.
    pub stop: Option<String>,
    /// The calls the answer made, when the request offered tools (then `text` is what the model
    /// wrote outside them, trimmed, and the reason is [`FinishReason::ToolCalls`]).
    pub tool_calls: Vec<ToolCall>,
    pub stats: GenerateStats,
}

/// Runs one request on `engine` with the text side `text` (loaded from the same package).
/// Text is reported through `on_event` as it is produced; setting `cancel` ends generation at the
/// next token with [`FinishReason::Cancelled`] (the outcome then holds what was generated so far).
pub fn generate(
    engine: &Engine,
    text: &TextModel,
    req: &GenerateRequest,
    cancel: &AtomicBool,
    on_event: &mut dyn FnMut(Event),
) -> Result<Outcome, GenerateError> {
    generate_with_gate(engine, text, req, None, cancel, on_event)
}

/// [`generate`] with `gate` choosing the experts of this request instead of the engine's rule
/// (a per-request gate plugin; other requests on the engine are not affected).
pub fn generate_with_gate(
    engine: &Engine,
    text: &TextModel,
    req: &GenerateRequest,
    gate: Option<Arc<dyn Gate>>,
    cancel: &AtomicBool,
    on_event: &mut dyn FnMut(Event),
) -> Result<Outcome, GenerateError> {
    let started = Instant::now();
    if req.max_tokens == Some(0) {
        return Err(GenerateError::ZeroMaxTokens);
    }
    if req.stop.iter().any(String::is_empty) {
        return Err(GenerateError::EmptyStop);
    }
    let params = text.sampling_params(&req.sampling)?;
    let seed = req.seed.unwrap_or_else(rand::random);
    let mut sampler = Sampler::new(params, seed)?;
    // Compiled before any model work: a bad schema costs no prefill.
    let syntax = tool_syntax(text, req)?;
    let tool_constraint = match (&req.tools, syntax) {
        (
            Some(
                tools @ ToolRequest {
                    choice: ToolChoice::Required | ToolChoice::Function(_),
                    ..
                },
            ),
            Some(syntax),
        ) => Some(ConstraintSpec::Grammar {
            option: "tools",
            lark: syntax.grammar(&tools.callable(), &|m| text.tokenizer().token_to_id(m)),
        }),
        _ => None,
    };
    let mut constraint: Option<Constraint> =
        match req.constraint.as_ref().or(tool_constraint.as_ref()) {
            Some(spec) => Some(
                text.constraint(spec)
                    .map_err(|e| blame_tool(text, req, e))?,
            ),
            None => None,
        };

    let (prompt_text, prompt_ids) = match &req.prompt {
        Prompt::Raw(raw) => (raw.clone(), text.encode_raw(raw)?),
        Prompt::Chat(messages) => {
            let rendered = text.render_chat(messages, req.template_tools())?;
            let ids = text.encode_rendered(&rendered)?;
            (rendered, ids)
        }
    };
    if prompt_ids.is_empty() {
        return Err(GenerateError::EmptyPrompt);
    }
    let context_length = text.context_length();
    if prompt_ids.len() >= context_length {
        return Err(GenerateError::PromptTooLong {
            prompt_tokens: prompt_ids.len(),
            context_length,
        });
    }
    let room = context_length - prompt_ids.len();
    let max_tokens = req.max_tokens.or(text.default_max_tokens());

    let starts_thinking = text
        .thinking()
        .is_some_and(|m| prompt_opens_thinking(&prompt_text, m));
    let mut stream = TextStream {
        decoder: StreamDecoder::new(text.tokenizer(), &prompt_ids, text.hidden_ids().clone()),
        stop: StopMatcher::new(req.stop.clone()),
        thinking: ThinkingSplitter::new(text.thinking().cloned(), starts_thinking),
        calls: syntax.map(CallSplitter::new),
        answer: String::new(),
        thought: String::new(),
        matched: None,
    };

    let mut seq = engine.new_sequence();
    seq.set_gate(gate);
    // Concurrent generations on this engine share their forward steps.
    let member = engine.batch_member();
    let mut context = prompt_ids.clone();
    let mut generated: Vec<u32> = Vec::new();
    let mut first_token_at = None;
    let mut last_token_at: Option<Instant> = None;
    let mut intervals: Vec<f32> = Vec::new();
    let mut prefill_s = 0.0;
    let mut constraint_started = false;

    let reason = 'decode: {
        if cancel.load(Ordering::Relaxed) {
            break 'decode FinishReason::Cancelled;
        }
        let prefill_start = Instant::now();
        let mut logits = member.forward(engine, &mut seq, &prompt_ids, Logits::Last)?;
        prefill_s = prefill_start.elapsed().as_secs_f64();
        loop {
            if req.ignore_eos {
                // As llama.cpp's --ignore-eos (and transformers' min_new_tokens): EOS cannot be chosen.
                for &eos in text.eos_ids() {
                    if let Some(logit) = logits.get_mut(eos as usize) {
                        *logit = f32::NEG_INFINITY;
                    }
                }
            }
            // The constraint starts where the answer does (after a thinking section the prompt
            // opened); from then on it holds for every token.
            let mut constrained = match constraint.as_mut() {
                Some(c) if constraint_started || !stream.thinking.is_inside() => {
                    if !constraint_started {
                        constraint_started = true;
                        stream.answer_only(on_event);
                    }
                    Some(c)
                }
                _ => None,
            };
            if let Some(c) = constrained.as_deref_mut() {
                c.mask(&mut logits)?;
            }
            let token = sampler.sample(&logits, &context)?;
            let chosen_at = Instant::now();
            match last_token_at {
                Some(last) => intervals.push(chosen_at.duration_since(last).as_secs_f32()),
                None => first_token_at = Some(chosen_at),
            }
            last_token_at = Some(chosen_at);
            generated.push(token);
            context.push(token);
            if text.is_eos(token) {
                break 'decode FinishReason::Eos;
            }
            let complete = match constrained {
                Some(c) => {
                    c.commit(token)?;
                    c.is_complete()
                }
                None => false,
            };
            let delta = stream.decoder.push(token)?;
            if stream.feed(&delta, on_event) || complete {
                break 'decode FinishReason::Stop;
            }
            if max_tokens.is_some_and(|m| generated.len() >= m) {
                break 'decode FinishReason::MaxTokens;
            }
            if generated.len() >= room {
                break 'decode FinishReason::Length;
            }
            if cancel.load(Ordering::Relaxed) {
                break 'decode FinishReason::Cancelled;
            }
            logits = member.forward(engine, &mut seq, &[token], Logits::Last)?;
        }
    };
    // Steps of the others no longer wait for this one.
    drop(member);
    let reason = stream.finish(reason, on_event)?;
    let (reason, tool_calls) = stream.take_calls(reason, syntax, req, on_event);
    on_event(Event::Finished(reason));

    let ended = Instant::now();
    let decode_s = first_token_at.map_or(0.0, |t| ended.duration_since(t).as_secs_f64());
    let decode_steps = generated.len().saturating_sub(1);
    let stats = GenerateStats {
        prompt_tokens: prompt_ids.len(),
        generated_tokens: generated.len(),
        time_to_first_token_s: first_token_at
            .map_or(0.0, |t| t.duration_since(started).as_secs_f64()),
        prefill_s,
        prefill_tokens_per_s: rate(prompt_ids.len(), prefill_s),
        decode_s,
        decode_tokens_per_s: rate(decode_steps, decode_s),
        total_s: ended.duration_since(started).as_secs_f64(),
        finish_reason: reason,
        seed,
        token_intervals_s: intervals,
    };
    Ok(Outcome {
        text: stream.answer,
        thinking: stream.thought,
        token_ids: generated,
        prompt_token_ids: prompt_ids,
        stop: stream
            .matched
            .and_then(|i| stream.stop.stops().get(i).cloned()),
        tool_calls,
        stats,
    })
}

/// A required call's grammar that does not compile is some function's `parameters`: named by
/// compiling each alone (only on this error path).
fn blame_tool(text: &TextModel, req: &GenerateRequest, err: ConstraintError) -> GenerateError {
    let (
        ConstraintError::Invalid {
            option: "tools", ..
        },
        Some(tools),
    ) = (&err, &req.tools)
    else {
        return err.into();
    };
    for (i, def) in tools.tools.defs.iter().enumerate() {
        let alone = ConstraintSpec::JsonSchema(def.parameters.to_string());
        if let Err(ConstraintError::Invalid { message, .. }) = text.constraint(&alone) {
            return ToolError {
                at: format!("option 'tools': tools[{i}].function.parameters"),
                message,
            }
            .into();
        }
    }
    err.into()
}

/// The call syntax to hold the answer back for: the template's, when the request offers tools
/// it may call. Offered tools need a template that renders them.
fn tool_syntax(
    text: &TextModel,
    req: &GenerateRequest,
) -> Result<Option<ToolSyntax>, GenerateError> {
    let Some(tools) = &req.tools else {
        return Ok(None);
    };
    if matches!(req.prompt, Prompt::Raw(_)) {
        return Err(ToolError {
            at: "option 'tools'".into(),
            message: "applies to a conversation only (chat template), not to a raw prompt".into(),
        }
        .into());
    }
    if req.constraint.is_some() {
        return Err(ToolError {
            at: "option 'tools'".into(),
            message: "tools exclude json_schema, regex and json_object".into(),
        }
        .into());
    }
    if tools.choice == ToolChoice::None {
        return Ok(None);
    }
    match text.tool_support() {
        Some(syntax) => Ok(Some(syntax)),
        None => Err(ToolError {
            at: "option 'tools'".into(),
            message: "the model's chat template does not render tools".into(),
        }
        .into()),
    }
}

fn rate(count: usize, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

/// Generated text on its way out: detokenized, checked for stop strings, split into thinking and
/// answer, reported, and accumulated for the outcome.
struct TextStream<'t> {
    decoder: StreamDecoder<'t>,
    stop: StopMatcher,
    thinking: ThinkingSplitter,
    /// Holds the answer back from the opening of a tool call on (a request with tools).
    calls: Option<CallSplitter>,
    answer: String,
    thought: String,
    matched: Option<usize>,
}

impl TextStream<'_> {
    /// Returns true when a stop string matched.
    fn feed(&mut self, delta: &str, on_event: &mut dyn FnMut(Event)) -> bool {
        if delta.is_empty() {
            return false;
        }
        let step = self.stop.push(delta);
        let segments = self.thinking.push(&step.text);
        self.report(segments, on_event);
        if step.matched.is_some() {
            self.matched = step.matched;
            let rest = self.thinking.finish();
            self.report(rest, on_event);
            return true;
        }
        false
    }

    /// Flushes what the detokenizer, stop matcher and splitter still hold (unless a stop string
    /// ended generation: what follows it is dropped). Text completed only now can still contain a
    /// stop string, which then becomes the reason.
    fn finish(
        &mut self,
        reason: FinishReason,
        on_event: &mut dyn FnMut(Event),
    ) -> Result<FinishReason, GenerateError> {
        if self.matched.is_some() {
            return Ok(FinishReason::Stop);
        }
        let tail = self.decoder.finish()?;
        if self.feed(&tail, on_event) {
            return Ok(FinishReason::Stop);
        }
        let held = self.stop.finish();
        let mut segments = self.thinking.push(&held);
        segments.extend(self.thinking.finish());
        self.report(segments, on_event);
        Ok(reason)
    }

    /// Parses what the call splitter captured: calls when the answer ended by itself and they are
    /// well-formed, else the captured text is released as answer text after all.
    fn take_calls(
        &mut self,
        reason: FinishReason,
        syntax: Option<ToolSyntax>,
        req: &GenerateRequest,
        on_event: &mut dyn FnMut(Event),
    ) -> (FinishReason, Vec<ToolCall>) {
        let Some(mut splitter) = self.calls.take() else {
            return (reason, Vec::new());
        };
        let (held, captured) = splitter.finish();
        self.emit_answer(held, on_event);
        let Some(captured) = captured else {
            return (reason, Vec::new());
        };
        let ended_itself = matches!(reason, FinishReason::Eos | FinishReason::Stop);
        let parsed = match (syntax, &req.tools) {
            (Some(syntax), Some(tools)) if ended_itself => syntax.parse(&captured, &tools.tools),
            _ => None,
        };
        match parsed {
            Some(calls) => {
                self.answer = self.answer.trim().to_string();
                (FinishReason::ToolCalls, calls)
            }
            None => {
                self.emit_answer(captured, on_event);
                (reason, Vec::new())
            }
        }
    }

    fn emit_answer(&mut self, text: String, on_event: &mut dyn FnMut(Event)) {
        if !text.is_empty() {
            self.answer.push_str(&text);
            on_event(Event::Text(text));
        }
    }

    /// From here on all text is answer: a constrained answer may hold the thinking markers as
    /// text (inside a JSON string), which must neither end it nor turn its constraint off.
    fn answer_only(&mut self, on_event: &mut dyn FnMut(Event)) {
        let rest = self.thinking.finish();
        self.report(rest, on_event);
        self.thinking = ThinkingSplitter::new(None, false);
    }

    fn report(&mut self, segments: Vec<Segment>, on_event: &mut dyn FnMut(Event)) {
        for segment in segments {
            match segment {
                Segment::Answer(t) => {
                    let t = match &mut self.calls {
                        Some(splitter) => splitter.push(&t),
                        None => t,
                    };
                    self.emit_answer(t, on_event);
                }
                Segment::Thinking(t) => {
                    self.thought.push_str(&t);
                    on_event(Event::Thinking(t));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::thinking::ThinkingMarkers;
    use crate::text::tokenizer::TextTokenizer;
    use crate::text::tokenizer::test_support::byte_tokenizer;

    /// Feeds ids one at a time through detokenizer, stop matcher and thinking splitter, as the
    /// generation loop does, and returns the events and the finish reason.
    fn pipeline(
        text: &str,
        stops: &[&str],
        inside: bool,
    ) -> (Vec<Event>, FinishReason, String, String) {
        let tok = TextTokenizer::new(byte_tokenizer(), None, false).expect("tokenizer");
        let ids = tok.encode_plain(text).expect("encode");
        let markers = ThinkingMarkers {
            start: "<think>".into(),
            end: "</think>".into(),
        };
        let mut stream = TextStream {
            decoder: StreamDecoder::new(&tok, &[], tok.special_ids()),
            stop: StopMatcher::new(stops.iter().map(|s| s.to_string()).collect()),
            thinking: ThinkingSplitter::new(Some(markers), inside),
            calls: None,
            answer: String::new(),
            thought: String::new(),
            matched: None,
        };
        let mut events = Vec::new();
        let mut reason = FinishReason::MaxTokens;
        for id in ids {
            let delta = stream.decoder.push(id).expect("push");
            if stream.feed(&delta, &mut |e| events.push(e)) {
                reason = FinishReason::Stop;
                break;
            }
        }
        let reason = stream
            .finish(reason, &mut |e| events.push(e))
            .expect("finish");
        (events, reason, stream.thought, stream.answer)
    }

    #[test]
    fn thinking_stop_and_multibyte_text_through_the_whole_pipeline() {
        let (events, reason, thought, answer) =
            pipeline("plan é</think>\n\nréponse ✓ STOP ignored", &["STOP"], true);
        assert_eq!(reason, FinishReason::Stop);
        assert_eq!(thought, "plan é");
        assert_eq!(answer, "réponse ✓ ");
        // Events arrive in order, thinking first, and carry only whole characters.
        assert!(
            matches!(events.first(), Some(Event::Thinking(_))),
            "{events:?}"
        );
        for e in &events {
            if let Event::Text(t) | Event::Thinking(t) = e {
                assert!(!t.contains(char::REPLACEMENT_CHARACTER), "{events:?}");
            }
        }
    }

    #[test]
    fn held_text_is_released_when_generation_ends_otherwise() {
        // "ST" could start "STOP": held until the end, then released.
        let (_, reason, thought, answer) = pipeline("<think>x</think>done ST", &["STOP"], false);
        assert_eq!(reason, FinishReason::MaxTokens);
        assert_eq!((thought.as_str(), answer.as_str()), ("x", "done ST"));
    }

    #[test]
    fn an_answer_only_stream_keeps_thinking_markers_as_text() {
        let tok = TextTokenizer::new(byte_tokenizer(), None, false).expect("tokenizer");
        let markers = ThinkingMarkers {
            start: "<think>".into(),
            end: "</think>".into(),
        };
        let mut stream = TextStream {
            decoder: StreamDecoder::new(&tok, &[], tok.special_ids()),
            stop: StopMatcher::new(Vec::new()),
            thinking: ThinkingSplitter::new(Some(markers), true),
            calls: None,
            answer: String::new(),
            thought: String::new(),
            matched: None,
        };
        let mut events = Vec::new();
        let feed = |stream: &mut TextStream, text: &str, events: &mut Vec<Event>| {
            for id in tok.encode_plain(text).expect("encode") {
                let delta = stream.decoder.push(id).expect("push");
                stream.feed(&delta, &mut |e| events.push(e));
            }
        };
        feed(&mut stream, "plan</think>\n", &mut events);
        assert!(!stream.thinking.is_inside());
        stream.answer_only(&mut |e| events.push(e));
        let json = r#"{"a":"<think>x</think>"}"#;
        feed(&mut stream, json, &mut events);
        let reason = stream
            .finish(FinishReason::Stop, &mut |e| events.push(e))
            .expect("finish");
        assert_eq!(reason, FinishReason::Stop);
        assert_eq!(stream.thought, "plan");
        assert_eq!(stream.answer, json);
    }

    #[test]
    fn special_tokens_are_not_text() {
        let (_, _, _, answer) = pipeline("<s>a</s>b", &[], false);
        assert_eq!(answer, "ab");
    }
}
