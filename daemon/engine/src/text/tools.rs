//! Tool (function) calls through a model's chat template: a request's tool definitions checked
//! for the template, the call syntax the template writes found in its text, calls parsed back
//! out of an answer, and the grammar that makes a required call well-formed.

use moed_wire::{is_function_name, quote};
use serde_json::{Map, Value};

use super::constraint::check_schema_value;
use super::stop::partial_suffix_len;

/// Most functions in `tools`.
pub const MAX_TOOLS: usize = moed_wire::limits::TOOLS;
/// Most calls in one answer or one turn's `tool_calls`.
pub const MAX_CALLS: usize = moed_wire::limits::TOOL_CALLS;
/// Most bytes of a function's name (OpenAI's limit).
pub const MAX_NAME: usize = moed_wire::limits::FUNCTION_NAME;

/// A request's tools or a turn's calls that cannot be used; `at` names the option or field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{at}: {message}")]
pub struct ToolError {
    pub at: String,
    pub message: String,
}

fn tools_error(path: impl std::fmt::Display, message: impl Into<String>) -> ToolError {
    ToolError {
        at: format!("option 'tools': {path}"),
        message: message.into(),
    }
}

/// Whether and which tool the answer must call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    Auto,
    /// The tools are not shown and nothing is parsed.
    None,
    Required,
    Function(String),
}

/// One offered function.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolDef {
    pub name: String,
    /// The JSON schema of its arguments (an object schema by default).
    pub parameters: Value,
}

/// A request's tools: the list as sent (what the template sees) and each function.
#[derive(Debug, Clone, PartialEq)]
pub struct Tools {
    pub listed: Value,
    pub defs: Vec<ToolDef>,
}

/// `tools` and `tool_choice` of one request, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolRequest {
    pub tools: Tools,
    pub choice: ToolChoice,
}

impl ToolRequest {
    /// Parses `tools` (JSON text, OpenAI's shape) and checks `choice` against it.
    pub fn parse(text: &str, choice: ToolChoice) -> Result<Self, ToolError> {
        let tools = parse_tools(text)?;
        if let ToolChoice::Function(name) = &choice
            && !tools.defs.iter().any(|d| &d.name == name)
        {
            return Err(ToolError {
                at: "option 'tool_choice'".into(),
                message: format!("{} is not among the tools", quote(name)),
            });
        }
        Ok(ToolRequest { tools, choice })
    }

    /// The functions a required call may be of.
    pub fn callable(&self) -> Vec<&ToolDef> {
        match &self.choice {
            ToolChoice::Function(name) => {
                self.tools.defs.iter().filter(|d| &d.name == name).collect()
            }
            _ => self.tools.defs.iter().collect(),
        }
    }
}

fn parse_tools(text: &str) -> Result<Tools, ToolError> {
    let listed: Value = serde_json::from_str(text)
        .map_err(|e| tools_error("tools", format!("{} is not JSON: {e}", quote(text))))?;
    let Value::Array(items) = &listed else {
        return Err(tools_error("tools", "must be a JSON array of functions"));
    };
    if items.len() > MAX_TOOLS {
        return Err(tools_error(
            "tools",
            format!("{} functions, at most {MAX_TOOLS}", items.len()),
        ));
    }
    let mut defs: Vec<ToolDef> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = |field: &str| format!("tools[{i}]{field}");
        let Some(obj) = item.as_object() else {
            return Err(tools_error(at(""), "must be an object"));
        };
        if obj.get("type").and_then(Value::as_str) != Some("function") {
            return Err(tools_error(at(".type"), "must be \"function\""));
        }
        let Some(function) = obj.get("function").and_then(Value::as_object) else {
            return Err(tools_error(at(".function"), "must be an object"));
        };
        let name = match function.get("name") {
            Some(Value::String(n)) if is_function_name(n) => n.clone(),
            Some(Value::String(n)) => {
                return Err(tools_error(
                    at(".function.name"),
                    format!(
                        "{} is not a function name (letters, digits, _ . -; 1 to {MAX_NAME} bytes)",
                        quote(n)
                    ),
                ));
            }
            _ => return Err(tools_error(at(".function.name"), "must be a string")),
        };
        if defs.iter().any(|d| d.name == name) {
            return Err(tools_error(
                at(".function.name"),
                format!("{} is named twice", quote(&name)),
            ));
        }
        if !matches!(
            function.get("description"),
            None | Some(Value::String(_) | Value::Null)
        ) {
            return Err(tools_error(at(".function.description"), "must be a string"));
        }
        let parameters = match function.get("parameters") {
            None | Some(Value::Null) => serde_json::json!({"type": "object", "properties": {}}),
            Some(p @ Value::Object(_)) => {
                check_schema_value(p).map_err(|m| tools_error(at(".function.parameters"), m))?;
                p.clone()
            }
            Some(_) => {
                return Err(tools_error(
                    at(".function.parameters"),
                    "must be a JSON schema object",
                ));
            }
        };
        defs.push(ToolDef { name, parameters });
    }
    Ok(Tools { listed, defs })
}

