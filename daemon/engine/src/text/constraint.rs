//! Constrained decoding: a request's JSON schema, regular expression or "any JSON object" compiled
//! by llguidance into a per-request matcher that says which tokens may come next.
//!
//! The vocabulary's trie and the parser factory are built once per model (the first constrained
//! request pays for them); each request compiles its own grammar within [`limits`], so a hostile
//! schema costs bounded time and memory and ends as an error naming its option.

use std::collections::HashSet;

use llguidance::api::{ParserLimits, TopLevelGrammar};
use llguidance::{Matcher, ParserFactory};
use moed_wire::quote;
use serde_json::Value;

use super::regex_size::expanded_size;
use super::token_trie;
use super::tokenizer::TextTokenizer;

/// Most bytes of a `json_schema`.
pub const MAX_SCHEMA_BYTES: usize = 64 * 1024;
/// Most bytes of a `regex`.
pub const MAX_REGEX_BYTES: usize = 4 * 1024;
/// Deepest nesting of objects and arrays in a `json_schema` (serde_json itself stops at 128).
pub const MAX_SCHEMA_DEPTH: usize = 64;
/// Largest a regular expression (the `regex` option, a schema's `pattern`) may become with its
/// counted repetitions unrolled: llguidance's lexer works per unrolled position, so `a{100000}`
/// would cost a worker seconds per token.
pub const MAX_REGEX_SIZE: u64 = 10_000;
/// Most bytes of a compiler's message kept in an error.
const MAX_MESSAGE_BYTES: usize = 240;

/// What the output must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConstraintSpec {
    /// A JSON value valid under this JSON schema (its text).
    JsonSchema(String),
    /// Text matching this regular expression (Rust `regex` syntax), anchored at both ends.
    Regex(String),
    /// Any JSON object.
    JsonObject,
    /// A Lark grammar moed wrote itself (a required tool call, [`super::tools`]), refused under
    /// the name of the option it was made from.
    Grammar { option: &'static str, lark: String },
}

