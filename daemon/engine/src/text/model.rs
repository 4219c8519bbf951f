//! The text side of a model package, loaded once and shared by requests: tokenizer, chat
//! template, thinking markers, end-of-sequence ids and sampling defaults.

use std::collections::HashSet;
use std::sync::OnceLock;

use crate::package::{GenerationDefaults, Package};

use super::constraint::{Constraint, ConstraintCompiler, ConstraintError, ConstraintSpec};
use super::sampler::{SamplerError, SamplingParams};
use super::template::{ChatMessage, ChatTemplate, SpecialTokenTexts, TemplateError};
use super::thinking::ThinkingMarkers;
use super::tokenizer::{TextTokenizer, TokenizerError};
use super::tools::ToolSyntax;

#[derive(Debug, thiserror::Error)]
pub enum TextModelError {
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error("invalid sampling parameter: {0}")]
    Sampling(#[from] SamplerError),
    #[error("the package has no chat template; give the prompt as raw text instead")]
    NoChatTemplate,
    #[error("the manifest's generation.eos_token_id is not a token id or a list of them: {0}")]
    BadEosList(String),
}

/// Sampling settings of a request; each one left `None` takes the package's default
/// (manifest `generation`, from generation_config.json), then the built-in one.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SamplingOverrides {
    /// 0 is greedy. Default: the package's temperature (unless its `do_sample` is false), else
    /// greedy, as transformers does without `do_sample`.
    pub temperature: Option<f32>,
    /// Default: the package's, else off (0).
    pub top_k: Option<usize>,
    /// Default: the package's, else 1 (off).
    pub top_p: Option<f32>,
    /// Default: the package's, else 0 (off).
    pub min_p: Option<f32>,
    /// Default: the package's, else 1 (off).
    pub repetition_penalty: Option<f32>,
}

#[derive(Debug)]
pub struct TextModel {
    tokenizer: TextTokenizer,
    template: Option<ChatTemplate>,
    thinking: Option<ThinkingMarkers>,
    eos_ids: HashSet<u32>,
    hidden_ids: HashSet<u32>,
    defaults: GenerationDefaults,
    context_length: usize,
    /// Built by the first constrained request (the vocabulary's trie costs time and memory that
    /// models never asked for structured output should not pay).
    constraints: OnceLock<Result<ConstraintCompiler, ConstraintError>>,
}

impl TextModel {
    pub fn load(package: &Package) -> Result<Self, TextModelError> {
        let special = package.special_tokens();
        let tokenizer = TextTokenizer::from_file(
            &package.tokenizer_path(),
            special.bos.as_ref().map(|t| t.id),
            package.add_bos_token(),
        )?;
        let texts = SpecialTokenTexts {
            bos: special.bos.as_ref().map(|t| t.text.clone()),
            eos: special.eos.as_ref().map(|t| t.text.clone()),
            pad: special.pad.as_ref().map(|t| t.text.clone()),
        };
        let template = package
            .chat_template()
            .map(|source| ChatTemplate::new(source, texts))
            .transpose()?;
        let thinking = package.thinking().map(|t| ThinkingMarkers {
            start: t.start.clone(),
            end: t.end.clone(),
        });
        let mut eos_ids: HashSet<u32> = special.eos.iter().map(|t| t.id).collect();
        eos_ids.extend(eos_list(package.generation())?);
        eos_ids.extend(package.manifest().stop_token_ids.iter().copied());
        Ok(Self::new(
            tokenizer,
            template,
            thinking,
            eos_ids,
            package.generation().clone(),
            package.context_length(),
        ))
    }

    /// Assembles a text model from its parts (what [`TextModel::load`] reads from a package).
    pub fn new(
        tokenizer: TextTokenizer,
        template: Option<ChatTemplate>,
        thinking: Option<ThinkingMarkers>,
        eos_ids: HashSet<u32>,
        defaults: GenerationDefaults,
        context_length: usize,
    ) -> Self {
        // Special tokens are left out of streamed text, except the thinking markers, which the
        // splitter must see (some tokenizers mark `<think>` special).
        let mut hidden_ids = tokenizer.special_ids();
        let thinking_markers = thinking
            .iter()
            .flat_map(|m| [m.start.as_str(), m.end.as_str()]);
        // The tool-call markers too: the answer's calls are parsed from the text.
        let call_markers = template
            .as_ref()
            .and_then(ChatTemplate::tool_syntax)
            .map_or(&[][..], |s| s.markers());
        for marker in thinking_markers.chain(call_markers.iter().copied()) {
            if let Some(id) = tokenizer.token_to_id(marker) {
                hidden_ids.remove(&id);
            }
        }
        TextModel {
            tokenizer,
            template,
            thinking,
            eos_ids,
            hidden_ids,
            defaults,
            context_length,
            constraints: OnceLock::new(),
        }
    }

    /// Compiles a request's output constraint for this model's vocabulary.
    pub fn constraint(&self, spec: &ConstraintSpec) -> Result<Constraint, ConstraintError> {
        self.constraints
            .get_or_init(|| ConstraintCompiler::new(&self.tokenizer, &self.eos_ids))
            .as_ref()
            .map_err(Clone::clone)?
            .compile(spec)
    }

    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    pub fn thinking(&self) -> Option<&ThinkingMarkers> {
        self.thinking.as_ref()
    }

    pub fn is_eos(&self, id: u32) -> bool {
        self.eos_ids.contains(&id)
    }

    /// End-of-sequence ids: the manifest's EOS token, its `stop_token_ids` and generation config's
    /// `eos_token_id`.
    pub fn eos_ids(&self) -> &HashSet<u32> {
        &self.eos_ids
    }

