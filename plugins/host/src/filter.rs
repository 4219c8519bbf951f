//! Filter plugins: input filters see the prompt before tokenization (allow, redact, reject);
//! output filters see the streamed text through a hold-back window the plugin sets, so that a
//! secret split across tokens is seen whole. Failure policy: fail closed; a failed filter call
//! rejects the request with a clear error. A filter the administrator switched off passes text
//! through unchanged.

use moed_wire::limits;

use crate::bindings::v0_1::filtering;
use crate::bounds;
use crate::error::CallFailure;
use crate::events::Alert;
use crate::loaded::{Bindings, Instance, classify};
use crate::manifest::Kind;
use crate::plugin::Plugin;

/// Most bytes an output filter may hold back.
pub const MAX_HOLD: usize = 16 * 1024;

/// Why a filter stopped a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("plugin '{plugin}' rejected the {stage}: {reason}")]
    Rejected {
        plugin: String,
        stage: &'static str,
        reason: String,
    },
    #[error(
        "plugin '{plugin}' failed on the {stage}, so the request is refused (filters fail closed): {failure}"
    )]
    Failed {
        plugin: String,
        stage: &'static str,
        failure: CallFailure,
    },
}

/// What an input filter decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputOutcome {
    /// The text to use instead of the prompt, when the filter redacted it.
    pub redacted: Option<String>,
    pub alerts: Vec<Alert>,
}

/// Text an output filter released.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Released {
    pub text: String,
    pub alerts: Vec<Alert>,
}

/// A filter plugin.
#[derive(Clone)]
pub struct FilterPlugin {
    plugin: Plugin,
}

impl FilterPlugin {
    pub fn new(plugin: &Plugin) -> Option<FilterPlugin> {
        (plugin.kind() == Kind::Filter).then(|| FilterPlugin {
            plugin: plugin.clone(),
        })
    }

    pub fn plugin(&self) -> &Plugin {
        &self.plugin
    }

    fn failed(&self, stage: &'static str, failure: CallFailure) -> FilterError {
        FilterError::Failed {
            plugin: self.plugin.name().to_owned(),
            stage,
            failure,
        }
    }

    /// Runs the input filter on a prompt.
    pub fn check_input(
        &self,
        prompt: &str,
        params: &[(String, String)],
    ) -> Result<InputOutcome, FilterError> {
        if !self.plugin.is_enabled() {
            return Ok(InputOutcome {
                redacted: None,
                alerts: Vec::new(),
            });
        }
        let rt = self.plugin.runtime();
        let loaded = self.plugin.current();
        let time = rt.options.filter.deadline(prompt.len() / 1024);
        let params = params.to_vec();
        let (result, alerts) = loaded.call(rt, time, |inst: &mut Instance| {
            let Instance {
                store, bindings, ..
            } = inst;
            let Bindings::Filter(f) = bindings else {
                return Err(CallFailure::Start("the instance is not a filter".into()));
            };
            match f
                .moed_plugin_filtering()
                .call_filter_input(&mut *store, prompt, &params)
            {
                Ok(Ok(v)) => {
                    if let filtering::InputVerdict::Redact(text) = &v {
                        check_size("redacted prompt", text.len(), prompt.len())?;
                    }
                    Ok(v)
                }
                Ok(Err(m)) => Err(crate::params::plugin_error(m, params.as_slice())),
                Err(e) => Err(classify(store.data_mut(), e, time)),
            }
        });
        match result.map_err(|f| self.failed("prompt", f))? {
            filtering::InputVerdict::Allow => Ok(InputOutcome {
                redacted: None,
                alerts,
            }),
            // The size was checked against the prompt's; only NULs can still change.
            filtering::InputVerdict::Redact(text) => Ok(InputOutcome {
                redacted: Some(bounds::text(text, usize::MAX)),
                alerts,
            }),
            filtering::InputVerdict::Reject(reason) => Err(FilterError::Rejected {
                plugin: self.plugin.name().to_owned(),
                stage: "prompt",
                reason: bounds::line(&reason, limits::ALERT_MESSAGE),
            }),
        }
    }

