//! `[retrieval]`: how retrieved passages go into a prompt (the budget in tokens, documents asked
//! of each retrieval plugin); its raw form, checks and rendering together.

use serde::{Deserialize, Serialize};

use super::ConfigError;
use super::checks::int_in;

/// Passage budget when the configuration names none: half the context of a 512-token model.
pub const DEFAULT_MAX_CONTEXT_TOKENS: u32 = 192;
/// Documents asked of each retrieval plugin when the configuration names none.
pub const DEFAULT_MAX_DOCUMENTS: u32 = 4;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetrievalConfig {
    /// `retrieval.max_context_tokens`: most tokens (the model's tokenizer) that retrieved
    /// passages with their template add to a prompt; lowest-scored passages are dropped first.
    pub max_context_tokens: u32,
    /// `retrieval.max_documents`: documents asked of each retrieval plugin per request.
    pub max_documents: u32,
}

impl Default for RetrievalConfig {
    fn default() -> Self {
        RetrievalConfig {
            max_context_tokens: DEFAULT_MAX_CONTEXT_TOKENS,
            max_documents: DEFAULT_MAX_DOCUMENTS,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawRetrieval {
    max_context_tokens: Option<i64>,
    max_documents: Option<i64>,
}

fn int(key: &str, v: Option<i64>, default: u32, min: u32, max: u32) -> Result<u32, ConfigError> {
    int_in(key, v, default.into(), min.into(), max.into()).map(|v| v as u32)
}

pub(super) fn validate(raw: RawRetrieval) -> Result<RetrievalConfig, ConfigError> {
    Ok(RetrievalConfig {
        max_context_tokens: int(
            "retrieval.max_context_tokens",
            raw.max_context_tokens,
            DEFAULT_MAX_CONTEXT_TOKENS,
            16,
            1 << 20,
        )?,
        max_documents: int(
            "retrieval.max_documents",
            raw.max_documents,
            DEFAULT_MAX_DOCUMENTS,
            1,
            64,
        )?,
    })
}

pub(super) fn render(c: &RetrievalConfig, out: &mut String) {
    out.push_str("\n[retrieval]\n");
    out.push_str(&format!("max_context_tokens = {}\n", c.max_context_tokens));
    out.push_str(&format!("max_documents = {}\n", c.max_documents));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_ranges_and_key_names() {
        let c = validate(RawRetrieval::default()).expect("defaults");
        assert_eq!(c, RetrievalConfig::default());
        let c = validate(RawRetrieval {
            max_context_tokens: Some(64),
            max_documents: Some(2),
        })
        .expect("valid");
        assert_eq!((c.max_context_tokens, c.max_documents), (64, 2));
        let e = validate(RawRetrieval {
            max_context_tokens: Some(0),
            max_documents: None,
        })
        .expect_err("too small")
        .to_string();
        assert!(e.contains("retrieval.max_context_tokens"), "{e}");
        let e = validate(RawRetrieval {
            max_context_tokens: None,
            max_documents: Some(65),
        })
        .expect_err("too many")
        .to_string();
        assert!(e.contains("retrieval.max_documents"), "{e}");
        let mut out = String::new();
        render(&c, &mut out);
        assert!(out.contains("max_context_tokens = 64"), "{out}");
    }
}
