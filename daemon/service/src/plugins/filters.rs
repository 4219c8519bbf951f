//! The filters of one request: input filters see the prompt before tokenization (each message of
//! a conversation that a person wrote: system and user turns), output filters see the streamed
//! answer and thinking through a chain, so that text reaches the client only after every filter
//! released it. A rejection or a failed filter (filters fail closed) ends the request.

use std::sync::atomic::{AtomicBool, Ordering};

use moed_plugins::{Alert, FilterError, FilterPlugin, OutputFilter};

use crate::generate::{Event, Prompt};

/// The filter plugins a request goes through, in order, with the request's parameters.
pub struct RequestFilters {
    filters: Vec<FilterPlugin>,
    params: Vec<(String, String)>,
}

impl RequestFilters {
    pub fn new(filters: Vec<FilterPlugin>, params: Vec<(String, String)>) -> RequestFilters {
        RequestFilters { filters, params }
    }

    /// Runs the input filters over the prompt, rewriting it where one redacts. Returns the alerts.
    pub fn filter_prompt(&self, prompt: &mut Prompt) -> Result<Vec<Alert>, FilterError> {
        let mut alerts = Vec::new();
        let mut apply = |text: &mut String| -> Result<(), FilterError> {
            for f in &self.filters {
                let out = f.check_input(text, &self.params)?;
                alerts.extend(out.alerts);
                if let Some(redacted) = out.redacted {
                    *text = redacted;
                }
            }
            Ok(())
        };
        match prompt {
            Prompt::Raw(text) => apply(text)?,
            Prompt::Chat(messages) => {
                for m in messages
                    .iter_mut()
                    .filter(|m| m.role == "user" || m.role == "system")
                {
                    apply(&mut m.content)?;
                }
            }
        }
        Ok(alerts)
    }

    /// A chain of output filters for one stream (answer or thinking).
    pub fn output(&self) -> OutputChain {
        OutputChain {
            stages: self
                .filters
                .iter()
                .map(|f| f.output(&self.params))
                .collect(),
            released: String::new(),
            alerts: Vec::new(),
        }
    }
}

/// Output filters applied in order: what one releases is the next one's input.
pub struct OutputChain {
    stages: Vec<OutputFilter>,
    released: String,
    alerts: Vec<Alert>,
}

impl OutputChain {
    /// New text from the model; returns what may be shown now.
    pub fn push(&mut self, text: &str) -> Result<String, FilterError> {
        let mut text = text.to_owned();
        for stage in &mut self.stages {
            let r = stage.push(&text)?;
            self.alerts.extend(r.alerts);
            text = r.text;
        }
        self.released.push_str(&text);
        Ok(text)
    }

    /// Generation ended: returns the rest.
    pub fn finish(&mut self) -> Result<String, FilterError> {
        let mut carried = String::new();
        for stage in &mut self.stages {
            let mut r = stage.push(&carried)?;
            self.alerts.extend(std::mem::take(&mut r.alerts));
            let mut f = stage.finish()?;
            self.alerts.extend(std::mem::take(&mut f.alerts));
            carried = r.text + &f.text;
        }
        self.released.push_str(&carried);
        Ok(carried)
    }

    /// Everything released so far: what the client saw (use it in place of the unfiltered text
    /// of the generation's outcome).
    pub fn released(&self) -> &str {
        &self.released
    }

    pub fn take_alerts(&mut self) -> Vec<Alert> {
        std::mem::take(&mut self.alerts)
    }
}

/// Filters a generation's events: answer and thinking text through their chains before `inner`
/// sees them. On a rejection or failure it sets `cancel` (generation stops at the next token),
/// forwards nothing more, and keeps the error for [`FilteredEvents::finish`].
pub struct FilteredEvents<'a> {
    pub answer: OutputChain,
    pub thinking: OutputChain,
    cancel: &'a AtomicBool,
    error: Option<FilterError>,
}

impl<'a> FilteredEvents<'a> {
    pub fn new(filters: &RequestFilters, cancel: &'a AtomicBool) -> FilteredEvents<'a> {
        FilteredEvents {
            answer: filters.output(),
            thinking: filters.output(),
            cancel,
            error: None,
        }
    }

    /// Handles one event of `generate`, forwarding what the filters release to `inner`.
    pub fn on_event(&mut self, event: Event, inner: &mut dyn FnMut(Event)) {
        if self.error.is_some() {
            return;
        }
        let r = match event {
            Event::Text(t) => self
                .answer
                .push(&t)
                .map(|t| (!t.is_empty()).then_some(Event::Text(t))),
            Event::Thinking(t) => self
                .thinking
                .push(&t)
                .map(|t| (!t.is_empty()).then_some(Event::Thinking(t))),
            Event::Finished(reason) => {
                let thinking = self.thinking.finish();
                let answer = self.answer.finish();
                match (thinking, answer) {
                    (Ok(th), Ok(an)) => {
                        if !th.is_empty() {
                            inner(Event::Thinking(th));
                        }
                        if !an.is_empty() {
                            inner(Event::Text(an));
                        }
                        Ok(Some(Event::Finished(reason)))
                    }
                    (Err(e), _) | (_, Err(e)) => Err(e),
                }
            }
        };
        match r {
            Ok(Some(e)) => inner(e),
            Ok(None) => {}
            Err(e) => {
                self.cancel.store(true, Ordering::Relaxed);
                self.error = Some(e);
            }
        }
    }

    /// The filter error that ended the request, if any.
    pub fn finish(self) -> Result<(), FilterError> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
