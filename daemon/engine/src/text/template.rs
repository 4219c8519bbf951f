//! Renders a package's chat template (Jinja, as transformers' `apply_chat_template` does) with minijinja.

use std::collections::BTreeMap;

use minijinja::value::{Kwargs, Value};
use minijinja::{Environment, Error, ErrorKind};
use serde::{Deserialize, Serialize};

use super::pyjson::{self, JsonStyle};
use super::tools::ToolSyntax;

const TEMPLATE_NAME: &str = "chat_template";

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("the chat template does not compile: {0}")]
    Syntax(String),
    #[error("the chat template failed to render: {0}")]
    Render(String),
}

/// One chat message as templates see it (`message['role']`, `message['content']`, and where
/// set `message['tool_calls']`, `message['tool_call_id']`, `message['name']`; an unset one is
/// absent, so that `'tool_calls' in message` reads as templates expect).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
    /// An assistant turn's calls: JSON text of OpenAI's array (checked with
    /// [`super::tools::parse_turn_calls`] before it gets here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<String>,
    /// A tool result's call id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// A tool result's function name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl ChatMessage {
    pub fn new(role: &str, content: &str) -> Self {
        ChatMessage {
            role: role.to_string(),
            content: content.to_string(),
            ..Default::default()
        }
    }

    /// Bytes of the message with its extras, as the prompt's size counts them.
    pub fn len(&self) -> usize {
        [&self.tool_calls, &self.tool_call_id, &self.name]
            .into_iter()
            .flatten()
            .map(String::len)
            .fold(self.role.len() + self.content.len(), usize::saturating_add)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// As the template sees it: `tool_calls` parsed from its JSON text.
    fn template_value(&self, index: usize) -> Result<Value, TemplateError> {
        let mut map = serde_json::Map::new();
        map.insert("role".into(), self.role.clone().into());
        map.insert("content".into(), self.content.clone().into());
        if let Some(calls) = &self.tool_calls {
            let calls =
                super::tools::parse_turn_calls(calls, &format!("messages[{index}].tool_calls"))
                    .map_err(|e| TemplateError::Render(e.to_string()))?;
            map.insert("tool_calls".into(), calls);
        }
        for (key, value) in [("tool_call_id", &self.tool_call_id), ("name", &self.name)] {
            if let Some(v) = value {
                map.insert(key.into(), v.clone().into());
            }
        }
        Ok(Value::from_serialize(&map))
    }
}

/// Texts of the special tokens that templates refer to as `bos_token`, `eos_token`, `pad_token`.
/// A missing one stays undefined in the template, as in transformers.
#[derive(Debug, Clone, Default)]
pub struct SpecialTokenTexts {
    pub bos: Option<String>,
    pub eos: Option<String>,
    pub pad: Option<String>,
}

/// A compiled chat template. Compiled once when loaded so that a broken template is reported
/// before any request, not in the middle of one.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    special: SpecialTokenTexts,
    /// The call syntax the template writes, if any.
    tool_syntax: Option<ToolSyntax>,
    /// Whether the template refers to `tools` (renders the offered functions).
    renders_tools: bool,
}

impl ChatTemplate {
    pub fn new(source: &str, special: SpecialTokenTexts) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        // transformers compiles templates with trim_blocks and lstrip_blocks on.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        // Python string methods (`.strip()`, `.split()`, `.startswith()`, ...) that templates call.
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_filter("tojson", tojson);
        env.add_template_owned(TEMPLATE_NAME, source.to_string())
            .map_err(|e| TemplateError::Syntax(describe(&e)))?;
        let renders_tools = env
            .get_template(TEMPLATE_NAME)
            .map(|t| t.undeclared_variables(false).contains("tools"))
            .unwrap_or(false);
        Ok(ChatTemplate {
            env,
            special,
            tool_syntax: ToolSyntax::detect(source),
            renders_tools,
        })
    }

    /// The syntax of calls when the template both shows the offered tools and writes calls.
    pub fn tool_support(&self) -> Option<ToolSyntax> {
        self.tool_syntax.filter(|_| self.renders_tools)
    }

    /// The call syntax the template writes (turns with calls render without it too).
    pub fn tool_syntax(&self) -> Option<ToolSyntax> {
        self.tool_syntax
    }

    /// Renders the conversation; with `add_generation_prompt` the template appends the opening
    /// of the assistant's turn.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, TemplateError> {
        self.render_with_tools(messages, add_generation_prompt, None)
    }

    /// [`Self::render`] with the offered tools given to the template as `tools` (the list as the
    /// request sent it, as transformers' `apply_chat_template(tools=...)` passes it).
    pub fn render_with_tools(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        tools: Option<&serde_json::Value>,
    ) -> Result<String, TemplateError> {
        let mut ctx: BTreeMap<&str, Value> = BTreeMap::new();
        let messages = messages
            .iter()
            .enumerate()
            .map(|(i, m)| m.template_value(i))
            .collect::<Result<Vec<Value>, _>>()?;
        ctx.insert("messages", Value::from(messages));
        if let Some(tools) = tools {
            ctx.insert("tools", Value::from_serialize(tools));
        }
        ctx.insert("add_generation_prompt", Value::from(add_generation_prompt));
        for (name, text) in [
            ("bos_token", &self.special.bos),
            ("eos_token", &self.special.eos),
            ("pad_token", &self.special.pad),
        ] {
            if let Some(text) = text {
                ctx.insert(name, Value::from(text.as_str()));
            }
        }
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| TemplateError::Render(describe(&e)))?;
        template
            .render(ctx)
            .map_err(|e| TemplateError::Render(describe(&e)))
    }
}

