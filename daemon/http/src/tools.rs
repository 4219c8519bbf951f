//! OpenAI's tool (function) calling in both directions: `tools`, `tool_choice` and the turns that
//! carry calls and results become moed's `tools`/`tool_choice` options and `ChatTurn` extras
//! (CONTRACT.md, *Tools*); moed's `info.tool_calls` becomes the message's or the delta's
//! `tool_calls`. The bridge checks shapes, names and counts, so a refusal names the field; the
//! daemon checks the rest (schemas, the template's support).

use std::collections::HashMap;

use moed_dbus::options::{MAX_FUNCTION_NAME, MAX_TOOLS_BYTES};
use moed_dbus::wire::is_function_name;
use moed_dbus::{ToolChoice, wire};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::openai::no_nul;

/// Most entries of `tools` (moed's own limit, checked before the entries are looked at).
pub const MAX_TOOLS: usize = wire::limits::TOOLS;
/// Most calls in one assistant message's `tool_calls`.
pub const MAX_TOOL_CALLS: usize = wire::limits::TOOL_CALLS;
/// Most bytes of a call's `id` (OpenAI's are about 30, moed's `call_<request>_<n>`).
pub const MAX_CALL_ID: usize = 256;

/// The `tools` and `tool_choice` options of a chat request.
pub fn options(obj: &Map<String, Value>) -> Result<(Option<String>, Option<ToolChoice>), ApiError> {
    legacy(obj)?;
    if !matches!(
        obj.get("parallel_tool_calls"),
        None | Some(Value::Null | Value::Bool(_))
    ) {
        return Err(ApiError::invalid(
            "parallel_tool_calls",
            "must be true or false",
        ));
    }
    let (tools, names) = tools(obj)?;
    let choice = choice(obj)?;
    match &choice {
        Some(ToolChoice::Required | ToolChoice::Function(_)) if tools.is_none() => Err(
            ApiError::invalid("tool_choice", "asks for a call but no tools are given"),
        ),
        Some(ToolChoice::Function(name)) if !names.contains_key(name.as_str()) => {
            Err(ApiError::invalid(
                "tool_choice.function.name",
                format!("{} is not among tools", wire::quote(name)),
            ))
        }
        _ => Ok((tools, choice)),
    }
}

/// OpenAI's older function calling (`functions`, `function_call`), which moed does not offer.
fn legacy(obj: &Map<String, Value>) -> Result<(), ApiError> {
    match obj.get("functions") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) if a.is_empty() => {}
        Some(_) => {
            return Err(ApiError::unsupported(
                "functions",
                "legacy function calling is not supported; send tools",
            ));
        }
    }
    match obj.get("function_call") {
        None | Some(Value::Null) => Ok(()),
        Some(_) => Err(ApiError::unsupported(
            "function_call",
            "legacy function calling is not supported; send tool_choice",
        )),
    }
}

/// `tools` as JSON text of the entries moed reads (fields it does not know left out), and each
/// name's index.
fn tools(obj: &Map<String, Value>) -> Result<(Option<String>, HashMap<&str, usize>), ApiError> {
    let mut names = HashMap::new();
    let items = match obj.get("tools") {
        None | Some(Value::Null) => return Ok((None, names)),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(ApiError::invalid("tools", "must be a list")),
    };
    if items.is_empty() {
        return Ok((None, names));
    }
    if items.len() > MAX_TOOLS {
        return Err(ApiError::invalid(
            "tools",
            format!("{} tools, at most {MAX_TOOLS}", items.len()),
        ));
    }
    let mut entries = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let (name, entry) = tool(i, item)?;
        if let Some(first) = names.insert(name, i) {
            return Err(ApiError::invalid(
                &format!("tools[{i}].function.name"),
                format!("{} is also tools[{first}]'s name", wire::quote(name)),
            ));
        }
        entries.push(entry);
    }
    let text = serde_json::to_string(&entries)
        .map_err(|e| ApiError::invalid("tools", format!("cannot be written as JSON: {e}")))?;
    if text.len() > MAX_TOOLS_BYTES {
        return Err(ApiError::invalid(
            "tools",
            format!(
                "are {} bytes of JSON, at most {MAX_TOOLS_BYTES}",
                text.len()
            ),
        ));
    }
    Ok((Some(text), names))
}

/// An entry's `function` object; `shape` shows what it holds in the refusal.
fn function_object<'a>(
    obj: &'a Map<String, Value>,
    param: &str,
    shape: &str,
) -> Result<&'a Map<String, Value>, ApiError> {
    match obj.get("function") {
        Some(Value::Object(f)) => Ok(f),
        _ => Err(ApiError::invalid(
            param,
            format!("must be an object: {shape}"),
        )),
    }
}

