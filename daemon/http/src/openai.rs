//! OpenAI request bodies read into moed's request: the prompt or conversation and the
//! `GenerateOptions` of `Generate`/`GenerateChat`/`GenerateChatTurns`. Fields are read from a
//! parsed JSON value by hand, so every refusal names the field and quotes at most 64 bytes of it;
//! collections are counted before their entries are looked at.

use moed_dbus::options::{MAX_STOP_BYTES, MAX_STOP_STRINGS};
use moed_dbus::wire::{self, limits};
use moed_dbus::{ChatTurn, GenerateOptions};
use serde_json::{Map, Value};

use crate::error::ApiError;

/// Most messages of a conversation (moed's own limit, checked here before they are copied).
pub const MAX_MESSAGES: usize = 1024;
/// Most content parts of one message.
const MAX_PARTS: usize = 256;

/// What the client asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// `/v1/completions`: text continued as it is (moed's `raw`).
    Prompt(String),
    /// `/v1/chat/completions`: through the model's chat template; turns may carry tool calls
    /// and results (extras, CONTRACT.md *Tools*).
    Chat(Vec<ChatTurn>),
}

/// A request ready for moed.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    pub input: Input,
    pub options: GenerateOptions,
    pub stream: bool,
    /// `stream_options.include_usage`: a last chunk carries the token counts.
    pub include_usage: bool,
}

/// A `/v1/completions` body.
pub fn completion(body: &Value) -> Result<Prepared, ApiError> {
    let obj = object(body)?;
    let prompt = match obj.get("prompt") {
        None | Some(Value::Null) => return Err(ApiError::invalid("prompt", "is required")),
        Some(Value::String(s)) => s,
        Some(Value::Array(items)) => match items.as_slice() {
            [Value::String(s)] => s,
            [] => return Err(ApiError::invalid("prompt", "is an empty list")),
            [_] => {
                return Err(ApiError::unsupported(
                    "prompt",
                    "token-id prompts are not supported; send text",
                ));
            }
            _ => {
                return Err(ApiError::unsupported(
                    "prompt",
                    format!(
                        "{} prompts in one request; moed answers one prompt per request",
                        items.len()
                    ),
                ));
            }
        },
        Some(_) => return Err(ApiError::invalid("prompt", "must be a string")),
    };
    no_nul("prompt", prompt)?;
    for (key, ok) in [
        (
            "echo",
            matches!(
                obj.get("echo"),
                None | Some(Value::Null | Value::Bool(false))
            ),
        ),
        (
            "suffix",
            matches!(obj.get("suffix"), None | Some(Value::Null)),
        ),
        (
            "best_of",
            matches!(obj.get("best_of"), None | Some(Value::Null))
                || obj.get("best_of") == Some(&Value::from(1)),
        ),
        (
            "logprobs",
            matches!(obj.get("logprobs"), None | Some(Value::Null)),
        ),
    ] {
        if !ok {
            return Err(ApiError::unsupported(key, "is not supported by moed"));
        }
    }
    let mut options = common(obj, "max_tokens")?;
    options.raw = true;
    Ok(Prepared {
        input: Input::Prompt(prompt.clone()),
        options,
        stream: stream(obj)?,
        include_usage: include_usage(obj)?,
    })
}

/// A `/v1/chat/completions` body.
pub fn chat(body: &Value) -> Result<Prepared, ApiError> {
    let obj = object(body)?;
    let items = match obj.get("messages") {
        Some(Value::Array(items)) => items,
        None | Some(Value::Null) => return Err(ApiError::invalid("messages", "is required")),
        Some(_) => return Err(ApiError::invalid("messages", "must be a list")),
    };
    if items.is_empty() {
        return Err(ApiError::invalid("messages", "is an empty list"));
    }
    if items.len() > MAX_MESSAGES {
        return Err(ApiError::invalid(
            "messages",
            format!("{} messages, at most {MAX_MESSAGES}", items.len()),
        ));
    }
    let messages = items
        .iter()
        .enumerate()
        .map(|(i, m)| message(i, m))
        .collect::<Result<Vec<_>, _>>()?;
    let (tools, tool_choice) = crate::tools::options(obj)?;
    if !matches!(
        obj.get("logprobs"),
        None | Some(Value::Null | Value::Bool(false))
    ) {
        return Err(ApiError::unsupported(
            "logprobs",
            "is not supported by moed",
        ));
    }
    // The newer name wins, as in OpenAI's API.
    let key = if obj
        .get("max_completion_tokens")
        .is_some_and(|v| !v.is_null())
    {
        "max_completion_tokens"
    } else {
        "max_tokens"
    };
    let mut options = common(obj, key)?;
    options.constraint = crate::response_format::constraint(obj)?;
    options.tools = tools;
    options.tool_choice = tool_choice;
    Ok(Prepared {
        input: Input::Chat(messages),
        options,
        stream: stream(obj)?,
        include_usage: include_usage(obj)?,
    })
}

