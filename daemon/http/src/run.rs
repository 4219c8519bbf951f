//! One moed request from start to `Finished`, on a task of its own that cancels it when the
//! HTTP client goes away: its connection hangs up, or the response (a stream's body, or the
//! handler waiting for a whole answer) is dropped.

use std::os::fd::AsFd;

use moed_dbus::client::{self, RequestEvent, RequestStream};
use moed_dbus::{CLIENT_SOCKET_OPTION, ChatMessage, GenerationInfo, MoedError};
use tokio::sync::mpsc;
use zbus::{Connection, Fd, OwnedVariant, Variant};

use crate::error::ApiError;
use crate::listen::Peer;
use crate::openai::{Input, Prepared};

/// What the handler receives.
#[derive(Debug)]
// One `Done` per request; boxing its info buys nothing.
#[allow(clippy::large_enum_variant)]
pub enum Event {
    Token {
        text: String,
        thinking: bool,
    },
    /// The request ended (`finish_reason` is not `error`/`cancelled`).
    Done(GenerationInfo),
    /// The request failed after it started.
    Failed(ApiError),
}

/// A started request: its id and the events to come.
pub struct Started {
    pub id: String,
    pub events: mpsc::UnboundedReceiver<Event>,
}

/// Starts the request in moed as the connection's peer (a unix client's socket goes along as
/// option `client_socket`; a TCP client, authenticated by token, is served as the bridge) and
/// spawns the task that relays its events.
pub async fn start(
    conn: &Connection,
    prepared: &Prepared,
    peer: &Peer,
) -> Result<Started, ApiError> {
    let mut options = prepared.options.to_dict();
    if !peer.tcp {
        let fd = peer.fd.as_fd().try_clone_to_owned().map_err(|e| {
            ApiError::from(MoedError::Failed(format!(
                "duplicating the client's socket: {e}"
            )))
        })?;
        let value = OwnedVariant::try_from(Variant::Fd(Fd::from(fd))).map_err(|e| {
            ApiError::from(MoedError::Failed(format!(
                "passing the client's socket: {e}"
            )))
        })?;
        options.insert(CLIENT_SOCKET_OPTION.to_string(), value);
    }
    let stream = match &prepared.input {
        Input::Prompt(prompt) => client::generate_dict(conn, prompt, options).await?,
        Input::Chat(turns) if uses_tools(prepared) => {
            client::generate_chat_turns_dict(conn, turns, options).await?
        }
        Input::Chat(turns) => {
            let messages: Vec<ChatMessage> = turns
                .iter()
                .map(|t| ChatMessage::new(t.role.as_str(), t.content.as_str()))
                .collect();
            client::generate_chat_dict(conn, &messages, options).await?
        }
    };
    let id = stream
        .path()
        .as_str()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let (tx, events) = mpsc::unbounded_channel();
    tokio::spawn(relay(stream, peer.clone(), tx));
    Ok(Started { id, events })
}

/// Whether the conversation needs `GenerateChatTurns`: tools offered or a turn with a call or a
/// result. A plain conversation keeps to `GenerateChat`, which every moed has.
fn uses_tools(prepared: &Prepared) -> bool {
    prepared.options.tools.is_some()
        || prepared.options.tool_choice.is_some()
        || matches!(&prepared.input, Input::Chat(turns) if turns.iter().any(|t| !t.extras.is_empty()))
}

/// Forwards the request's events until `Finished`; cancels it when the client is gone. The
/// channel is unbounded so that a slow client never stops the bus connection's reader (which
/// all requests share); what it holds is bounded by the request's own output.
async fn relay(mut stream: RequestStream, peer: Peer, tx: mpsc::UnboundedSender<Event>) {
    let hung_up = peer.closed();
    tokio::pin!(hung_up);
    let dropped = tx.closed();
    tokio::pin!(dropped);
    loop {
        let event = tokio::select! {
            event = stream.next() => event,
            () = &mut hung_up => return cancel(&stream, "the client hung up").await,
            () = &mut dropped => return cancel(&stream, "the response was dropped").await,
        };
        let event = match event {
            Some(Ok(RequestEvent::Token { text, thinking })) => Event::Token { text, thinking },
            Some(Ok(RequestEvent::Alert { .. })) => continue,
            Some(Ok(RequestEvent::Finished { reason, info })) => finished(&reason, info),
            Some(Err(e)) => Event::Failed(e.into()),
            None => Event::Failed(ApiError::from(MoedError::Failed(
                "the connection to moed ended before the request finished".into(),
            ))),
        };
        let last = !matches!(event, Event::Token { .. });
        if tx.send(event).is_err() {
            return cancel(&stream, "the response was dropped").await;
        }
        if last {
            return;
        }
    }
}

fn finished(reason: &str, info: GenerationInfo) -> Event {
    match reason {
        "error" | "cancelled" => {
            let name = info
                .error_name
                .as_deref()
                .unwrap_or(if reason == "cancelled" {
                    "Cancelled"
                } else {
                    "Failed"
                });
            let message = info
                .error_message
                .clone()
                .unwrap_or_else(|| format!("the request ended: {reason}"));
            Event::Failed(MoedError::from_parts(name, message).into())
        }
        _ => Event::Done(info),
    }
}

async fn cancel(stream: &RequestStream, why: &str) {
    match stream.cancel().await {
        Ok(()) => log::info!("request {}: cancelled: {why}", stream.path().as_str()),
        // NotFound: it finished meanwhile.
        Err(e) => log::debug!("request {}: cancel: {e}", stream.path().as_str()),
    }
}

/// OpenAI's `finish_reason` for moed's.
pub fn finish_reason(moed: &str) -> &'static str {
    match moed {
        "max_tokens" | "length" => "length",
        "tool_calls" => "tool_calls",
        _ => "stop",
    }
}
