//! Streaming requests from the client side: subscribe to the request signals first, then call
//! `Generate`, so no `Token` is lost between the reply and the subscription. Once the path is
//! known the broad subscription is replaced by one for that path alone, so that streams of one
//! connection never hold each other up (zbus stops reading while a subscriber's queue is full).

use std::collections::VecDeque;
use std::num::NonZeroUsize;

use futures_util::{FutureExt, StreamExt};
use zbus::{
    Connection, MatchRule, Message, MessageStream, OwnedObjectPath, message::Type as MessageType,
};

use crate::{
    ChatMessage, ChatTurn, GenerateOptions, GenerationInfo, MoedError, REQUEST_INTERFACE,
    REQUEST_PATH_PREFIX, proxy::EngineProxy, proxy::RequestProxy,
};

/// One signal of a streaming request.
#[derive(Debug, Clone, PartialEq)]
// One `Finished` ends each request; boxing its info would cost every caller's pattern for nothing.
#[allow(clippy::large_enum_variant)]
pub enum RequestEvent {
    /// A piece of generated text; `thinking` marks the reasoning section.
    Token { text: String, thinking: bool },
    /// A plugin's alert about this request.
    Alert {
        severity: String,
        code: String,
        message: String,
        source: String,
    },
    /// The last event: reason `stop`, `eos`, `max_tokens`, `length`, `cancelled` or `error`.
    Finished {
        reason: String,
        info: GenerationInfo,
    },
}

/// Signals one request may queue before the connection waits for the reader.
const QUEUE: usize = 4096;

/// The signals of one request, in order, ending with `Finished`.
pub struct RequestStream {
    conn: Connection,
    stream: MessageStream,
    path: OwnedObjectPath,
    /// Messages taken from the broad subscription, delivered first.
    early: VecDeque<Message>,
    /// Serial of the last early message; the path's own stream repeats those up to it.
    last_early: Option<u32>,
    done: bool,
}

/// Starts `Generate(prompt, options)` and returns its event stream.
pub async fn generate(
    conn: &Connection,
    prompt: &str,
    options: &GenerateOptions,
) -> Result<RequestStream, MoedError> {
    let stream = subscribe(conn, None).await?;
    let path = EngineProxy::new(conn)
        .await?
        .generate(prompt, options.to_dict())
        .await?;
    RequestStream::new(conn, stream, path).await
}

/// Starts `GenerateChat(messages, options)` and returns its event stream.
pub async fn generate_chat(
    conn: &Connection,
    messages: &[ChatMessage],
    options: &GenerateOptions,
) -> Result<RequestStream, MoedError> {
    let stream = subscribe(conn, None).await?;
    let path = EngineProxy::new(conn)
        .await?
        .generate_chat(messages, options.to_dict())
        .await?;
    RequestStream::new(conn, stream, path).await
}

/// As [`generate`], with the options as a dictionary: for a caller that adds keys the typed
/// options do not carry (a bridge's `client_socket`).
pub async fn generate_dict(
    conn: &Connection,
    prompt: &str,
    options: crate::options::OptionDict,
) -> Result<RequestStream, MoedError> {
    let stream = subscribe(conn, None).await?;
    let path = EngineProxy::new(conn)
        .await?
        .generate(prompt, options)
        .await?;
    RequestStream::new(conn, stream, path).await
}

/// As [`generate_chat`], with the options as a dictionary.
pub async fn generate_chat_dict(
    conn: &Connection,
    messages: &[ChatMessage],
    options: crate::options::OptionDict,
) -> Result<RequestStream, MoedError> {
    let stream = subscribe(conn, None).await?;
    let path = EngineProxy::new(conn)
        .await?
        .generate_chat(messages, options)
        .await?;
    RequestStream::new(conn, stream, path).await
}

