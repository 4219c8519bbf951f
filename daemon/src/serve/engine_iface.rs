//! `org.moed.Moed1.Engine` and the per-request `org.moed.Moed1.Request` objects.

use std::sync::{Arc, RwLock};

use moed_dbus::options::OptionDict;
use moed_dbus::wire::{self, ToWire, WireStr, limits};
use moed_dbus::{
    ChatMessage, ChatTurn, EngineMetrics, GenerationInfo, MoedError, REQUEST_PATH_PREFIX,
    ScoreOptions, ScoredToken,
};
use zbus::message::Header;
use zbus::names::BusName;
use zbus::object_server::{ObjectServer, SignalEmitter};
use zbus::{OwnedObjectPath, interface};

use super::auth::Caller;
use super::daemon::Daemon;
use super::error::wire_error;
use super::request_wire;
use crate::request::RequestState;
use moed_dbus::GenerateOptions;
use moed_service::runner::{PromptInput, StreamEvent};
use moed_service::service::Admitted;

pub struct EngineIface {
    pub daemon: Arc<Daemon>,
}

impl EngineIface {
    /// The caller's request checked and admitted: the input's size before anything else of it
    /// is parsed, then the options, then the service's checks and a queue place.
    async fn admit(
        &self,
        header: &Header<'_>,
        input: PromptInput,
        options: &OptionDict,
    ) -> Result<(Caller, Admitted), MoedError> {
        let caller = self.daemon.user_for(header, options).await?;
        let service = &self.daemon.service;
        service.check_input(&input).map_err(wire_error)?;
        let options = GenerateOptions::from_dict(options)?;
        // A client's request holds a slot others wait for: it must end before the context does.
        if options.ignore_eos && options.max_tokens.is_none() {
            return Err(MoedError::InvalidArgument(
                "option 'ignore_eos' needs 'max_tokens': generation would only end at the context length".into(),
            ));
        }
        let admitted = service
            .admit(&caller.client(), request_wire::params(input, options))
            .map_err(wire_error)?;
        Ok((caller, admitted))
    }

    async fn blocking(
        &self,
        header: &Header<'_>,
        input: PromptInput,
        options: &OptionDict,
    ) -> Result<(WireStr, GenerationInfo), MoedError> {
        let (_, admitted) = self.admit(header, input, options).await?;
        let finished = self
            .daemon
            .service
            .run(admitted, |_| {})
            .await
            .map_err(wire_error)?;
        let info = request_wire::info(finished).to_wire();
        Ok((WireStr::new(&info.text, limits::GENERATED_TEXT), info))
    }

    async fn streaming(
        &self,
        header: &Header<'_>,
        server: &ObjectServer,
        input: PromptInput,
        options: &OptionDict,
    ) -> Result<OwnedObjectPath, MoedError> {
        let (caller, admitted) = self.admit(header, input, options).await?;
        let id = admitted.id();
        let path = OwnedObjectPath::try_from(format!("{REQUEST_PATH_PREFIX}/{id}"))
            .map_err(|e| MoedError::Failed(format!("request path: {e}")))?;
        let state = Arc::new(RwLock::new(RequestState::Queued));
        let object = RequestIface {
            daemon: self.daemon.clone(),
            id,
            owner: caller.unique_name.clone(),
            state: state.clone(),
        };
        server.at(path.clone(), object).await?;
        let owner = BusName::try_from(caller.unique_name.clone())
            .map_err(|e| MoedError::Failed(format!("caller name: {e}")))?;
        let emitter = SignalEmitter::new(self.daemon.connection()?, path.clone())?
            .set_destination(owner)
            .into_owned();
        let daemon = self.daemon.clone();
        let server = server.clone();
        let guard = self.daemon.stream_started();
        tokio::spawn(stream_request(
            guard,
            daemon,
            server,
            emitter,
            path.clone(),
            state,
            admitted,
        ));
        Ok(path)
    }
}