/// One `{"type": "function", "function": {"name", "description", "parameters", "strict"}}`.
fn tool(i: usize, item: &Value) -> Result<(&str, Value), ApiError> {
    let param = |field: &str| format!("tools[{i}]{field}");
    let obj = item
        .as_object()
        .ok_or_else(|| ApiError::invalid(&param(""), "must be an object"))?;
    function_type(obj, &param(".type"))?;
    let function = function_object(
        obj,
        &param(".function"),
        "{\"name\": ..., \"description\": ..., \"parameters\": {...}}",
    )?;
    let name = name(function, &param(".function.name"))?;
    let mut out = Map::new();
    out.insert("name".into(), name.into());
    if let Some(Value::String(d)) = function.get("description") {
        no_nul(&param(".function.description"), d)?;
    }
    for (key, expected, ok) in [
        (
            "description",
            "must be a string",
            Value::is_string as fn(&Value) -> bool,
        ),
        (
            "parameters",
            "must be a JSON schema (an object)",
            Value::is_object,
        ),
        ("strict", "must be true or false", Value::is_boolean),
    ] {
        match function.get(key) {
            None | Some(Value::Null) => {}
            Some(v) if ok(v) => {
                out.insert(key.into(), v.clone());
            }
            Some(_) => {
                return Err(ApiError::invalid(
                    &param(&format!(".function.{key}")),
                    expected,
                ));
            }
        }
    }
    Ok((name, json!({"type": "function", "function": out})))
}

/// `type` of a tool or a call: `function`, the only kind moed has (OpenAI's default when absent).
fn function_type(obj: &Map<String, Value>, param: &str) -> Result<(), ApiError> {
    match obj.get("type") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(t)) if t == "function" => Ok(()),
        Some(Value::String(t)) => Err(ApiError::unsupported(
            param,
            format!(
                "{} is not supported; moed's tools are functions (type \"function\")",
                wire::quote(t)
            ),
        )),
        Some(_) => Err(ApiError::invalid(param, "must be \"function\"")),
    }
}

/// A function's `name`: `[A-Za-z0-9_.-]`, 1 to 64 bytes, as OpenAI allows.
fn name<'a>(function: &'a Map<String, Value>, param: &str) -> Result<&'a str, ApiError> {
    match function.get("name") {
        Some(Value::String(n)) if is_function_name(n) => Ok(n),
        Some(Value::String(n)) => Err(ApiError::invalid(
            param,
            format!(
                "{} is not a function name: letters, digits, _ . - ; 1 to {} bytes",
                wire::quote(n),
                MAX_FUNCTION_NAME
            ),
        )),
        None | Some(Value::Null) => Err(ApiError::invalid(param, "is required")),
        Some(_) => Err(ApiError::invalid(param, "must be a string")),
    }
}

/// `tool_choice`: `"auto"`, `"none"`, `"required"` or `{"type": "function", "function":
/// {"name": N}}`.
fn choice(obj: &Map<String, Value>) -> Result<Option<ToolChoice>, ApiError> {
    const PARAM: &str = "tool_choice";
    let spec = match obj.get(PARAM) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => {
            return match s.as_str() {
                "auto" => Ok(Some(ToolChoice::Auto)),
                "none" => Ok(Some(ToolChoice::None)),
                "required" => Ok(Some(ToolChoice::Required)),
                other => Err(ApiError::invalid(
                    PARAM,
                    format!(
                        "{} is not auto, none or required; name a function with {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}",
                        wire::quote(other)
                    ),
                )),
            };
        }
        Some(Value::Object(spec)) => spec,
        Some(_) => {
            return Err(ApiError::invalid(
                PARAM,
                "must be auto, none, required or {\"type\": \"function\", ...}",
            ));
        }
    };
    match spec.get("type") {
        Some(Value::String(t)) if t == "function" => {}
        Some(Value::String(t)) => {
            return Err(ApiError::unsupported(
                "tool_choice.type",
                format!(
                    "{} is not supported; moed names one function (type \"function\")",
                    wire::quote(t)
                ),
            ));
        }
        _ => {
            return Err(ApiError::invalid(
                "tool_choice.type",
                "must be \"function\"",
            ));
        }
    }
    match spec.get("function") {
        Some(Value::Object(f)) => Ok(Some(ToolChoice::Function(
            name(f, "tool_choice.function.name")?.to_string(),
        ))),
        _ => Err(ApiError::invalid(
            "tool_choice.function",
            "must be an object: {\"name\": ...}",
        )),
    }
}

