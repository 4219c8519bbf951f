//! Retrieval plugins: given the query, documents (id, source, text, score) for the prompt.
//! Failure policy: fail open; a failed call yields no documents and an alert saying why, and the
//! answer is generated without them.

use moed_wire::{self as wire, limits};

use crate::bounds;
use crate::error::CallFailure;
use crate::events::{Alert, Severity};
use crate::loaded::{Bindings, Instance, classify};
use crate::manifest::Kind;
use crate::plugin::Plugin;
use crate::sources::Document;

/// Most documents one call may return.
pub const MAX_DOCUMENTS: usize = 64;
/// Most bytes of document text one call may return.
pub const MAX_TEXT: usize = 1 << 20;

/// Documents, alerts, and the failure if the plugin failed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Retrieved {
    pub documents: Vec<Document>,
    pub alerts: Vec<Alert>,
    pub failure: Option<CallFailure>,
}

#[derive(Clone)]
pub struct RetrievalPlugin {
    plugin: Plugin,
}

impl RetrievalPlugin {
    pub fn new(plugin: &Plugin) -> Option<RetrievalPlugin> {
        (plugin.kind() == Kind::Retrieval).then(|| RetrievalPlugin {
            plugin: plugin.clone(),
        })
    }

    pub fn plugin(&self) -> &Plugin {
        &self.plugin
    }

    /// At most `limit` documents for `query`; never fails the request.
    pub fn retrieve(&self, query: &str, limit: usize, params: &[(String, String)]) -> Retrieved {
        if !self.plugin.is_enabled() {
            return Retrieved::default();
        }
        let limit = limit.min(MAX_DOCUMENTS);
        let rt = self.plugin.runtime();
        let loaded = self.plugin.current();
        let time = rt.options.retrieval.deadline(limit);
        let params = params.to_vec();
        let (result, mut alerts) = loaded.call(rt, time, |inst: &mut Instance| {
            let Instance {
                store, bindings, ..
            } = inst;
            let Bindings::Retrieval(r) = bindings else {
                return Err(CallFailure::Start(
                    "the instance is not a retrieval plugin".into(),
                ));
            };
            match r
                .moed_plugin_retriever()
                .call_retrieve(&mut *store, query, limit as u32, &params)
            {
                Ok(Ok(docs)) => check(&docs, limit).map(|()| docs),
                Ok(Err(m)) => Err(crate::params::plugin_error(m, &params)),
                Err(e) => Err(classify(store.data_mut(), e, time)),
            }
        });
        match result {
            Ok(docs) => Retrieved {
                documents: docs
                    .into_iter()
                    // Ids and sources are listed to clients (`sources`), the text goes into the
                    // prompt: each bounded here, whatever the plugin returned.
                    .map(|d| Document {
                        id: bounds::line(&d.id, limits::DOCUMENT_ID),
                        source: bounds::line(&d.source, limits::DOCUMENT_SOURCE),
                        text: bounds::text(d.text, limits::DOCUMENT_TEXT),
                        score: d.score,
                    })
                    .collect(),
                alerts,
                failure: None,
            },
            Err(failure) => {
                alerts.push(Alert::new(
                    self.plugin.name(),
                    Severity::Warning,
                    "retrieval.failed",
                    &format!("retrieval failed, the answer is given without documents: {failure}"),
                ));
                Retrieved {
                    documents: Vec::new(),
                    alerts,
                    failure: Some(failure),
                }
            }
        }
    }
}

fn check(docs: &[crate::bindings::v0_1::types::Document], limit: usize) -> Result<(), CallFailure> {
    let bad = |m: String| Err(CallFailure::BadAnswer(m));
    if docs.len() > limit {
        return bad(format!("{} documents for a limit of {limit}", docs.len()));
    }
    let text: usize = docs
        .iter()
        .map(|d| d.text.len() + d.id.len() + d.source.len())
        .sum();
    if text > MAX_TEXT {
        return bad(format!("{text} bytes of documents (at most {MAX_TEXT})"));
    }
    for d in docs {
        if d.id.is_empty() || d.source.is_empty() {
            return bad("a document without id or source".into());
        }
        if !d.score.is_finite() {
            return bad(format!(
                "document {} has score {}",
                wire::quote(&d.id),
                d.score
            ));
        }
    }
    Ok(())
}