/// The error with its causes and the template line, on one line.
fn describe(err: &Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `raise_exception(msg)`: how transformers templates reject a conversation they cannot format.
fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(
        ErrorKind::InvalidOperation,
        format!("the template raised an exception: {message}"),
    ))
}

/// `tojson` with transformers' semantics (Python `json.dumps`, not HTML-escaped).
fn tojson(value: &Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    kwargs.assert_all_used()?;
    let style = JsonStyle {
        indent,
        ensure_ascii: ensure_ascii.unwrap_or(false),
        sort_keys: sort_keys.unwrap_or(false),
    };
    let json = pyjson::dumps(value, style).map_err(|e| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("tojson cannot serialize the value: {e}"),
        )
    })?;
    Ok(Value::from_safe_string(json))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// DeepSeek-R1's chat template, exactly as published in its tokenizer_config.json.
    const DEEPSEEK_R1: &str = include_str!("testdata/deepseek_r1_chat_template.jinja");

    fn r1() -> ChatTemplate {
        let special = SpecialTokenTexts {
            bos: Some("<｜begin▁of▁sentence｜>".into()),
            eos: Some("<｜end▁of▁sentence｜>".into()),
            pad: None,
        };
        ChatTemplate::new(DEEPSEEK_R1.trim_end_matches('\n'), special)
            .expect("R1 template compiles")
    }

    #[test]
    fn deepseek_r1_single_turn_opens_thinking() {
        let out = r1()
            .render(&[ChatMessage::new("user", "What is 2+2?")], true)
            .expect("render");
        assert_eq!(
            out,
            "<｜begin▁of▁sentence｜><｜User｜>What is 2+2?<｜Assistant｜><think>\n"
        );
    }

    #[test]
    fn deepseek_r1_system_prompts_and_history() {
        let messages = [
            ChatMessage::new("system", "Be brief."),
            ChatMessage::new("system", "Be kind."),
            ChatMessage::new("user", "Hi"),
            // The template drops an earlier answer's thinking (`content.split('</think>')[-1]`).
            ChatMessage::new("assistant", "<think>\nGreeting.\n</think>\n\nHello!"),
            ChatMessage::new("user", "Bye"),
        ];
        let out = r1().render(&messages, true).expect("render");
        assert_eq!(
            out,
            "<｜begin▁of▁sentence｜>Be brief.\n\nBe kind.<｜User｜>Hi<｜Assistant｜>\n\nHello!\
             <｜end▁of▁sentence｜><｜User｜>Bye<｜Assistant｜><think>\n"
        );
        let closed = r1().render(&messages[..4], false).expect("render");
        assert!(closed.ends_with("Hello!<｜end▁of▁sentence｜>"), "{closed}");
    }

    #[test]
    fn simple_template_with_pycompat_methods_and_whitespace_control() {
        let source = "{% for m in messages %}\n  {% if m.role == 'user' %}\n[{{ m.role.upper() }}] {{ m.content.strip() }}\n  {% endif %}\n{% endfor %}\n{% if add_generation_prompt %}[ASSISTANT]{% endif %}";
        let t = ChatTemplate::new(source, SpecialTokenTexts::default()).expect("compile");
        let out = t
            .render(&[ChatMessage::new("user", "  hello  ")], true)
            .expect("render");
        // trim_blocks + lstrip_blocks: block tags leave no whitespace behind, as in transformers.
        assert_eq!(out, "[USER] hello\n[ASSISTANT]");
        let t = ChatTemplate::new(
            "{{ messages[0].content.startswith('he') }}",
            SpecialTokenTexts::default(),
        )
        .expect("compile");
        assert_eq!(
            t.render(&[ChatMessage::new("user", "hello")], false)
                .expect("render"),
            "True"
        );
    }

    #[test]
    fn raise_exception_is_a_clear_error() {
        let source = "{% if messages[0].role != 'user' %}{{ raise_exception('Conversation roles must start with user') }}{% endif %}ok";
        let t = ChatTemplate::new(source, SpecialTokenTexts::default()).expect("compile");
        let err = t
            .render(&[ChatMessage::new("assistant", "x")], false)
            .expect_err("raises");
        assert!(
            err.to_string()
                .contains("Conversation roles must start with user"),
            "{err}"
        );
        assert_eq!(
            t.render(&[ChatMessage::new("user", "x")], false)
                .expect("render"),
            "ok"
        );
    }

    #[test]
    fn syntax_errors_are_reported_at_load() {
        let err = ChatTemplate::new(
            "{% for m in messages %}{{ m.content }}",
            SpecialTokenTexts::default(),
        )
        .expect_err("unclosed for");
        assert!(matches!(err, TemplateError::Syntax(_)), "{err}");
        assert!(err.to_string().contains("chat_template"), "{err}");
    }

    #[test]
    fn missing_special_tokens_stay_undefined() {
        let t = ChatTemplate::new(
            "[{{ bos_token }}]{% if eos_token is defined %}E{% endif %}",
            SpecialTokenTexts::default(),
        )
        .expect("compile");
        assert_eq!(t.render(&[], false).expect("render"), "[]");
    }

    #[test]
    fn tojson_is_python_style() {
        let t = ChatTemplate::new(
            "{{ messages[0] | tojson }}|{{ {'a': '<&>'} | tojson(indent=1) }}",
            SpecialTokenTexts::default(),
        )
        .expect("compile");
        let out = t
            .render(&[ChatMessage::new("user", "é <b>")], false)
            .expect("render");
        assert_eq!(
            out,
            "{\"role\": \"user\", \"content\": \"é <b>\"}|{\n \"a\": \"<&>\"\n}"
        );
        let t = ChatTemplate::new("{{ 1 | tojson(bogus=1) }}", SpecialTokenTexts::default())
            .expect("compile");
        assert!(t.render(&[], false).is_err());
    }

    /// Qwen3's published template (Qwen3-MoE's too): the offered tools go into its system turn,
    /// an assistant turn's calls and the tool results render as transformers renders them.
    #[test]
    fn qwen3_renders_tools_calls_and_results() {
        let t = ChatTemplate::new(
            include_str!("testdata/qwen3_chat_template.jinja"),
            SpecialTokenTexts::default(),
        )
        .expect("compiles");
        assert_eq!(t.tool_support(), Some(ToolSyntax::Hermes));
        let tools: serde_json::Value = serde_json::from_str(
            r#"[{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]"#,
        )
        .expect("json");
        let mut call = ChatMessage::new("assistant", "");
        call.tool_calls = Some(
            r#"[{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}]"#
                .into(),
        );
        let mut result = ChatMessage::new("tool", "{\"temp\": 3}");
        result.tool_call_id = Some("c1".into());
        let messages = [ChatMessage::new("user", "Weather in Oslo?"), call, result];
        let out = t
            .render_with_tools(&messages, true, Some(&tools))
            .expect("render");
        let expected = "<|im_start|>system\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"parameters\": {\"type\": \"object\"}}}\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n<|im_start|>user\nWeather in Oslo?<|im_end|>\n<|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call><|im_end|>\n<|im_start|>user\n<tool_response>\n{\"temp\": 3}\n</tool_response><|im_end|>\n<|im_start|>assistant\n";
        assert_eq!(out, expected);
        // Without tools the template writes no tools section.
        let plain = t.render(&messages[..1], true).expect("render");
        assert!(!plain.contains("<tools>"), "{plain}");
    }

    #[test]
    fn deepseek_r1_renders_calls_but_not_tools() {
        let t = r1();
        assert_eq!(t.tool_syntax(), Some(ToolSyntax::DeepSeek));
        assert_eq!(t.tool_support(), None);
        let mut call = ChatMessage::new("assistant", "");
        call.tool_calls = Some(
            r#"[{"id": "c1", "type": "function", "function": {"name": "now", "arguments": "{}"}}]"#
                .into(),
        );
        let out = t
            .render(&[ChatMessage::new("user", "Time?"), call], false)
            .expect("render");
        assert!(
            out.ends_with("<｜tool▁call▁begin｜>function<｜tool▁sep｜>now\n```json\n{}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜><｜end▁of▁sentence｜>"),
            "{out}"
        );
        let mut bad = ChatMessage::new("assistant", "");
        bad.tool_calls = Some("[{}]".into());
        let err = t.render(&[bad], false).expect_err("refused");
        assert!(
            err.to_string()
                .contains("messages[0].tool_calls[0].function"),
            "{err}"
        );
    }
}
