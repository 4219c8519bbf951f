//! Retrieval for one request: the request's retrieval plugins are
//! asked for documents for the user's query (the prompt, or a conversation's last user message),
//! and the passages go into the prompt under a template naming their sources, within a token
//! budget counted with the model's tokenizer: lowest-scored passages are dropped first, the
//! user's text is never cut. In a conversation the passages form a system message (or open the
//! first one); a raw prompt gets them in front. Retrieval fails open: a failing plugin gives an
//! alert and the request goes on without its documents.

use moed_plugins::{Alert, CallFailure, Document, RetrievalPlugin};

use crate::generate::Prompt;
use crate::text::template::ChatMessage;

/// Longest query searched ahead: the plugin host refuses longer ones (plugins/host state.rs).
const MAX_QUERY_AHEAD: usize = 8192;

/// The parameter that restricts retrieval to some data source labels (a JSON array of
/// strings), set from the request option `sources`. Retrieval plugins search only those of
/// their granted labels that it names (plugins/README.md).
pub const SOURCES_PARAM: &str = "retrieval.sources";

/// The user's words to search for: a raw prompt as it is, else the last user message.
pub fn query_of(prompt: &Prompt) -> Option<&str> {
    let q = match prompt {
        Prompt::Raw(text) => text.as_str(),
        Prompt::Chat(messages) => messages
            .iter()
            .rev()
            .find(|m| m.role == "user")
            .map(|m| m.content.as_str())?,
    };
    (!q.trim().is_empty()).then_some(q)
}

/// The parameters retrieval plugins get: the request's, with [`SOURCES_PARAM`] set from the
/// `sources` option when it names any.
pub fn retrieval_params(params: &[(String, String)], sources: &[String]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| sources.is_empty() || k != SOURCES_PARAM)
        .cloned()
        .collect();
    if !sources.is_empty() {
        out.push((
            SOURCES_PARAM.to_owned(),
            serde_json::Value::from(sources.to_vec()).to_string(),
        ));
    }
    out
}

/// Starts the data sources the plugins may search ahead of them (see
/// [`crate::knowledge::start_ahead`]), narrowed by the request's `sources`.
fn start_sources(
    plugins: &[RetrievalPlugin],
    query: &str,
    limit: usize,
    params: &[(String, String)],
) -> Vec<Box<dyn std::any::Any + Send>> {
    if query.len() > MAX_QUERY_AHEAD {
        return Vec::new();
    }
    let wanted: Option<Vec<String>> = params
        .iter()
        .find(|(k, _)| k == SOURCES_PARAM)
        .and_then(|(_, v)| serde_json::from_str(v).ok());
    crate::knowledge::start_ahead(plugins, query, limit, wanted.as_deref())
}

/// Asks every plugin for at most `limit` documents for `query`. Failures come back as alerts
/// (and no documents from that plugin); documents of all plugins together, best first, each
/// (source, id) once. A plugin refusing one of the request's parameters is the client's
/// mistake, not the plugin's: the `Err` is the request's error message naming the key.
pub fn retrieve(
    plugins: &[RetrievalPlugin],
    query: &str,
    limit: usize,
    params: &[(String, String)],
) -> Result<(Vec<Document>, Vec<Alert>), String> {
    let _started = start_sources(plugins, query, limit, params);
    let mut docs: Vec<Document> = Vec::new();
    let mut alerts = Vec::new();
    for p in plugins {
        let r = p.retrieve(query, limit, params);
        if let Some(CallFailure::Param { key, message }) = &r.failure {
            let plugin = p.plugin().name();
            return Err(crate::runner::param_refused(
                "retrieval",
                plugin,
                key,
                message,
            ));
        }
        alerts.extend(r.alerts);
        for d in r.documents {
            if !docs.iter().any(|x| x.source == d.source && x.id == d.id) {
                docs.push(d);
            }
        }
    }
    // Stable: equal scores keep the plugins' own order.
    docs.sort_by(|a, b| b.score.total_cmp(&a.score));
    Ok((docs, alerts))
}

/// The limits passages are put in under.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Most tokens the passages and their template may add (`retrieval.max_context_tokens`).
    pub passage_tokens: usize,
    /// Most tokens the whole prompt may have (the context, less room for the answer).
    pub prompt_tokens: usize,
}

/// Where the passages went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// A system message of their own, or the start of the first one.
    System,
    /// In front of the last user message (a chat template that refuses system messages).
    UserPrefix,
    /// In front of a raw prompt.
    Raw,
}