async fn stream_request(
    _sending: super::daemon::StreamGuard,
    daemon: Arc<Daemon>,
    server: ObjectServer,
    emitter: SignalEmitter<'static>,
    path: OwnedObjectPath,
    state: Arc<RwLock<RequestState>>,
    admitted: Admitted,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let set_state = |s: RequestState| *state.write().unwrap_or_else(|p| p.into_inner()) = s;
    set_state(RequestState::Running);
    let sink = move |event: StreamEvent| {
        // The receiver is gone only when this task ended; nothing to tell then.
        let _ = tx.send(event);
    };
    let exec = async {
        daemon
            .service
            .run(admitted, sink)
            .await
            .map(request_wire::info)
            .map_err(wire_error)
    };
    let forward = async {
        while let Some(event) = rx.recv().await {
            let sent = match event {
                StreamEvent::Text { text, thinking } => {
                    let text = WireStr::from_string(text, limits::GENERATED_TEXT);
                    RequestIface::token(&emitter, &text, thinking).await
                }
                StreamEvent::Alert(alert) => {
                    RequestIface::alert(
                        &emitter,
                        &WireStr::new(alert.severity.as_str(), limits::NAME),
                        &WireStr::from_string(alert.code, limits::ALERT_CODE),
                        &WireStr::from_string(alert.message, limits::ALERT_MESSAGE),
                        &WireStr::from_string(alert.plugin, limits::NAME),
                    )
                    .await
                }
            };
            if let Err(err) = sent {
                log::debug!("request {}: signal not sent: {err}", path.as_str());
            }
        }
    };
    let (result, ()) = tokio::join!(exec, forward);
    set_state(RequestState::Finished);
    let (reason, info) = match result {
        Ok(info) => (info.finish_reason.clone(), info),
        Err(err) => {
            let reason = if matches!(err, MoedError::Cancelled(_)) {
                "cancelled"
            } else {
                "error"
            };
            let info = GenerationInfo {
                request_id: path
                    .as_str()
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .to_string(),
                finish_reason: reason.to_string(),
                error_name: err.short_name().map(str::to_string),
                error_message: Some(err.message()),
                ..GenerationInfo::default()
            };
            (reason.to_string(), info)
        }
    };
    let reason = WireStr::from_string(reason, limits::NAME);
    if let Err(err) = RequestIface::finished(&emitter, &reason, info.to_wire()).await {
        log::debug!("request {}: Finished not sent: {err}", path.as_str());
    }
    if let Err(err) = server.remove::<RequestIface, _>(&path).await {
        log::warn!("request {}: removing its object: {err}", path.as_str());
    }
}