    /// A filter for one response's stream.
    pub fn output(&self, params: &[(String, String)]) -> OutputFilter {
        OutputFilter {
            filter: self.clone(),
            params: params.to_vec(),
            pending: String::new(),
        }
    }
}

/// An answer may grow by redaction markers, not without bound.
fn check_size(what: &str, len: usize, input: usize) -> Result<(), CallFailure> {
    let max = input.saturating_mul(4).saturating_add(4096);
    if len > max {
        return Err(CallFailure::BadAnswer(format!(
            "the {what} is {len} bytes for {input} bytes of input (at most {max})"
        )));
    }
    Ok(())
}

/// One response's output filter: feed it text as it is produced, release what it returns.
pub struct OutputFilter {
    filter: FilterPlugin,
    params: Vec<(String, String)>,
    pending: String,
}

impl OutputFilter {
    /// Text held back so far (not yet shown to the client).
    pub fn held(&self) -> &str {
        &self.pending
    }

    /// New text from the model; returns what may be shown now.
    pub fn push(&mut self, text: &str) -> Result<Released, FilterError> {
        self.pending.push_str(text);
        self.step(false)
    }

    /// Generation ended: returns the rest.
    pub fn finish(&mut self) -> Result<Released, FilterError> {
        self.step(true)
    }

    fn step(&mut self, last: bool) -> Result<Released, FilterError> {
        let f = &self.filter;
        if !f.plugin.is_enabled() {
            return Ok(Released {
                text: std::mem::take(&mut self.pending),
                alerts: Vec::new(),
            });
        }
        if self.pending.is_empty() && !last {
            return Ok(Released::default());
        }
        let rt = f.plugin.runtime();
        let loaded = f.plugin.current();
        let time = rt.options.filter.deadline(self.pending.len() / 1024);
        let pending = &self.pending;
        let params = &self.params;
        let (result, alerts) = loaded.call(rt, time, |inst: &mut Instance| {
            let Instance {
                store, bindings, ..
            } = inst;
            let Bindings::Filter(fb) = bindings else {
                return Err(CallFailure::Start("the instance is not a filter".into()));
            };
            match fb
                .moed_plugin_filtering()
                .call_filter_output(&mut *store, pending, last, params)
            {
                Ok(Ok(filtering::OutputVerdict::Pass(step))) => {
                    check_step(pending, last, &step)?;
                    Ok(filtering::OutputVerdict::Pass(step))
                }
                Ok(Ok(v)) => Ok(v),
                Ok(Err(m)) => Err(crate::params::plugin_error(m, params)),
                Err(e) => Err(classify(store.data_mut(), e, time)),
            }
        });
        match result.map_err(|e| f.failed("response", e))? {
            filtering::OutputVerdict::Pass(step) => {
                let keep = self
                    .pending
                    .split_off(self.pending.len() - step.hold as usize);
                self.pending = keep;
                Ok(Released {
                    text: bounds::text(step.emit, usize::MAX),
                    alerts,
                })
            }
            filtering::OutputVerdict::Reject(reason) => Err(FilterError::Rejected {
                plugin: f.plugin.name().to_owned(),
                stage: "response",
                reason: bounds::line(&reason, limits::ALERT_MESSAGE),
            }),
        }
    }
}

fn check_step(pending: &str, last: bool, step: &filtering::OutputStep) -> Result<(), CallFailure> {
    let hold = step.hold as usize;
    let bad = |m: String| Err(CallFailure::BadAnswer(m));
    if hold > pending.len() {
        return bad(format!("it holds back {hold} bytes of {}", pending.len()));
    }
    if last && hold != 0 {
        return bad(format!(
            "it holds back {hold} bytes after the end of the response"
        ));
    }
    if hold > MAX_HOLD {
        return bad(format!("it holds back {hold} bytes (at most {MAX_HOLD})"));
    }
    if !pending.is_char_boundary(pending.len() - hold) {
        return bad(format!(
            "it holds back {hold} bytes, which splits a character"
        ));
    }
    check_size("released text", step.emit.len(), pending.len() - hold)
}