    /// Special-token ids that produce no streamed text.
    pub fn hidden_ids(&self) -> &HashSet<u32> {
        &self.hidden_ids
    }

    pub fn context_length(&self) -> usize {
        self.context_length
    }

    /// The package's default for the number of generated tokens (`max_new_tokens`).
    pub fn default_max_tokens(&self) -> Option<usize> {
        self.defaults.max_new_tokens.map(|n| n as usize)
    }

    /// The conversation rendered by the chat template, opening the assistant's turn; `tools`
    /// (the offered functions as the request listed them) go to the template as `tools`.
    pub fn render_chat(
        &self,
        messages: &[ChatMessage],
        tools: Option<&serde_json::Value>,
    ) -> Result<String, TextModelError> {
        let template = self
            .template
            .as_ref()
            .ok_or(TextModelError::NoChatTemplate)?;
        Ok(template.render_with_tools(messages, true, tools)?)
    }

    /// The call syntax of the chat template when it renders offered tools (CONTRACT.md, *Tools*).
    pub fn tool_support(&self) -> Option<ToolSyntax> {
        self.template.as_ref().and_then(ChatTemplate::tool_support)
    }

    /// Raw text gets the manifest's BOS rule.
    pub fn encode_raw(&self, text: &str) -> Result<Vec<u32>, TextModelError> {
        Ok(self.tokenizer.encode_raw_prompt(text)?)
    }

    /// A rendered template is encoded as it stands (it writes `bos_token` itself), as
    /// transformers' `apply_chat_template` does.
    pub fn encode_rendered(&self, text: &str) -> Result<Vec<u32>, TextModelError> {
        Ok(self.tokenizer.encode_plain(text)?)
    }

    /// The sampling parameters a request resolves to, validated.
    pub fn sampling_params(
        &self,
        overrides: &SamplingOverrides,
    ) -> Result<SamplingParams, TextModelError> {
        resolve_sampling(overrides, &self.defaults)
    }
}

fn resolve_sampling(
    o: &SamplingOverrides,
    d: &GenerationDefaults,
) -> Result<SamplingParams, TextModelError> {
    let do_sample = d
        .other
        .get("do_sample")
        .and_then(serde_json::Value::as_bool);
    let temperature = o.temperature.unwrap_or(match do_sample {
        Some(false) => 0.0,
        Some(true) => d.temperature.unwrap_or(1.0),
        None => d.temperature.unwrap_or(0.0),
    });
    let params = SamplingParams {
        temperature,
        top_k: o.top_k.or(d.top_k.map(|k| k as usize)).unwrap_or(0),
        top_p: o.top_p.or(d.top_p).unwrap_or(1.0),
        min_p: o.min_p.or(d.min_p).unwrap_or(0.0),
        repetition_penalty: o.repetition_penalty.or(d.repetition_penalty).unwrap_or(1.0),
    };
    params.validate()?;
    Ok(params)
}

/// `generation.eos_token_id` of generation_config.json: one id or a list.
fn eos_list(defaults: &GenerationDefaults) -> Result<Vec<u32>, TextModelError> {
    let Some(value) = defaults.other.get("eos_token_id") else {
        return Ok(Vec::new());
    };
    let as_id = |v: &serde_json::Value| v.as_u64().and_then(|n| u32::try_from(n).ok());
    let bad = || TextModelError::BadEosList(value.to_string());
    match value {
        serde_json::Value::Null => Ok(Vec::new()),
        serde_json::Value::Array(items) => items.iter().map(|v| as_id(v).ok_or_else(bad)).collect(),
        v => as_id(v).map(|id| vec![id]).ok_or_else(bad),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn defaults(v: serde_json::Value) -> GenerationDefaults {
        serde_json::from_value(v).expect("generation defaults")
    }

    #[test]
    fn sampling_defaults_follow_the_package_then_greedy() {
        let none = SamplingOverrides::default();
        assert_eq!(
            resolve_sampling(&none, &defaults(json!({}))).expect("ok"),
            SamplingParams::greedy()
        );
        let r1 = defaults(json!({"do_sample": true, "temperature": 0.6, "top_p": 0.95}));
        let p = resolve_sampling(&none, &r1).expect("ok");
        assert_eq!((p.temperature, p.top_p, p.top_k), (0.6, 0.95, 0));
        // do_sample false means greedy whatever the temperature says.
        let off = defaults(json!({"do_sample": false, "temperature": 0.6}));
        assert!(resolve_sampling(&none, &off).expect("ok").is_greedy());
        // The request wins over the package.
        let o = SamplingOverrides {
            temperature: Some(0.0),
            top_k: Some(5),
            ..none
        };
        let p = resolve_sampling(&o, &r1).expect("ok");
        assert!(p.is_greedy());
        assert_eq!(p.top_k, 5);
        // A bad package default is reported like a bad request.
        let bad = defaults(json!({"top_p": 0.0}));
        assert!(
            resolve_sampling(&none, &bad)
                .expect_err("bad")
                .to_string()
                .contains("top_p")
        );
    }

    #[test]
    fn eos_ids_from_generation_config() {
        assert_eq!(
            eos_list(&defaults(json!({"eos_token_id": 7}))).expect("ok"),
            vec![7]
        );
        assert_eq!(
            eos_list(&defaults(json!({"eos_token_id": [1, 2]}))).expect("ok"),
            vec![1, 2]
        );
        assert!(eos_list(&defaults(json!({}))).expect("ok").is_empty());
        let err = eos_list(&defaults(json!({"eos_token_id": "x"}))).expect_err("bad");
        assert!(err.to_string().contains("eos_token_id"), "{err}");
    }
}
