//! One inference request from admission to its result: input checks, the request's plugins,
//! queue place, execution on the blocking pool, alerts into the audit log, expert statistics
//! persisted before the caller is answered. Scoring takes the same path.

use std::sync::Arc;
use std::time::Instant;

use moed_plugins::Alert;
use moed_wire::quote;

use super::Service;
use crate::ServiceError;
use crate::generate::{FinishReason, GenerateRequest, SamplingOverrides};
use crate::metrics::Outcome;
use crate::models::LoadedModel;
use crate::request_plugins::{self, RequestPlugins, Use};
use crate::runner::{self, Generation, PromptInput, StreamEvent, TokenScore, prompt_of};
use crate::scheduler::Ticket;
use crate::text::constraint::ConstraintSpec;
use crate::text::template::ChatMessage;
use crate::text::tools::{self, ToolChoice, ToolRequest};

/// Who asks: the key its requests are cancelled by when it leaves (a bus name), and its uid
/// (per-user limits, the alert audit log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub key: String,
    pub uid: u32,
}

/// A generation request as the service takes it; every field has been parsed by the adapter.
#[derive(Debug, Clone)]
pub struct GenerateParams {
    pub input: PromptInput,
    /// The prompt goes to the model as it is, without the chat template (text input only).
    pub raw: bool,
    /// A system message before the prompt (text input only).
    pub system: Option<String>,
    pub sampling: SamplingOverrides,
    pub max_tokens: Option<usize>,
    pub stop: Vec<String>,
    pub seed: Option<u64>,
    pub ignore_eos: bool,
    /// A loaded model instead of the active one.
    pub model: Option<String>,
    /// Plugins for this request, by name.
    pub plugins: Vec<String>,
    /// (key, JSON text) pairs for the request's plugins, sorted by key.
    pub plugin_params: Vec<(String, String)>,
    /// `false` turns retrieval off for this request.
    pub retrieval: bool,
    /// Retrieval searches only these data source labels (empty: all).
    pub sources: Vec<String>,
    /// What the answer must match (constrained decoding).
    pub constraint: Option<ConstraintSpec>,
    /// `tools` (JSON text) and `tool_choice`: checked at admission against the model.
    pub tools: Option<String>,
    pub tool_choice: Option<ToolChoice>,
}

/// A scoring request.
#[derive(Debug, Clone, Default)]
pub struct ScoreParams {
    pub model: Option<String>,
    pub plugins: Vec<String>,
    pub plugin_params: Vec<(String, String)>,
}

/// A checked request holding its queue place.
pub struct Admitted {
    model: Arc<LoadedModel>,
    ticket: Ticket,
    params: GenerateParams,
    /// Its plugins, chosen at admission from the plugin set of that moment.
    plugins: RequestPlugins,
    /// Its tools, parsed at admission.
    tools: Option<ToolRequest>,
    uid: u32,
}

impl Admitted {
    /// The request's id (its place in the scheduler; cancel it with `Scheduler::cancel`).
    pub fn id(&self) -> u64 {
        self.ticket.id()
    }
}

/// A finished generation with what it raised.
pub struct Finished {
    pub request_id: String,
    pub queue_ms: f64,
    pub generation: Generation,
    pub alerts: Vec<Alert>,
}

/// Where a running request's text and alerts go as they come.
pub trait RequestSink: Send + 'static {
    fn event(&mut self, event: StreamEvent);
}

impl<F: FnMut(StreamEvent) + Send + 'static> RequestSink for F {
    fn event(&mut self, event: StreamEvent) {
        self(event)
    }
}

const ROLES: &[&str] = &["system", "user", "assistant", "tool"];

/// Most messages of one conversation.
pub const MAX_CHAT_MESSAGES: usize = 1024;

/// Bytes of prompt allowed per token of the model's context: generous (text averages about 4
/// bytes a token), so any prompt that fits the context passes, while one that cannot fit is
/// refused before the tokenizer spends seconds and gigabytes on it.
pub const PROMPT_BYTES_PER_TOKEN: usize = 16;

fn invalid(message: String) -> ServiceError {
    ServiceError::InvalidArgument(message)
}

impl Service {
    /// `service.max_prompt_bytes`, read without copying the configuration (every request asks).
    fn max_prompt_bytes(&self) -> usize {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .service
            .max_prompt_bytes as usize
    }