#[interface(name = "org.moed.Moed1.Engine")]
impl EngineIface {
    /// Answers `prompt` (through the chat template unless option `raw`) and returns the whole text.
    #[zbus(out_args("text", "info"))]
    async fn complete(
        &self,
        prompt: String,
        options: OptionDict,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(WireStr, GenerationInfo), MoedError> {
        self.blocking(&header, PromptInput::Text(prompt), &options)
            .await
    }

    /// Generates the next assistant turn of `messages` and returns the whole text.
    #[zbus(out_args("text", "info"))]
    async fn chat(
        &self,
        messages: Vec<ChatMessage>,
        options: OptionDict,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(WireStr, GenerationInfo), MoedError> {
        self.blocking(&header, request_wire::chat(messages), &options)
            .await
    }

    /// As `chat`, with turns that carry tool calls and results (CONTRACT.md, *Tools*).
    #[zbus(out_args("text", "info"))]
    async fn chat_turns(
        &self,
        messages: Vec<ChatTurn>,
        options: OptionDict,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(WireStr, GenerationInfo), MoedError> {
        self.blocking(&header, request_wire::turns(messages)?, &options)
            .await
    }

    /// Starts a streaming request for `prompt`; its object emits Token, Alert and Finished.
    #[zbus(out_args("request"))]
    async fn generate(
        &self,
        prompt: String,
        options: OptionDict,
        #[zbus(header)] header: Header<'_>,
        #[zbus(object_server)] server: &ObjectServer,
    ) -> Result<OwnedObjectPath, MoedError> {
        self.streaming(&header, server, PromptInput::Text(prompt), &options)
            .await
    }

    /// Starts a streaming request for a conversation.
    #[zbus(out_args("request"))]
    async fn generate_chat(
        &self,
        messages: Vec<ChatMessage>,
        options: OptionDict,
        #[zbus(header)] header: Header<'_>,
        #[zbus(object_server)] server: &ObjectServer,
    ) -> Result<OwnedObjectPath, MoedError> {
        self.streaming(&header, server, request_wire::chat(messages), &options)
            .await
    }

    /// As `generate_chat`, with turns that carry tool calls and results.
    #[zbus(out_args("request"))]
    async fn generate_chat_turns(
        &self,
        messages: Vec<ChatTurn>,
        options: OptionDict,
        #[zbus(header)] header: Header<'_>,
        #[zbus(object_server)] server: &ObjectServer,
    ) -> Result<OwnedObjectPath, MoedError> {
        self.streaming(&header, server, request_wire::turns(messages)?, &options)
            .await
    }

    /// The log-probability of each token of `text` given all tokens before it.
    #[zbus(out_args("tokens"))]
    async fn score(
        &self,
        text: String,
        options: OptionDict,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<Vec<ScoredToken>, MoedError> {
        let caller = self.daemon.user(&header).await?;
        let options = ScoreOptions::from_dict(&options)?;
        let tokens = self
            .daemon
            .service
            .score(&caller.client(), text, request_wire::score_params(options))
            .await
            .map_err(wire_error)?;
        Ok(tokens
            .into_iter()
            .map(request_wire::scored)
            .collect::<Vec<_>>()
            .to_wire())
    }

    /// The daemon's counters since it started (requests by outcome, tokens, latency histograms,
    /// data source searches).
    #[zbus(out_args("metrics"))]
    async fn metrics(
        &self,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<EngineMetrics, MoedError> {
        self.daemon.user(&header).await?;
        let snap = self.daemon.service.metrics.snapshot();
        let load = self.daemon.service.scheduler.load();
        Ok(EngineMetrics {
            requests: snap
                .requests
                .iter()
                .map(|(outcome, n)| (outcome.to_string(), *n))
                .collect(),
            prompt_tokens: snap.prompt_tokens,
            completion_tokens: snap.completion_tokens,
            first_token_buckets: snap.first_token.buckets,
            first_token_sum_seconds: snap.first_token.sum_s,
            first_token_count: snap.first_token.count,
            queue_wait_buckets: snap.queue_wait.buckets,
            queue_wait_sum_seconds: snap.queue_wait.sum_s,
            queue_wait_count: snap.queue_wait.count,
            token_interval_buckets: snap.token_interval.buckets,
            token_interval_sum_seconds: snap.token_interval.sum_s,
            token_interval_count: snap.token_interval.count,
            source_searches: self
                .daemon
                .service
                .knowledge
                .search_times()
                .into_iter()
                .map(|(label, t)| {
                    (
                        wire::owned(label, limits::NAME),
                        t.searches,
                        t.failures,
                        t.seconds,
                    )
                })
                .collect(),
            active_requests: load.running,
            queued_requests: load.queued,
        })
    }

    #[zbus(property)]
    fn version(&self) -> String {
        env!("CARGO_PKG_VERSION").to_string()
    }

    /// The active model's name; empty when none is loaded.
    #[zbus(property)]
    fn model(&self) -> String {
        wire::owned(
            self.daemon
                .service
                .registry
                .active_name()
                .unwrap_or_default(),
            limits::NAME,
        )
    }

    /// The execution provider of the active model; empty when none is loaded.
    #[zbus(property)]
    fn execution_provider(&self) -> String {
        let provider = self
            .daemon
            .service
            .registry
            .active_name()
            .and_then(|n| self.daemon.service.registry.get(&n))
            .map(|m| m.engine.execution_provider().to_string())
            .unwrap_or_default();
        wire::owned(provider, limits::NAME)
    }

    /// Every execution provider in preference order (`tensorrt`, `cuda`, `cpu`): whether it can
    /// run here and, if not, the first thing it lacks; `[]` when no ONNX Runtime library is found.
    #[zbus(property)]
    async fn providers(&self) -> Vec<(String, bool, String)> {
        let service = self.daemon.service.clone();
        // dlopen of the GPU libraries: off the bus's executor.
        let checks = tokio::task::spawn_blocking(move || service.providers())
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        match checks {
            Ok(checks) => checks
                .into_iter()
                .map(|c| {
                    let usable = c.missing.is_none();
                    let detail = c.missing.unwrap_or_default();
                    (
                        c.provider.to_string(),
                        usable,
                        wire::owned(detail, limits::ERROR_MESSAGE),
                    )
                })
                .collect(),
            Err(e) => {
                log::warn!("Providers: {e}");
                Vec::new()
            }
        }
    }

    /// `loading`, `ready`, `no-model` or `draining`.
    #[zbus(property)]
    fn state(&self) -> String {
        self.daemon.engine_state().as_str().to_string()
    }

    /// Requests executing now.
    #[zbus(property)]
    fn active_requests(&self) -> u32 {
        self.daemon.service.scheduler.load().running
    }

    /// Requests waiting for a slot.
    #[zbus(property)]
    fn queued_requests(&self) -> u32 {
        self.daemon.service.scheduler.load().queued
    }

    #[zbus(property)]
    fn max_concurrent(&self) -> u32 {
        self.daemon.service.scheduler.limits().0
    }

    #[zbus(property)]
    fn queue_depth(&self) -> u32 {
        self.daemon.service.scheduler.limits().1
    }
}

/// One streaming request, at `/org/moed/Moed1/request/<id>` until it finishes. Its signals go
/// to the client that started it only.
pub struct RequestIface {
    daemon: Arc<Daemon>,
    id: u64,
    owner: String,
    state: Arc<RwLock<RequestState>>,
}

#[interface(name = "org.moed.Moed1.Request")]
impl RequestIface {
    /// Stops the request; `Finished` follows with reason `cancelled`. Only its client (or root).
    async fn cancel(&self, #[zbus(header)] header: Header<'_>) -> Result<(), MoedError> {
        let caller = self.daemon.user(&header).await?;
        if caller.unique_name != self.owner && !caller.is_root() {
            return Err(MoedError::AccessDenied(
                "only the client that started a request may cancel it".into(),
            ));
        }
        if !self.daemon.service.scheduler.cancel(self.id) {
            return Err(MoedError::NotFound(format!(
                "request {} has already finished",
                self.id
            )));
        }
        Ok(())
    }

    /// `queued` until its task starts, `running` (which includes waiting for a slot), `finished`.
    #[zbus(property)]
    fn state(&self) -> String {
        self.state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_str()
            .to_string()
    }

    /// A piece of generated text; `thinking` marks the reasoning section.
    #[zbus(signal)]
    async fn token(emitter: &SignalEmitter<'_>, text: &WireStr, thinking: bool)
    -> zbus::Result<()>;

    /// A plugin's alert about this request.
    #[zbus(signal)]
    async fn alert(
        emitter: &SignalEmitter<'_>,
        severity: &WireStr,
        code: &WireStr,
        message: &WireStr,
        source: &WireStr,
    ) -> zbus::Result<()>;

    /// The last signal: the finish reason (`stop`, `eos`, `max_tokens`, `length`, `cancelled` or
    /// `error`) and the request's info.
    #[zbus(signal)]
    async fn finished(
        emitter: &SignalEmitter<'_>,
        reason: &WireStr,
        info: GenerationInfo,
    ) -> zbus::Result<()>;
}
