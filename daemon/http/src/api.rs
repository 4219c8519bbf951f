//! The HTTP routes: OpenAI's `/v1/models`, `/v1/completions`, `/v1/chat/completions` (whole or
//! as server-sent events) and `/v1/embeddings` (refused: moed computes no embeddings).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use moed_dbus::proxy::{EngineProxy, ModelsProxy};
use serde_json::{Value, json};
use zbus::Connection;
use zbus::proxy::CacheProperties;

use crate::error::ApiError;
use crate::listen::Peer;
use crate::openai::{self, Prepared};
use crate::run::{self, Event, finish_reason};
use crate::tools::{self, ToolCall};

/// What every handler shares.
#[derive(Clone)]
pub struct App {
    pub conn: Connection,
    /// Bearer tokens a TCP client must present (none: TCP clients are refused).
    pub tokens: Arc<Vec<String>>,
}

pub fn router(app: App, max_body: usize) -> Router {
    Router::new()
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(model))
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/embeddings", post(embeddings))
        .route("/metrics", get(crate::metrics::metrics))
        .fallback(|| async {
            ApiError::not_found("no such endpoint; moed-http serves /v1/models, /v1/completions and /v1/chat/completions".into())
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request_error",
                "method_not_allowed",
                "this endpoint does not take that method".into(),
            )
        })
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(app)
}

type Client = ConnectInfo<crate::listen::PeerAddr>;

/// The connection's peer, once a TCP client showed a configured token.
pub fn admit(app: &App, client: &Client, headers: &HeaderMap) -> Result<Peer, ApiError> {
    let Some(peer) = client.0.0.clone() else {
        return Err(ApiError::from(moed_dbus::MoedError::Failed(
            "the connection could not be identified".into(),
        )));
    };
    if !peer.tcp {
        return Ok(peer);
    }
    let unauthorized = |why: &str| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid_api_key",
            format!(
                "{why}; TCP clients authenticate with a token the administrator configured (Authorization: Bearer TOKEN)"
            ),
        )
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| unauthorized("no bearer token"))?;
    if app
        .tokens
        .iter()
        .any(|t| same(t.as_bytes(), presented.as_bytes()))
    {
        Ok(peer)
    } else {
        Err(unauthorized("the token is not valid"))
    }
}

/// Compares in time independent of where the inputs differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn body_json(body: Result<Bytes, BytesRejection>) -> Result<Value, ApiError> {
    let bytes = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                "request_too_large",
                "the request body is larger than this bridge accepts (moed-http --max-body-bytes)"
                    .into(),
            )
        } else if let Some(limit) = crate::server::timed_out(&e) {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "invalid_request_error",
                "request_timeout",
                format!(
                    "the request body did not arrive within {} s (moed-http --body-timeout)",
                    limit.as_secs()
                ),
            )
        } else {
            ApiError::invalid("body", "could not be read")
        }
    })?;
    // serde_json's syntax errors name a line and column, never the text.
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::invalid(
            "body",
            format!(
                "is not valid JSON: {}",
                moed_dbus::wire::text(&e.to_string(), 256)
            ),
        )
    })
}

async fn models(
    State(app): State<App>,
    client: Client,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    admit(&app, &client, &headers)?;
    let list = ModelsProxy::new(&app.conn)
        .await
        .map_err(moed_dbus::MoedError::from)?
        .list()
        .await?;
    let data: Vec<Value> = list
        .iter()
        .filter(|m| m.error.is_none())
        .map(|m| model_object(&m.name, m.loaded, m.active))
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

async fn model(
    State(app): State<App>,
    client: Client,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    admit(&app, &client, &headers)?;
    let list = ModelsProxy::new(&app.conn)
        .await
        .map_err(moed_dbus::MoedError::from)?
        .list()
        .await?;
    list.iter()
        .find(|m| m.name == id && m.error.is_none())
        .map(|m| Json(model_object(&m.name, m.loaded, m.active)))
        .ok_or_else(|| {
            let mut err = ApiError::not_found(format!(
                "model {} does not exist; GET /v1/models lists them",
                moed_dbus::wire::quote(&id)
            ));
            err.kind = "invalid_request_error";
            err.code = "model_not_found";
            err
        })
}

fn model_object(name: &str, loaded: bool, active: bool) -> Value {
    json!({"id": name, "object": "model", "created": 0, "owned_by": "moed", "loaded": loaded, "active": active})
}

async fn embeddings(State(app): State<App>, client: Client, headers: HeaderMap) -> ApiError {
    if let Err(e) = admit(&app, &client, &headers) {
        return e;
    }
    ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        "invalid_request_error",
        "unsupported",
        "embeddings are not supported: moed's engine generates text and computes no embeddings"
            .into(),
    )
}