/// The extras of message `i` (role already checked to be a known one): an assistant's
/// `tool_calls`, a tool result's `tool_call_id` and `name`. Each is refused on another role.
pub fn extras(
    i: usize,
    role: &str,
    obj: &Map<String, Value>,
) -> Result<HashMap<String, String>, ApiError> {
    let param = |field: &str| format!("messages[{i}].{field}");
    let mut extras = HashMap::new();
    if !matches!(obj.get("function_call"), None | Some(Value::Null)) {
        return Err(ApiError::unsupported(
            &param("function_call"),
            "legacy function calls are not supported; send tool_calls",
        ));
    }
    let calls = match obj.get("tool_calls") {
        None | Some(Value::Null) => None,
        Some(Value::Array(a)) if a.is_empty() => None,
        Some(Value::Array(a)) => Some(a),
        Some(_) => return Err(ApiError::invalid(&param("tool_calls"), "must be a list")),
    };
    if let Some(calls) = calls {
        if role != "assistant" {
            return Err(ApiError::invalid(
                &param("tool_calls"),
                "only assistant messages carry tool calls",
            ));
        }
        extras.insert("tool_calls".into(), tool_calls(i, calls)?);
    }
    let id = match obj.get("tool_call_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) => Some(id),
        Some(_) => {
            return Err(ApiError::invalid(
                &param("tool_call_id"),
                "must be a string",
            ));
        }
    };
    if role != "tool" {
        if id.is_some() {
            return Err(ApiError::invalid(
                &param("tool_call_id"),
                "only tool messages answer a call",
            ));
        }
        return Ok(extras);
    }
    let id = id.ok_or_else(|| {
        ApiError::invalid(
            &param("tool_call_id"),
            "is required: the id of the call this result answers",
        )
    })?;
    call_id(&param("tool_call_id"), id)?;
    extras.insert("tool_call_id".into(), id.clone());
    // A participant's name on other roles is OpenAI's label, not moed's: only a result's counts.
    match obj.get("name") {
        None | Some(Value::Null) => {}
        Some(_) => {
            extras.insert("name".into(), name(obj, &param("name"))?.to_string());
        }
    }
    Ok(extras)
}

fn call_id(param: &str, id: &str) -> Result<(), ApiError> {
    if id.is_empty() {
        return Err(ApiError::invalid(param, "must not be empty"));
    }
    if id.len() > MAX_CALL_ID {
        return Err(ApiError::invalid(
            param,
            format!(
                "{} is too long: at most {MAX_CALL_ID} bytes",
                wire::quote(id)
            ),
        ));
    }
    no_nul(param, id)
}

/// An assistant's calls as JSON text of `[{"id", "type": "function", "function": {"name",
/// "arguments"}}]`, `arguments` JSON text as OpenAI sends it (an object is written as text).
fn tool_calls(i: usize, calls: &[Value]) -> Result<String, ApiError> {
    if calls.len() > MAX_TOOL_CALLS {
        return Err(ApiError::invalid(
            &format!("messages[{i}].tool_calls"),
            format!("{} calls, at most {MAX_TOOL_CALLS}", calls.len()),
        ));
    }
    let mut out = Vec::with_capacity(calls.len());
    for (j, call) in calls.iter().enumerate() {
        let param = |field: &str| format!("messages[{i}].tool_calls[{j}]{field}");
        let obj = call
            .as_object()
            .ok_or_else(|| ApiError::invalid(&param(""), "must be an object"))?;
        let id = match obj.get("id") {
            Some(Value::String(id)) => id,
            _ => return Err(ApiError::invalid(&param(".id"), "must be a string")),
        };
        call_id(&param(".id"), id)?;
        function_type(obj, &param(".type"))?;
        let function = function_object(
            obj,
            &param(".function"),
            "{\"name\": ..., \"arguments\": ...}",
        )?;
        let name = name(function, &param(".function.name"))?;
        let arguments = match function.get("arguments") {
            Some(Value::String(a)) => a.clone(),
            Some(a @ Value::Object(_)) => a.to_string(),
            None | Some(Value::Null) => {
                return Err(ApiError::invalid(
                    &param(".function.arguments"),
                    "is required (JSON text)",
                ));
            }
            Some(_) => {
                return Err(ApiError::invalid(
                    &param(".function.arguments"),
                    "must be a string of JSON",
                ));
            }
        };
        no_nul(&param(".function.arguments"), &arguments)?;
        out.push(ToolCall {
            id: id.clone(),
            kind: "function".into(),
            function: FunctionCall {
                name: name.to_string(),
                arguments,
            },
        });
    }
    serde_json::to_string(&out).map_err(|e| {
        ApiError::invalid(
            &format!("messages[{i}].tool_calls"),
            format!("cannot be written as JSON: {e}"),
        )
    })
}

/// One call, as moed's `info.tool_calls` and the turns' `tool_calls` extra hold it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub function: FunctionCall,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    pub name: String,
    pub arguments: String,
}

/// The calls of moed's answer (`info.tool_calls`), none when it made none.
pub fn answered(text: Option<&str>) -> Result<Vec<ToolCall>, ApiError> {
    let Some(text) = text else {
        return Ok(Vec::new());
    };
    serde_json::from_str(text).map_err(|e| {
        ApiError::from(moed_dbus::MoedError::Failed(format!(
            "moed's tool_calls are not the contract's shape: {e}"
        )))
    })
}

/// The calls as the whole message's `tool_calls`.
pub fn message_calls(calls: &[ToolCall]) -> Value {
    calls
        .iter()
        .map(|c| {
            json!({"id": c.id, "type": "function",
                "function": {"name": c.function.name, "arguments": c.function.arguments}})
        })
        .collect()
}

/// The calls as a stream delta's `tool_calls`: each whole, with its `index`.
pub fn delta_calls(calls: &[ToolCall]) -> Value {
    calls
        .iter()
        .enumerate()
        .map(|(index, c)| {
            json!({"index": index, "id": c.id, "type": "function",
                "function": {"name": c.function.name, "arguments": c.function.arguments}})
        })
        .collect()
}