/// Checks a turn's `tool_calls` (JSON text of OpenAI's array) and returns it parsed, for the
/// template; `at` names the field in errors (`messages[3].tool_calls`).
pub fn parse_turn_calls(text: &str, at: &str) -> Result<Value, ToolError> {
    let err = |path: String, message: &str| ToolError {
        at: path,
        message: message.to_string(),
    };
    let value: Value = serde_json::from_str(text).map_err(|e| ToolError {
        at: at.to_string(),
        message: format!("{} is not JSON: {e}", quote(text)),
    })?;
    let Value::Array(calls) = &value else {
        return Err(err(at.into(), "must be a JSON array of calls"));
    };
    if calls.len() > MAX_CALLS {
        return Err(ToolError {
            at: at.into(),
            message: format!("{} calls, at most {MAX_CALLS}", calls.len()),
        });
    }
    for (i, call) in calls.iter().enumerate() {
        let function = call
            .as_object()
            .and_then(|c| c.get("function"))
            .and_then(Value::as_object)
            .ok_or_else(|| err(format!("{at}[{i}].function"), "must be an object"))?;
        match function.get("name") {
            Some(Value::String(n)) if is_function_name(n) => {}
            _ => {
                return Err(err(
                    format!("{at}[{i}].function.name"),
                    "must be a function name (letters, digits, _ . -; 1 to 64 bytes)",
                ));
            }
        }
        if !matches!(function.get("arguments"), Some(Value::String(_))) {
            return Err(err(
                format!("{at}[{i}].function.arguments"),
                "must be a string (the arguments as JSON text)",
            ));
        }
    }
    Ok(value)
}

/// A call the answer made: the function and its arguments as compact JSON text (an object).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ToolCall {
    pub name: String,
    pub arguments: String,
}

const HERMES_OPEN: &str = "<tool_call>";
const HERMES_CLOSE: &str = "</tool_call>";
const DS_CALLS_BEGIN: &str = "<｜tool▁calls▁begin｜>";
const DS_CALLS_END: &str = "<｜tool▁calls▁end｜>";
const DS_CALL_BEGIN: &str = "<｜tool▁call▁begin｜>";
const DS_CALL_END: &str = "<｜tool▁call▁end｜>";
const DS_SEP: &str = "<｜tool▁sep｜>";
const MISTRAL_OPEN: &str = "[TOOL_CALLS]";

/// How a template writes calls (CONTRACT.md, *Tools*).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolSyntax {
    /// `<tool_call>{"name": …, "arguments": …}</tool_call>` (Qwen, Hermes).
    Hermes,
    /// `<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME` + fenced JSON (DeepSeek-V3/R1).
    DeepSeek,
    /// `[TOOL_CALLS][{"name": …, "arguments": …}]` (Mistral).
    Mistral,
}

impl ToolSyntax {
    /// The syntax a template's source writes calls in, if any.
    pub fn detect(source: &str) -> Option<Self> {
        if source.contains(HERMES_OPEN) {
            Some(ToolSyntax::Hermes)
        } else if source.contains(DS_CALL_BEGIN) {
            Some(ToolSyntax::DeepSeek)
        } else if source.contains(MISTRAL_OPEN) {
            Some(ToolSyntax::Mistral)
        } else {
            None
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ToolSyntax::Hermes => "hermes",
            ToolSyntax::DeepSeek => "deepseek",
            ToolSyntax::Mistral => "mistral",
        }
    }