/// Starts `GenerateChatTurns(messages, options)` (turns with tool calls and results) and returns
/// its event stream; the options as a dictionary, as for [`generate_chat_dict`].
pub async fn generate_chat_turns_dict(
    conn: &Connection,
    messages: &[ChatTurn],
    options: crate::options::OptionDict,
) -> Result<RequestStream, MoedError> {
    let stream = subscribe(conn, None).await?;
    let path = EngineProxy::new(conn)
        .await?
        .generate_chat_turns(messages, options)
        .await?;
    RequestStream::new(conn, stream, path).await
}

async fn subscribe(
    conn: &Connection,
    path: Option<&OwnedObjectPath>,
) -> Result<MessageStream, MoedError> {
    let builder = MatchRule::builder()
        .msg_type(MessageType::Signal)
        .interface(REQUEST_INTERFACE);
    let rule = match path {
        Some(path) => builder.path(path.clone()),
        None => builder.path_namespace(REQUEST_PATH_PREFIX),
    }
    .build()?;
    Ok(MessageStream::for_match_rule(rule, conn, NonZeroUsize::new(QUEUE)).await?)
}

impl RequestStream {
    async fn new(
        conn: &Connection,
        mut broad: MessageStream,
        path: OwnedObjectPath,
    ) -> Result<Self, MoedError> {
        // Subscribe to the path first: whatever arrives from now on reaches this stream; what
        // arrived before is already queued on the broad one.
        let stream = subscribe(conn, Some(&path)).await?;
        let mut early = VecDeque::new();
        let mut last_early = None;
        while let Some(Some(msg)) = broad.next().now_or_never() {
            let Ok(msg) = msg else { continue };
            let header = msg.header();
            if header.path().map(|p| p.as_str()) == Some(path.as_str()) {
                last_early = Some(msg.primary_header().serial_num().get());
                early.push_back(msg);
            }
        }
        Ok(RequestStream {
            conn: conn.clone(),
            stream,
            path,
            early,
            last_early,
            done: false,
        })
    }

    /// The request's object path.
    pub fn path(&self) -> &OwnedObjectPath {
        &self.path
    }

    /// The next event; `None` after `Finished` or when the connection closed.
    pub async fn next(&mut self) -> Option<Result<RequestEvent, MoedError>> {
        if self.done {
            return None;
        }
        loop {
            let msg = match self.early.pop_front() {
                Some(msg) => msg,
                None => match self.stream.next().await? {
                    Ok(msg) => {
                        let serial = msg.primary_header().serial_num().get();
                        if self.last_early.is_some_and(|last| serial <= last) {
                            continue;
                        }
                        msg
                    }
                    Err(err) => return Some(Err(err.into())),
                },
            };
            match self.decode(&msg) {
                Ok(Some(event)) => {
                    if matches!(event, RequestEvent::Finished { .. }) {
                        self.done = true;
                    }
                    return Some(Ok(event));
                }
                Ok(None) => continue,
                Err(err) => return Some(Err(err)),
            }
        }
    }

    /// Asks the daemon to cancel the request; its `Finished` follows with reason `cancelled`.
    pub async fn cancel(&self) -> Result<(), MoedError> {
        RequestProxy::builder(&self.conn)
            .path(self.path.clone())
            .build()
            .await?
            .cancel()
            .await
    }

    fn decode(&self, msg: &Message) -> Result<Option<RequestEvent>, MoedError> {
        let header = msg.header();
        if header.path().map(|p| p.as_str()) != Some(self.path.as_str()) {
            return Ok(None);
        }
        let body = msg.body();
        let event = match header.member().map(|m| m.as_str()) {
            Some("Token") => {
                let (text, thinking): (String, bool) = body.deserialize()?;
                RequestEvent::Token { text, thinking }
            }
            Some("Alert") => {
                let (severity, code, message, source): (String, String, String, String) =
                    body.deserialize()?;
                RequestEvent::Alert {
                    severity,
                    code,
                    message,
                    source,
                }
            }
            Some("Finished") => {
                let (reason, info): (String, GenerationInfo) = body.deserialize()?;
                RequestEvent::Finished { reason, info }
            }
            _ => return Ok(None),
        };
        Ok(Some(event))
    }
}