/// Which endpoint's shapes a response takes.
#[derive(Clone, Copy)]
enum Kind {
    Completion,
    Chat,
}

async fn completions(
    State(app): State<App>,
    client: Client,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let peer = admit(&app, &client, &headers)?;
    let prepared = openai::completion(&body_json(body)?)?;
    respond(&app, &peer, prepared, Kind::Completion).await
}

async fn chat_completions(
    State(app): State<App>,
    client: Client,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let peer = admit(&app, &client, &headers)?;
    let prepared = openai::chat(&body_json(body)?)?;
    respond(&app, &peer, prepared, Kind::Chat).await
}

/// The model's name for the response: the one asked for, else the active one.
async fn model_name(app: &App, prepared: &Prepared) -> String {
    if let Some(m) = &prepared.options.model {
        return m.clone();
    }
    let engine = EngineProxy::builder(&app.conn)
        .cache_properties(CacheProperties::No)
        .build()
        .await;
    match engine {
        Ok(engine) => engine.model().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

async fn respond(
    app: &App,
    peer: &Peer,
    prepared: Prepared,
    kind: Kind,
) -> Result<Response, ApiError> {
    let model = model_name(app, &prepared).await;
    let started = run::start(&app.conn, &prepared, peer).await?;
    let shape = Shape {
        id: match kind {
            Kind::Completion => format!("cmpl-{}", started.id),
            Kind::Chat => format!("chatcmpl-{}", started.id),
        },
        created: now(),
        model,
        kind,
    };
    if prepared.stream {
        Ok(stream(shape, started.events, prepared.include_usage))
    } else {
        whole(shape, started.events)
            .await
            .map(|v| Json(v).into_response())
    }
}

/// The fields every object of one response shares.
struct Shape {
    id: String,
    created: u64,
    model: String,
    kind: Kind,
}

impl Shape {
    fn object(&self, chunk: bool) -> &'static str {
        match (self.kind, chunk) {
            (Kind::Completion, _) => "text_completion",
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
        }
    }

    /// One streamed piece: text (with `thinking` as DeepSeek's `reasoning_content`), the tool
    /// calls, or the end.
    fn chunk(&self, piece: Piece<'_>, finish: Option<&str>, first: bool) -> Value {
        let choice = match self.kind {
            Kind::Completion => json!({
                "index": 0,
                "text": match piece { Piece::Text(t, _) => t, _ => "" },
                "logprobs": null,
                "finish_reason": finish,
            }),
            Kind::Chat => {
                let mut delta = serde_json::Map::new();
                if first {
                    delta.insert("role".into(), "assistant".into());
                }
                match piece {
                    Piece::Text(t, true) => {
                        delta.insert("reasoning_content".into(), t.into());
                    }
                    Piece::Text(t, false) => {
                        delta.insert("content".into(), t.into());
                    }
                    Piece::Calls(calls) => {
                        delta.insert("tool_calls".into(), tools::delta_calls(calls));
                    }
                    Piece::Nothing if first => {
                        delta.insert("content".into(), "".into());
                    }
                    Piece::Nothing => {}
                }
                json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish})
            }
        };
        json!({
            "id": self.id, "object": self.object(true), "created": self.created,
            "model": self.model, "choices": [choice],
        })
    }
}