    /// What opens the calls in an answer: from here on the answer is held back and parsed.
    pub fn opening(self) -> &'static str {
        match self {
            ToolSyntax::Hermes => HERMES_OPEN,
            ToolSyntax::DeepSeek => DS_CALLS_BEGIN,
            ToolSyntax::Mistral => MISTRAL_OPEN,
        }
    }

    /// Every marker of the syntax: tokens spelled so must reach the parser as text.
    pub fn markers(self) -> &'static [&'static str] {
        match self {
            ToolSyntax::Hermes => &[HERMES_OPEN, HERMES_CLOSE],
            ToolSyntax::DeepSeek => &[
                DS_CALLS_BEGIN,
                DS_CALLS_END,
                DS_CALL_BEGIN,
                DS_CALL_END,
                DS_SEP,
            ],
            ToolSyntax::Mistral => &[MISTRAL_OPEN],
        }
    }

    /// The calls in `text` (which starts at [`Self::opening`]); `None` when it is not a
    /// well-formed list of calls of offered functions with object arguments.
    pub fn parse(self, text: &str, tools: &Tools) -> Option<Vec<ToolCall>> {
        let calls = match self {
            ToolSyntax::Hermes => parse_hermes(text, tools),
            ToolSyntax::DeepSeek => parse_deepseek(text, tools),
            ToolSyntax::Mistral => parse_mistral(text, tools),
        }?;
        (!calls.is_empty() && calls.len() <= MAX_CALLS).then_some(calls)
    }

    /// A Lark grammar (llguidance) for exactly one call of one of `defs`, written as this
    /// syntax writes it; `token` gives the id of a marker that is one token of the vocabulary,
    /// so that the model writes the marker as that token.
    pub fn grammar(self, defs: &[&ToolDef], token: &dyn Fn(&str) -> Option<u32>) -> String {
        let mark = |m: &str| match token(m) {
            Some(id) => format!("<[{id}]>"),
            None => lark_str(m),
        };
        let mut rules = String::new();
        let mut alts = Vec::with_capacity(defs.len());
        for (i, def) in defs.iter().enumerate() {
            let schema = compact_schema(&def.parameters);
            rules.push_str(&format!("args{i}: %json {schema}\n"));
            alts.push(match self {
                ToolSyntax::Hermes => format!(
                    "{} args{i} \"}}\"",
                    lark_str(&format!("{{\"name\": \"{}\", \"arguments\": ", def.name))
                ),
                ToolSyntax::DeepSeek => format!(
                    "{} \"function\" {} {} args{i} {} {}",
                    mark(DS_CALL_BEGIN),
                    mark(DS_SEP),
                    lark_str(&format!("{}\n```json\n", def.name)),
                    lark_str("\n```"),
                    mark(DS_CALL_END)
                ),
                ToolSyntax::Mistral => format!(
                    "{} args{i} \"}}\"",
                    lark_str(&format!("{{\"name\": \"{}\", \"arguments\": ", def.name))
                ),
            });
        }
        let start = match self {
            ToolSyntax::Hermes => format!(
                "start: {} \"\\n\" call \"\\n\" {}\n",
                mark(HERMES_OPEN),
                mark(HERMES_CLOSE)
            ),
            ToolSyntax::DeepSeek => format!(
                "start: {} call {}\n",
                mark(DS_CALLS_BEGIN),
                mark(DS_CALLS_END)
            ),
            ToolSyntax::Mistral => format!("start: {} \"[\" call \"]\"\n", mark(MISTRAL_OPEN)),
        };
        format!("{start}call: {}\n{rules}", alts.join(" | "))
    }
}

/// A string literal of the Lark dialect (JSON's syntax).
fn lark_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// The schema as one line of JSON, written without free whitespace unless it says otherwise.
fn compact_schema(schema: &Value) -> String {
    let mut schema = schema.clone();
    if let Value::Object(map) = &mut schema
        && !map.contains_key("x-guidance")
    {
        map.insert(
            "x-guidance".into(),
            serde_json::json!({"whitespace_flexible": false}),
        );
    }
    serde_json::to_string(&schema).unwrap_or_else(|_| "{}".into())
}