    /// The bytes of a request's input, refused past `service.max_prompt_bytes` or, for a
    /// conversation, past [`MAX_CHAT_MESSAGES`]; counts first, then lengths, nothing copied.
    /// Adapters call it before parsing anything else of the request.
    pub fn check_input(&self, input: &PromptInput) -> Result<usize, ServiceError> {
        let cap = self.max_prompt_bytes();
        let (what, bytes) = match input {
            PromptInput::Text(prompt) => ("prompt", prompt.len()),
            PromptInput::Chat(messages) => {
                if messages.len() > MAX_CHAT_MESSAGES {
                    return Err(invalid(format!(
                        "messages: {} messages, at most {MAX_CHAT_MESSAGES}",
                        messages.len()
                    )));
                }
                let bytes = messages
                    .iter()
                    .map(ChatMessage::len)
                    .fold(0usize, usize::saturating_add);
                ("messages", bytes)
            }
        };
        if bytes > cap {
            return Err(invalid(format!(
                "{what}: {bytes} bytes, at most {cap} (service.max_prompt_bytes)"
            )));
        }
        Ok(bytes)
    }

    /// Checks the request, picks the model and its plugins and takes a queue place (or
    /// `Busy`). Every size is checked before the work it bounds.
    pub fn admit(&self, client: &Client, params: GenerateParams) -> Result<Admitted, ServiceError> {
        self.admit_checked(client, params)
            .inspect_err(|_| self.metrics.outcome(Outcome::Rejected))
    }

    fn admit_checked(
        &self,
        client: &Client,
        params: GenerateParams,
    ) -> Result<Admitted, ServiceError> {
        let cap = self.max_prompt_bytes();
        let input_bytes = self.check_input(&params.input)?;
        if let PromptInput::Chat(messages) = &params.input {
            check_messages(messages, &params)?;
        }
        self.check_sources(&params.sources)?;
        let model = self.registry.for_request(params.model.as_deref())?;
        let tools = check_tools(&params, &model)?;
        let system = params.system.as_ref().map_or(0, String::len);
        check_prompt_bytes("prompt", input_bytes + system, &model, cap)?;
        let plugins = request_plugins::resolve(
            self.plugin_set(),
            &params.plugins,
            params.plugin_params.clone(),
            &model,
            Use::Generate {
                retrieval: params.retrieval,
            },
        )?;
        let ticket = self.scheduler.admit(&client.key, client.uid)?;
        Ok(Admitted {
            model,
            ticket,
            params,
            plugins,
            tools,
            uid: client.uid,
        })
    }

    /// [`Service::admit`] then [`Service::run`].
    pub async fn generate(
        self: &Arc<Self>,
        client: &Client,
        params: GenerateParams,
        sink: impl RequestSink,
    ) -> Result<Finished, ServiceError> {
        let admitted = self.admit(client, params)?;
        self.run(admitted, sink).await
    }

    /// Waits for a slot, runs the request on the blocking pool through filters, retrieval, its
    /// gate and the engine, sending text to `sink` as it comes.
    pub async fn run(
        self: &Arc<Self>,
        admitted: Admitted,
        mut sink: impl RequestSink,
    ) -> Result<Finished, ServiceError> {
        let Admitted {
            model,
            mut ticket,
            params,
            plugins,
            tools,
            uid,
        } = admitted;
        let request_id = ticket.id().to_string();
        let queued_at = Instant::now();
        ticket
            .run_slot()
            .await
            .inspect_err(|err| self.count_failure(err))?;
        let queue_s = queued_at.elapsed().as_secs_f64();
        self.metrics.queue_wait(queue_s);
        let queue_ms = queue_s * 1e3;
        let cancel = ticket.cancel_flag();
        let (run_model, run_service, run_id) = (model.clone(), self.clone(), request_id.clone());
        log::info!(
            request_id = request_id.as_str(), model = model.name.as_str();
            "request {request_id} started on {}", model.name
        );
        let result = tokio::task::spawn_blocking(move || {
            let retrieval = run_service.config().retrieval;
            let mut alerts = Vec::new();
            let result = runner::generate(
                &run_model,
                engine_request(&params, tools),
                &params.sources,
                &plugins,
                &retrieval,
                &cancel,
                &mut alerts,
                &mut |event| sink.event(event),
            );
            run_service.record_alerts(Some(&run_id), Some(uid), &alerts);
            result.map(|generation| (generation, alerts))
        })
        .await
        .map_err(|e| ServiceError::Failed(format!("the generation thread failed: {e}")))?;
        self.persist_stats(model.clone(), &request_id).await?;
        drop(ticket);
        let (generation, alerts) = result.inspect_err(|err| {
            self.count_failure(err);
            log::info!(request_id = request_id.as_str(), model = model.name.as_str(); "request {request_id} failed: {err}");
        })?;
        let stats = &generation.outcome.stats;
        self.metrics.outcome(match stats.finish_reason {
            FinishReason::Stop | FinishReason::Eos | FinishReason::ToolCalls => Outcome::Stop,
            FinishReason::MaxTokens | FinishReason::Length => Outcome::Length,
            FinishReason::Cancelled => Outcome::Cancelled,
        });
        self.metrics.tokens(
            stats.prompt_tokens as u64,
            stats.generated_tokens as u64,
            (stats.generated_tokens > 0).then_some(stats.time_to_first_token_s),
            &stats.token_intervals_s,
        );
        log::info!(
            request_id = request_id.as_str(), model = model.name.as_str();
            "request {request_id} finished ({}, {} tokens)",
            generation.outcome.stats.finish_reason.as_str(),
            generation.outcome.stats.generated_tokens
        );
        Ok(Finished {
            request_id,
            queue_ms,
            generation,
            alerts,
        })
    }