impl ConstraintSpec {
    /// The request option that carries it.
    pub fn option(&self) -> &'static str {
        match self {
            ConstraintSpec::JsonSchema(_) => "json_schema",
            ConstraintSpec::Regex(_) => "regex",
            ConstraintSpec::JsonObject => "json_object",
            ConstraintSpec::Grammar { option, .. } => option,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConstraintError {
    /// The schema or expression cannot be used (too large, NUL, malformed, unsatisfiable, over the
    /// compiler's limits): the client's input.
    #[error("option '{option}': {message}")]
    Invalid {
        option: &'static str,
        message: String,
    },
    /// This model's tokenizer cannot be constrained.
    #[error("constrained decoding is not available for this model: {0}")]
    Unsupported(String),
    /// No token may come next although the constraint is not complete (or its per-token work
    /// ran over its limits).
    #[error("constrained decoding failed at generated token {at}: {message}")]
    DeadEnd { at: usize, message: String },
}

/// The parser limits every request's grammar compiles and runs under. Lower than llguidance's
/// defaults where those allow hundreds of megabytes (lexer states) for one request.
pub fn limits() -> ParserLimits {
    ParserLimits {
        max_items_in_row: 2000,
        // ~20 ms of building the lexer's expressions.
        initial_lexer_fuel: 1_000_000,
        // ~15 ms per token mask.
        step_lexer_fuel: 200_000,
        step_max_items: 50_000,
        // ~1-2 kB each: at most ~100 MB for one request.
        max_lexer_states: 50_000,
        // A 64 KiB schema needs far fewer; this stops $ref expansion blowing up.
        max_grammar_size: 200_000,
        precompute_large_lexemes: true,
        // Errors must not carry the grammar or the generated tokens.
        verbose_errors: false,
    }
}

fn clip(message: &str) -> String {
    let first = message.lines().next().unwrap_or_default();
    let mut cut = first.len().min(MAX_MESSAGE_BYTES);
    while !first.is_char_boundary(cut) {
        cut -= 1;
    }
    if cut < first.len() {
        format!("{}…", &first[..cut])
    } else {
        first.to_string()
    }
}

/// Checks a schema's text before any compiling: size, NUL, JSON, depth; returns it parsed.
pub fn parse_schema(text: &str) -> Result<Value, ConstraintError> {
    let invalid = |message: String| ConstraintError::Invalid {
        option: "json_schema",
        message,
    };
    if text.len() > MAX_SCHEMA_BYTES {
        return Err(invalid(format!(
            "the schema is {} bytes; at most {MAX_SCHEMA_BYTES}",
            text.len()
        )));
    }
    if text.contains('\0') {
        return Err(invalid("the schema contains a NUL character".into()));
    }
    let schema: Value = serde_json::from_str(text).map_err(|e| {
        invalid(format!(
            "{} is not JSON: {}",
            quote(text),
            clip(&e.to_string())
        ))
    })?;
    if !(schema.is_object() || schema.is_boolean()) {
        return Err(invalid(format!(
            "{} is not a schema (an object or a boolean)",
            quote(text)
        )));
    }
    check_schema_value(&schema).map_err(invalid)?;
    Ok(schema)
}

/// Checks a parsed schema: depth, NUL, patterns (the reason, without the option).
pub fn check_schema_value(schema: &Value) -> Result<(), String> {
    if depth(schema) > MAX_SCHEMA_DEPTH {
        return Err(format!(
            "the schema nests deeper than {MAX_SCHEMA_DEPTH} levels"
        ));
    }
    if has_nul(schema) {
        return Err("the schema contains a NUL character (\\u0000)".into());
    }
    check_patterns(schema)
}

/// Bounds every `pattern` and `patternProperties` key. One that regex-syntax cannot read is left
/// to llguidance, whose JSON-schema dialect differs a little.
fn check_patterns(v: &Value) -> Result<(), String> {
    let check = |rx: &str| match expanded_size(rx) {
        Ok(n) if n > MAX_REGEX_SIZE => Err(format!(
            "pattern {} unrolls to {n} positions; at most {MAX_REGEX_SIZE}",
            quote(rx)
        )),
        _ => Ok(()),
    };
    match v {
        Value::Array(items) => items.iter().try_for_each(check_patterns),
        Value::Object(map) => {
            if let Some(Value::String(rx)) = map.get("pattern") {
                check(rx)?;
            }
            if let Some(Value::Object(props)) = map.get("patternProperties") {
                props.keys().try_for_each(|rx| check(rx))?;
            }
            map.values().try_for_each(check_patterns)
        }
        _ => Ok(()),
    }
}

fn depth(v: &Value) -> usize {
    match v {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// Checks a regular expression's text before compiling: size and NUL.
pub fn check_regex(text: &str) -> Result<(), ConstraintError> {
    let invalid = |message: String| ConstraintError::Invalid {
        option: "regex",
        message,
    };
    if text.len() > MAX_REGEX_BYTES {
        return Err(invalid(format!(
            "the expression is {} bytes; at most {MAX_REGEX_BYTES}",
            text.len()
        )));
    }
    if text.is_empty() {
        return Err(invalid("the expression is empty".into()));
    }
    if text.contains('\0') {
        return Err(invalid("the expression contains a NUL character".into()));
    }
    match expanded_size(text) {
        Ok(n) if n > MAX_REGEX_SIZE => Err(invalid(format!(
            "the expression unrolls to {n} positions; at most {MAX_REGEX_SIZE}"
        ))),
        Ok(_) => Ok(()),
        Err(e) => Err(invalid(format!(
            "{} is not a regular expression: {}",
            quote(text),
            clip(&e)
        ))),
    }
}

/// A model's compiler of constraints: its vocabulary's trie and llguidance's parser factory.
pub struct ConstraintCompiler {
    factory: ParserFactory,
}

impl std::fmt::Debug for ConstraintCompiler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConstraintCompiler").finish_non_exhaustive()
    }
}

impl ConstraintCompiler {
    /// Builds the trie of `tok`'s vocabulary (`eos`: the model's end-of-sequence ids).
    pub fn new(tok: &TextTokenizer, eos: &HashSet<u32>) -> Result<Self, ConstraintError> {
        let env = token_trie::token_env(tok, eos).map_err(ConstraintError::Unsupported)?;
        let mut factory = ParserFactory::new_simple(&env)
            .map_err(|e| ConstraintError::Unsupported(clip(&e.to_string())))?;
        factory.quiet();
        *factory.limits_mut() = limits();
        Ok(ConstraintCompiler { factory })
    }

    /// Compiles one request's constraint.
    pub fn compile(&self, spec: &ConstraintSpec) -> Result<Constraint, ConstraintError> {
        let grammar = match spec {
            ConstraintSpec::JsonSchema(text) => {
                TopLevelGrammar::from_json_schema(compact(parse_schema(text)?))
            }
            ConstraintSpec::Regex(text) => {
                check_regex(text)?;
                TopLevelGrammar::from_regex(text)
            }
            ConstraintSpec::JsonObject => {
                TopLevelGrammar::from_json_schema(compact(serde_json::json!({"type": "object"})))
            }
            ConstraintSpec::Grammar { lark, .. } => TopLevelGrammar::from_lark(lark.clone()),
        };
        let parser = self
            .factory
            .create_parser(grammar)
            .map_err(|e| ConstraintError::Invalid {
                option: spec.option(),
                message: clip(&e.to_string()),
            })?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(ConstraintError::Invalid {
                option: spec.option(),
                message: clip(&e),
            });
        }
        Ok(Constraint {
            matcher,
            vocab: self.factory.tok_env().tok_trie().vocab_size(),
            committed: 0,
        })
    }
}

/// JSON without free whitespace: a model cannot spend its tokens on blanks between values (a
/// schema's own `x-guidance` settings win).
fn compact(mut schema: Value) -> Value {
    if let Value::Object(map) = &mut schema
        && !map.contains_key("x-guidance")
    {
        map.insert(
            "x-guidance".into(),
            serde_json::json!({"whitespace_flexible": false}),
        );
    }
    schema
}

/// One request's constraint while it generates.
pub struct Constraint {
    matcher: Matcher,
    vocab: usize,
    committed: usize,
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Constraint")
            .field("committed", &self.committed)
            .finish_non_exhaustive()
    }
}