/// What assembly did.
#[derive(Debug, Clone, Default)]
pub struct Assembled {
    /// The passages in the prompt, best first (the last one cut when it alone was too long).
    pub used: Vec<Document>,
    /// Tokens the prompt has with them.
    pub prompt_tokens: usize,
    pub placement: Option<Placement>,
}

/// The text the passages go in as.
pub fn render_passages(docs: &[Document]) -> String {
    let mut out = String::from(
        "Answer with the help of these documents where they are relevant, and name the sources you used.\n",
    );
    for (i, d) in docs.iter().enumerate() {
        out.push_str(&format!(
            "\n[{}] source: {} (id {})\n{}\n",
            i + 1,
            d.source,
            d.id,
            d.text.trim()
        ));
    }
    out
}

fn with_passages(prompt: &Prompt, docs: &[Document], place: Placement) -> Prompt {
    let block = render_passages(docs);
    match (prompt, place) {
        (Prompt::Raw(text), _) => Prompt::Raw(format!("{block}\n{text}")),
        (Prompt::Chat(messages), Placement::UserPrefix) => {
            let mut m = messages.clone();
            if let Some(last) = m.iter_mut().rev().find(|m| m.role == "user") {
                last.content = format!("{block}\n{}", last.content);
            }
            Prompt::Chat(m)
        }
        (Prompt::Chat(messages), _) => {
            let mut m = messages.clone();
            match m.first_mut() {
                Some(first) if first.role == "system" => {
                    first.content = format!("{block}\n{}", first.content);
                }
                _ => m.insert(0, ChatMessage::new("system", block.trim_end())),
            }
            Prompt::Chat(m)
        }
    }
}

/// `doc` cut to its first `words` words, marked as cut.
fn cut(doc: &Document, words: usize) -> Document {
    let text: Vec<&str> = doc.text.split_whitespace().take(words).collect();
    Document {
        text: format!("{} …", text.join(" ")),
        ..doc.clone()
    }
}

/// Puts the best of `docs` (sorted best first) into `prompt` within `budget`, counting tokens
/// with `count` (the model's tokenizer over the rendered prompt). Keeps the most passages that
/// fit whole; when not even the best one fits, it goes in cut to the words that fit. The prompt
/// is left as it was when nothing fits. `count` failing on a conversation with a system message
/// (a template without that role) moves the passages in front of the last user message.
pub fn assemble<E>(
    prompt: &mut Prompt,
    docs: &[Document],
    budget: Budget,
    count: &mut dyn FnMut(&Prompt) -> Result<usize, E>,
) -> Result<Assembled, E> {
    let base = count(prompt)?;
    let limit = budget
        .prompt_tokens
        .min(base.saturating_add(budget.passage_tokens));
    let mut out = Assembled {
        prompt_tokens: base,
        ..Assembled::default()
    };
    if docs.is_empty() || base >= limit {
        return Ok(out);
    }
    let mut place = match prompt {
        Prompt::Raw(_) => Placement::Raw,
        Prompt::Chat(_) => Placement::System,
    };
    let mut fits = |set: &[Document], place: &mut Placement| -> Result<Option<usize>, E> {
        let p = with_passages(prompt, set, *place);
        let n = match count(&p) {
            Ok(n) => n,
            Err(e) if *place == Placement::System => {
                *place = Placement::UserPrefix;
                match count(&with_passages(prompt, set, *place)) {
                    Ok(n) => n,
                    Err(_) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        Ok((n <= limit).then_some(n))
    };
    // Drop the lowest-scored passages first.
    let mut chosen: Option<(Vec<Document>, usize)> = None;
    for k in (1..=docs.len()).rev() {
        if let Some(n) = fits(&docs[..k], &mut place)? {
            chosen = Some((docs[..k].to_vec(), n));
            break;
        }
    }
    if chosen.is_none() {
        // The best passage alone is too long: as many of its words as fit.
        let best = &docs[0];
        let (mut lo, mut hi) = (0usize, best.text.split_whitespace().count());
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if fits(&[cut(best, mid)], &mut place)?.is_some() {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        if lo > 0 {
            let one = vec![cut(best, lo)];
            if let Some(n) = fits(&one, &mut place)? {
                chosen = Some((one, n));
            }
        }
    }
    if let Some((used, n)) = chosen {
        *prompt = with_passages(prompt, &used, place);
        out.used = used;
        out.prompt_tokens = n;
        out.placement = Some(place);
    }
    Ok(out)
}

#[cfg(test)]
#[path = "retrieval_tests.rs"]
mod tests;