    /// A request that ended without an answer, in the metrics.
    /// A request that fails once admitted: refused by what it asked for (a schema or tools that
    /// do not compile, a parameter a plugin refused) counts as rejected, as at admission.
    fn count_failure(&self, err: &ServiceError) {
        self.metrics.outcome(match err {
            ServiceError::Cancelled(_) => Outcome::Cancelled,
            ServiceError::InvalidArgument(_) => Outcome::Rejected,
            _ => Outcome::Error,
        });
    }

    /// The log-probability of each token of `text` given the tokens before it, through the
    /// request's gate, with a queue place and slot like a generation.
    pub async fn score(
        self: &Arc<Self>,
        client: &Client,
        text: String,
        params: ScoreParams,
    ) -> Result<Vec<TokenScore>, ServiceError> {
        let cap = self.max_prompt_bytes();
        let model = self.registry.for_request(params.model.as_deref())?;
        check_prompt_bytes("text", text.len(), &model, cap)?;
        let plugins = request_plugins::resolve(
            self.plugin_set(),
            &params.plugins,
            params.plugin_params,
            &model,
            Use::Score,
        )?;
        let mut ticket = self.scheduler.admit(&client.key, client.uid)?;
        ticket.run_slot().await?;
        let cancel = ticket.cancel_flag();
        let (request_id, uid) = (ticket.id().to_string(), client.uid);
        let (run_model, run_service, run_id) = (model.clone(), self.clone(), request_id.clone());
        let result = tokio::task::spawn_blocking(move || {
            let result = runner::score(&run_model, &text, &plugins, &cancel);
            if let Some(alert) = runner::gate_fallback_alert(&plugins) {
                run_service.record_alerts(Some(&run_id), Some(uid), std::slice::from_ref(&alert));
            }
            result
        })
        .await
        .map_err(|e| ServiceError::Failed(format!("the scoring thread failed: {e}")))?;
        self.persist_stats(model, &request_id).await?;
        drop(ticket);
        result
    }

    /// Adds what one finished request counted to `model`'s expert statistics in the state
    /// store, flushed, before its caller is answered. A store failure is logged, not returned:
    /// the request itself succeeded.
    async fn persist_stats(
        &self,
        model: Arc<LoadedModel>,
        request_id: &str,
    ) -> Result<(), ServiceError> {
        let state = self.state.clone();
        let persisted = tokio::task::spawn_blocking(move || model.persist_stats(&state, 1))
            .await
            .map_err(|e| ServiceError::Failed(format!("the state thread failed: {e}")))?;
        if let Err(err) = persisted {
            log::error!(request_id = request_id; "persisting expert statistics: {err}");
        }
        Ok(())
    }