impl Constraint {
    fn dead_end(&self, message: String) -> ConstraintError {
        ConstraintError::DeadEnd {
            at: self.committed,
            message: clip(&message),
        }
    }

    /// Sets every logit the constraint forbids to -inf (ids past the vocabulary too). End of
    /// sequence stays allowed only where the constraint accepts the text so far.
    pub fn mask(&mut self, logits: &mut [f32]) -> Result<(), ConstraintError> {
        let allowed = self
            .matcher
            .compute_mask()
            .map_err(|e| self.dead_end(e.to_string()))?;
        let mut any = false;
        for (id, logit) in logits.iter_mut().enumerate() {
            if id < self.vocab && allowed.is_allowed(id as u32) {
                any = true;
            } else {
                *logit = f32::NEG_INFINITY;
            }
        }
        if any {
            Ok(())
        } else {
            Err(self.dead_end("no token is allowed next".into()))
        }
    }

    /// Advances past the chosen token.
    pub fn commit(&mut self, token: u32) -> Result<(), ConstraintError> {
        self.matcher
            .consume_token(token)
            .map_err(|e| self.dead_end(e.to_string()))?;
        self.committed += 1;
        Ok(())
    }

    /// Whether the text is complete: nothing but end of sequence may follow.
    pub fn is_complete(&self) -> bool {
        self.matcher.is_stopped() && !self.matcher.is_error()
    }
}

#[cfg(test)]
#[path = "constraint_tests.rs"]
mod tests;