fn object(body: &Value) -> Result<&Map<String, Value>, ApiError> {
    body.as_object()
        .ok_or_else(|| ApiError::invalid("body", "must be a JSON object"))
}

fn message(i: usize, value: &Value) -> Result<ChatTurn, ApiError> {
    let param = |field: &str| format!("messages[{i}].{field}");
    let obj = value
        .as_object()
        .ok_or_else(|| ApiError::invalid(&format!("messages[{i}]"), "must be an object"))?;
    let role = match obj.get("role") {
        Some(Value::String(r)) => r.as_str(),
        _ => return Err(ApiError::invalid(&param("role"), "must be a string")),
    };
    let role = match role {
        "system" | "developer" => "system",
        "user" => "user",
        "assistant" => "assistant",
        "tool" => "tool",
        "function" => {
            return Err(ApiError::unsupported(
                &param("role"),
                "legacy function results are not supported; send role tool with tool_call_id",
            ));
        }
        other => {
            return Err(ApiError::invalid(
                &param("role"),
                format!(
                    "{} is not a role; expected system, developer, user, assistant or tool",
                    wire::quote(other)
                ),
            ));
        }
    };
    let extras = crate::tools::extras(i, role, obj)?;
    let content = match obj.get("content") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => String::new(),
        Some(Value::Array(parts)) => {
            if parts.len() > MAX_PARTS {
                return Err(ApiError::invalid(
                    &param("content"),
                    format!("{} parts, at most {MAX_PARTS}", parts.len()),
                ));
            }
            let mut text = String::new();
            for (j, part) in parts.iter().enumerate() {
                let p = format!("messages[{i}].content[{j}]");
                match (part.get("type"), part.get("text")) {
                    (Some(t), Some(Value::String(s))) if t == "text" => text.push_str(s),
                    (Some(Value::String(t)), _) if t != "text" => {
                        return Err(ApiError::unsupported(
                            &p,
                            format!(
                                "content of type {} is not supported; send text",
                                wire::quote(t)
                            ),
                        ));
                    }
                    _ => {
                        return Err(ApiError::invalid(
                            &p,
                            "expected {\"type\": \"text\", \"text\": ...}",
                        ));
                    }
                }
            }
            text
        }
        Some(_) => {
            return Err(ApiError::invalid(
                &param("content"),
                "must be a string or a list of text parts",
            ));
        }
    };
    no_nul(&param("content"), &content)?;
    Ok(ChatTurn {
        role: role.to_string(),
        content,
        extras,
    })
}

/// The sampling fields both endpoints share.
fn common(obj: &Map<String, Value>, max_tokens_key: &str) -> Result<GenerateOptions, ApiError> {
    let mut options = GenerateOptions::default();
    if let Some(model) = string(obj, "model")? {
        if model.len() > limits::NAME {
            return Err(ApiError::invalid(
                "model",
                format!(
                    "{} is too long: at most {} bytes",
                    wire::quote(&model),
                    limits::NAME
                ),
            ));
        }
        if !model.is_empty() {
            options.model = Some(model);
        }
    }
    options.max_tokens = integer(obj, max_tokens_key, 1, u32::MAX.into())?.map(|v| v as u32);
    options.temperature = number(obj, "temperature")?;
    options.top_p = number(obj, "top_p")?;
    options.min_p = number(obj, "min_p")?;
    options.repetition_penalty = number(obj, "repetition_penalty")?;
    options.top_k = integer(obj, "top_k", 1, u32::MAX.into())?.map(|v| v as u32);
    options.seed = integer(obj, "seed", 0, u64::MAX)?;
    options.stop = stop(obj)?;
    // vLLM's extension, for clients that need a fixed length (moed wants max_tokens with it).
    options.ignore_eos = match obj.get("ignore_eos") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::invalid("ignore_eos", "must be true or false")),
    };
    if integer(obj, "n", 1, u64::MAX)?.is_some_and(|n| n != 1) {
        return Err(ApiError::unsupported(
            "n",
            "moed gives one choice per request (n = 1)",
        ));
    }
    for key in ["presence_penalty", "frequency_penalty"] {
        if number(obj, key)?.is_some_and(|v| v != 0.0) {
            return Err(ApiError::unsupported(
                key,
                "is not supported by moed; use repetition_penalty",
            ));
        }
    }
    match obj.get("logit_bias") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) if m.is_empty() => {}
        Some(_) => {
            return Err(ApiError::unsupported(
                "logit_bias",
                "is not supported by moed",
            ));
        }
    }
    Ok(options)
}