    /// Every label of the `sources` option must be a data source the service holds.
    fn check_sources(&self, sources: &[String]) -> Result<(), ServiceError> {
        if sources.is_empty() {
            return Ok(());
        }
        let known = self.sources.labels();
        for label in sources {
            if !known.contains(label) {
                return Err(ServiceError::NotFound(format!(
                    "option 'sources': no data source labelled {}; the sources are: {}",
                    quote(label),
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
}

/// A turn's extras belong to its role, and its calls parse (CONTRACT.md, *Tools*).
fn check_extras(i: usize, m: &ChatMessage) -> Result<(), ServiceError> {
    let misplaced = |key: &str, role: &str| {
        invalid(format!(
            "messages[{i}].{key}: only a turn of role {role} carries it, not {}",
            quote(&m.role)
        ))
    };
    if let Some(calls) = &m.tool_calls {
        if m.role != "assistant" {
            return Err(misplaced("tool_calls", "assistant"));
        }
        tools::parse_turn_calls(calls, &format!("messages[{i}].tool_calls"))
            .map_err(|e| invalid(e.to_string()))?;
    }
    for (key, value) in [("tool_call_id", &m.tool_call_id), ("name", &m.name)] {
        if value.is_some() && m.role != "tool" {
            return Err(misplaced(key, "tool"));
        }
    }
    Ok(())
}

/// The engine's generation request for a checked request.
fn engine_request(params: &GenerateParams, tools: Option<ToolRequest>) -> GenerateRequest {
    let prompt = prompt_of(&params.input, params.raw, params.system.as_deref());
    let mut req = GenerateRequest::new(prompt);
    req.sampling = params.sampling;
    req.max_tokens = params.max_tokens;
    req.stop = params.stop.clone();
    req.seed = params.seed;
    req.ignore_eos = params.ignore_eos;
    req.constraint = params.constraint.clone();
    req.tools = tools;
    req
}

/// A request's `tools` and `tool_choice`, parsed and checked against the model's chat template
/// before the request takes a queue place.
fn check_tools(
    params: &GenerateParams,
    model: &LoadedModel,
) -> Result<Option<ToolRequest>, ServiceError> {
    let choice = params.tool_choice.clone().unwrap_or(ToolChoice::Auto);
    let Some(text) = &params.tools else {
        if matches!(choice, ToolChoice::Required | ToolChoice::Function(_)) {
            return Err(invalid(
                "option 'tool_choice': a call is required but no tools are given (option tools)"
                    .into(),
            ));
        }
        return Ok(None);
    };
    if !matches!(params.input, PromptInput::Chat(_)) {
        return Err(invalid(
            "option 'tools' applies to Chat, GenerateChat, ChatTurns and GenerateChatTurns only"
                .into(),
        ));
    }
    let tools = ToolRequest::parse(text, choice).map_err(|e| invalid(e.to_string()))?;
    if tools.choice != ToolChoice::None && model.text.tool_support().is_none() {
        return Err(invalid(format!(
            "option 'tools': the chat template of model {} does not render tools",
            quote(&model.name)
        )));
    }
    Ok(Some(tools))
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
fn check_prompt_bytes(
    what: &str,
    bytes: usize,
    model: &LoadedModel,
    cap: usize,
) -> Result<(), ServiceError> {
    let limit = prompt_limit(model, cap);
    if bytes <= limit {
        return Ok(());
    }
    Err(invalid(format!(
        "{what}: {bytes} bytes cannot fit the context of model {} ({} tokens); at most {limit} bytes \
         ({PROMPT_BYTES_PER_TOKEN} a token, within service.max_prompt_bytes = {cap})",
        quote(&model.name),
        model.text.context_length()
    )))
}

fn check_messages(messages: &[ChatMessage], params: &GenerateParams) -> Result<(), ServiceError> {
    if messages.is_empty() {
        return Err(invalid(
            "messages: the conversation is empty; send at least one user message".into(),
        ));
    }
    for (i, m) in messages.iter().enumerate() {
        if !ROLES.contains(&m.role.as_str()) {
            return Err(invalid(format!(
                "messages[{i}]: unknown role {}; expected system, user, assistant or tool",
                quote(&m.role)
            )));
        }
        check_extras(i, m)?;
    }
    if params.raw {
        return Err(invalid(
            "option 'raw' applies to Complete and Generate only; Chat always uses the chat template".into(),
        ));
    }
    if params.system.is_some() {
        return Err(invalid(
            "option 'system' applies to Complete and Generate only; put a system message into the conversation".into(),
        ));
    }
    Ok(())
}