/// A call from its name and its arguments (an object, or JSON text of one), if `tools` offers it.
fn call(name: &str, arguments: &Value, tools: &Tools) -> Option<ToolCall> {
    if !tools.defs.iter().any(|d| d.name == name) {
        return None;
    }
    let object = match arguments {
        Value::Object(_) => arguments.clone(),
        Value::String(text) => match serde_json::from_str::<Value>(text) {
            Ok(v @ Value::Object(_)) => v,
            _ => return None,
        },
        _ => return None,
    };
    Some(ToolCall {
        name: name.to_string(),
        arguments: serde_json::to_string(&object).ok()?,
    })
}

fn call_object(obj: &Map<String, Value>, tools: &Tools) -> Option<ToolCall> {
    let name = obj.get("name")?.as_str()?;
    let empty = Value::Object(Map::new());
    call(name, obj.get("arguments").unwrap_or(&empty), tools)
}

fn parse_hermes(text: &str, tools: &Tools) -> Option<Vec<ToolCall>> {
    let mut calls = Vec::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            return Some(calls);
        }
        rest = rest.strip_prefix(HERMES_OPEN)?;
        let end = rest.find(HERMES_CLOSE)?;
        let body: Value = serde_json::from_str(rest[..end].trim()).ok()?;
        calls.push(call_object(body.as_object()?, tools)?);
        if calls.len() > MAX_CALLS {
            return None;
        }
        rest = &rest[end + HERMES_CLOSE.len()..];
    }
}

fn parse_deepseek(text: &str, tools: &Tools) -> Option<Vec<ToolCall>> {
    let mut calls = Vec::new();
    let mut rest = text.strip_prefix(DS_CALLS_BEGIN)?;
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            return Some(calls);
        }
        if let Some(after) = rest.strip_prefix(DS_CALLS_END) {
            return after.trim().is_empty().then_some(calls);
        }
        rest = rest.strip_prefix(DS_CALL_BEGIN)?;
        let end = rest.find(DS_CALL_END)?;
        let (_kind, named) = rest[..end].split_once(DS_SEP)?;
        let (name, args) = named.split_once('\n')?;
        let args = args
            .trim()
            .strip_prefix("```json")?
            .strip_suffix("```")?
            .trim();
        let args: Value = serde_json::from_str(args).ok()?;
        calls.push(call(name.trim(), &args, tools)?);
        if calls.len() > MAX_CALLS {
            return None;
        }
        rest = &rest[end + DS_CALL_END.len()..];
    }
}

fn parse_mistral(text: &str, tools: &Tools) -> Option<Vec<ToolCall>> {
    let list: Value = serde_json::from_str(text.strip_prefix(MISTRAL_OPEN)?.trim()).ok()?;
    let items = list.as_array()?;
    if items.len() > MAX_CALLS {
        return None;
    }
    items
        .iter()
        .map(|item| call_object(item.as_object()?, tools))
        .collect()
}

/// Holds an answer back from the opening of the call syntax on: what comes before is released as
/// it streams, the rest is kept whole for parsing when the answer ends. An opening split across
/// chunks is held until the next chunk decides it.
#[derive(Debug, Clone)]
pub struct CallSplitter {
    opening: String,
    held: String,
    captured: Option<String>,
}

impl CallSplitter {
    pub fn new(syntax: ToolSyntax) -> Self {
        CallSplitter {
            opening: syntax.opening().to_string(),
            held: String::new(),
            captured: None,
        }
    }

    /// The part of `chunk` that is answer text for sure.
    pub fn push(&mut self, chunk: &str) -> String {
        if let Some(captured) = &mut self.captured {
            captured.push_str(chunk);
            return String::new();
        }
        self.held.push_str(chunk);
        if let Some(pos) = self.held.find(self.opening.as_str()) {
            self.captured = Some(self.held.split_off(pos));
            return std::mem::take(&mut self.held);
        }
        let keep = partial_suffix_len(&self.held, std::slice::from_ref(&self.opening));
        self.held.drain(..self.held.len() - keep).collect()
    }

    /// At the end: the text still held (an unfinished opening is text), and what was captured
    /// from the opening on, if it appeared.
    pub fn finish(&mut self) -> (String, Option<String>) {
        (std::mem::take(&mut self.held), self.captured.take())
    }
}

#[cfg(test)]
#[path = "tools_tests.rs"]
mod tests;