/// What one chunk carries.
enum Piece<'a> {
    /// Text, and whether it is the thinking section.
    Text(&'a str, bool),
    Calls(&'a [ToolCall]),
    Nothing,
}

fn usage(info: &moed_dbus::GenerationInfo) -> Value {
    json!({
        "prompt_tokens": info.prompt_tokens,
        "completion_tokens": info.completion_tokens,
        "total_tokens": u64::from(info.prompt_tokens) + u64::from(info.completion_tokens),
    })
}

/// A whole answer: waits for the end (the relay cancels it if this handler is dropped).
async fn whole(
    shape: Shape,
    mut events: tokio::sync::mpsc::UnboundedReceiver<Event>,
) -> Result<Value, ApiError> {
    let info = loop {
        match events.recv().await {
            Some(Event::Token { .. }) => continue,
            Some(Event::Done(info)) => break info,
            Some(Event::Failed(e)) => return Err(e),
            None => {
                return Err(ApiError::from(moed_dbus::MoedError::Failed(
                    "the request ended without an answer".into(),
                )));
            }
        }
    };
    let reason = finish_reason(&info.finish_reason);
    let calls = tools::answered(info.tool_calls.as_deref())?;
    let model = if info.model.is_empty() {
        shape.model.clone()
    } else {
        info.model.clone()
    };
    let choice = match shape.kind {
        Kind::Completion => {
            json!({"index": 0, "text": info.text, "logprobs": null, "finish_reason": reason})
        }
        Kind::Chat => {
            let mut message = json!({"role": "assistant", "content": info.text});
            if !calls.is_empty() {
                // OpenAI's shape: no content but the calls.
                if info.text.is_empty() {
                    message["content"] = Value::Null;
                }
                message["tool_calls"] = tools::message_calls(&calls);
            }
            if !info.thinking.is_empty() {
                message["reasoning_content"] = info.thinking.clone().into();
            }
            json!({"index": 0, "message": message, "logprobs": null, "finish_reason": reason})
        }
    };
    Ok(json!({
        "id": shape.id, "object": shape.object(false), "created": shape.created,
        "model": model, "choices": [choice], "usage": usage(&info),
    }))
}

fn sse(value: &Value) -> Result<Bytes, Infallible> {
    Ok(Bytes::from(format!("data: {value}\n\n")))
}

/// Server-sent events: a chunk per token, a last chunk with the finish reason, the usage when
/// asked for, `[DONE]`. An error after the start arrives as an `{"error": ...}` event, as
/// OpenAI sends it. Dropping this body (the client left) makes the relay cancel the request.
fn stream(
    shape: Shape,
    events: tokio::sync::mpsc::UnboundedReceiver<Event>,
    include_usage: bool,
) -> Response {
    let state = (shape, events, true, false);
    let body =
        futures_util::stream::unfold(state, move |(shape, mut events, first, done)| async move {
            if done {
                return None;
            }
            let (out, finished) = match events.recv().await {
                Some(Event::Token { text, thinking }) => {
                    let chunk = shape.chunk(Piece::Text(&text, thinking), None, first);
                    (sse(&chunk), false)
                }
                Some(Event::Done(info)) => {
                    let mut out = String::new();
                    if first {
                        out.push_str(&format!(
                            "data: {}\n\n",
                            shape.chunk(Piece::Nothing, None, true)
                        ));
                    }
                    // moed reports the calls only at the end (CONTRACT.md, *Tools*): one chunk
                    // carries each whole.
                    match tools::answered(info.tool_calls.as_deref()) {
                        Ok(calls) if calls.is_empty() => {}
                        Ok(calls) => out.push_str(&format!(
                            "data: {}\n\n",
                            shape.chunk(Piece::Calls(&calls), None, false)
                        )),
                        Err(e) => {
                            out.push_str(&format!("data: {}\n\n", e.body()));
                            return Some((Ok(Bytes::from(out)), (shape, events, false, true)));
                        }
                    }
                    let last = shape.chunk(
                        Piece::Nothing,
                        Some(finish_reason(&info.finish_reason)),
                        false,
                    );
                    out.push_str(&format!("data: {last}\n\n"));
                    if include_usage {
                        let mut u = shape.chunk(Piece::Nothing, None, false);
                        u["choices"] = json!([]);
                        u["usage"] = usage(&info);
                        out.push_str(&format!("data: {u}\n\n"));
                    }
                    out.push_str("data: [DONE]\n\n");
                    (Ok(Bytes::from(out)), true)
                }
                Some(Event::Failed(e)) => (sse(&e.body()), true),
                None => (
                    sse(&ApiError::from(moed_dbus::MoedError::Failed(
                        "the request ended without an answer".into(),
                    ))
                    .body()),
                    true,
                ),
            };
            Some((out, (shape, events, false, finished)))
        });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

#[cfg(test)]
#[path = "api_tests.rs"]
mod tests;