fn stream(obj: &Map<String, Value>) -> Result<bool, ApiError> {
    match obj.get("stream") {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ApiError::invalid("stream", "must be true or false")),
    }
}

fn include_usage(obj: &Map<String, Value>) -> Result<bool, ApiError> {
    match obj.get("stream_options") {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Object(o)) => match o.get("include_usage") {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(ApiError::invalid(
                "stream_options.include_usage",
                "must be true or false",
            )),
        },
        Some(_) => Err(ApiError::invalid("stream_options", "must be an object")),
    }
}

fn string(obj: &Map<String, Value>, key: &str) -> Result<Option<String>, ApiError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            no_nul(key, s)?;
            Ok(Some(s.clone()))
        }
        Some(_) => Err(ApiError::invalid(key, "must be a string")),
    }
}

fn number(obj: &Map<String, Value>, key: &str) -> Result<Option<f64>, ApiError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|v| v.is_finite())
            .map(Some)
            .ok_or_else(|| ApiError::invalid(key, "must be a finite number")),
        Some(_) => Err(ApiError::invalid(key, "must be a number")),
    }
}

fn integer(
    obj: &Map<String, Value>,
    key: &str,
    min: u64,
    max: u64,
) -> Result<Option<u64>, ApiError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(v) if (min..=max).contains(&v) => Ok(Some(v)),
            _ => Err(ApiError::invalid(
                key,
                format!("must be an integer from {min} to {max}"),
            )),
        },
        Some(_) => Err(ApiError::invalid(key, "must be an integer")),
    }
}

fn stop(obj: &Map<String, Value>) -> Result<Vec<String>, ApiError> {
    let items: Vec<&Value> = match obj.get("stop") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(v @ Value::String(_)) => vec![v],
        Some(Value::Array(a)) => {
            if a.len() > MAX_STOP_STRINGS {
                return Err(ApiError::invalid(
                    "stop",
                    format!("{} entries, at most {MAX_STOP_STRINGS}", a.len()),
                ));
            }
            a.iter().collect()
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "stop",
                "must be a string or a list of strings",
            ));
        }
    };
    items
        .into_iter()
        .map(|v| match v {
            Value::String(s) if s.is_empty() => {
                Err(ApiError::invalid("stop", "stop strings must not be empty"))
            }
            Value::String(s) if s.len() > MAX_STOP_BYTES => Err(ApiError::invalid(
                "stop",
                format!(
                    "{} is too long: at most {MAX_STOP_BYTES} bytes",
                    wire::quote(s)
                ),
            )),
            Value::String(s) => no_nul("stop", s).map(|()| s.clone()),
            _ => Err(ApiError::invalid(
                "stop",
                "must be a string or a list of strings",
            )),
        })
        .collect()
}

/// D-Bus strings cannot carry U+0000 (the bus would drop the connection): refused by name.
pub fn no_nul(param: &str, s: &str) -> Result<(), ApiError> {
    match s.find('\0') {
        None => Ok(()),
        Some(at) => Err(ApiError::invalid(
            param,
            format!(
                "contains a NUL character (U+0000) at byte {at}; moed cannot take text with NUL characters"
            ),
        )),
    }
}

#[cfg(test)]
#[path = "openai_tests.rs"]
mod tests;
