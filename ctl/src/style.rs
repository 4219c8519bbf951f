//! Terminal output: colour only on a terminal and never with NO_COLOR (or TERM=dumb), and writes
//! that end quietly when the reader of stdout goes away.

use std::io::{IsTerminal, Write};

use crate::error::CtlError;

/// Whether one stream gets ANSI styling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    pub colour: bool,
}

/// NO_COLOR (any non-empty value, <https://no-color.org>) and TERM=dumb turn colour off.
pub fn colour_allowed(is_terminal: bool) -> bool {
    let no_colour = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let dumb = std::env::var_os("TERM").is_some_and(|t| t == "dumb");
    is_terminal && !no_colour && !dumb
}

impl Style {
    pub fn stdout() -> Style {
        Style {
            colour: colour_allowed(std::io::stdout().is_terminal()),
        }
    }

    pub fn stderr() -> Style {
        Style {
            colour: colour_allowed(std::io::stderr().is_terminal()),
        }
    }

    fn paint(&self, sgr: &str, text: &str) -> String {
        if self.colour {
            format!("\x1b[{sgr}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    pub fn bold(&self, text: &str) -> String {
        self.paint("1", text)
    }
    pub fn dim(&self, text: &str) -> String {
        self.paint("2", text)
    }
    pub fn red(&self, text: &str) -> String {
        self.paint("31", text)
    }
    pub fn green(&self, text: &str) -> String {
        self.paint("32", text)
    }
    pub fn yellow(&self, text: &str) -> String {
        self.paint("33", text)
    }
    pub fn cyan(&self, text: &str) -> String {
        self.paint("36", text)
    }
    /// `text` on a 256-colour palette background.
    pub fn background(&self, palette: u8, text: &str) -> String {
        self.paint(&format!("48;5;{palette}"), text)
    }
}

/// Writes to stdout and flushes (streamed text must show as it comes).
pub fn out(text: &str) -> Result<(), CtlError> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|e| CtlError::io("writing to stdout", e))
}

pub fn outln(text: &str) -> Result<(), CtlError> {
    out(&format!("{text}\n"))
}

/// Diagnostics and streamed thinking go to stderr; a failure to write there is not worth an error.
pub fn err(text: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = stderr.write_all(text.as_bytes());
    let _ = stderr.flush();
}

/// One JSON document on its own line.
pub fn out_json(value: &serde_json::Value) -> Result<(), CtlError> {
    outln(&value.to_string())
}

/// Indented JSON for commands that print one document.
pub fn out_json_pretty(value: &serde_json::Value) -> Result<(), CtlError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| CtlError::Failed(format!("encoding JSON: {e}")))?;
    outln(&text)
}
