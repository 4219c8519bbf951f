//! The one boundary for text that leaves moed: valid D-Bus strings (no NUL), bounded length with a
//! visible clip marker, one-line log text, short quotes of client values, terminal-safe display.
//!
//! The bus daemon drops a connection that sends a string containing NUL, and a message over its
//! size limit; both take the whole service off the bus. Every string moed sends — replies, error
//! messages, signals, properties — and every string it stores to send later passes [`text`] (or a
//! [`WireStr`] made by it), so neither can happen whatever a plugin, document or client supplies.

use std::borrow::Cow;
use std::fmt;
use std::ops::Deref;

use serde::{Serialize, Serializer};
use zbus::{Signature, Type};

// The string rules themselves know no D-Bus: they live in moed-wire, shared with the engine.
pub use moed_wire::{
    NUL_REPLACEMENT, is_function_name, limits, log_line, owned, quote, strings, terminal, text,
};

mod contract_types;
pub use contract_types::source_failures;

/// A value moed sends whose every string field passes [`text`] with that field's limit.
/// Implemented for each contract type that carries strings; the implementations destructure the
/// whole value, so a field added later without a limit does not compile.
pub trait ToWire: Sized {
    /// Passes each string field through `f`, with that field's byte limit.
    fn map_strings(self, f: &mut dyn FnMut(String, usize) -> String) -> Self;

    /// Every string field through [`owned`] with its limit: what the daemon sends.
    #[must_use]
    fn to_wire(self) -> Self {
        self.map_strings(&mut owned)
    }

    /// Every string field through [`terminal`]: what `moectl` prints of a value it received.
    #[must_use]
    fn for_terminal(self) -> Self {
        self.map_strings(&mut |s, _| match terminal(&s) {
            Cow::Borrowed(_) => s,
            Cow::Owned(escaped) => escaped,
        })
    }
}

impl ToWire for () {
    fn map_strings(self, _: &mut dyn FnMut(String, usize) -> String) -> Self {}
}

impl<T: ToWire> ToWire for Vec<T> {
    fn map_strings(self, f: &mut dyn FnMut(String, usize) -> String) -> Self {
        self.into_iter().map(|v| v.map_strings(f)).collect()
    }
}

impl<T: ToWire> ToWire for Option<T> {
    fn map_strings(self, f: &mut dyn FnMut(String, usize) -> String) -> Self {
        self.map(|v| v.map_strings(f))
    }
}

/// A string that has passed [`text`]: the only string type moed's signals take, so a signal
/// cannot carry an unchecked string. Serializes as a plain D-Bus `s`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WireStr(String);

impl WireStr {
    /// Checks and bounds `s` to `max_bytes` (see [`text`]).
    pub fn new(s: &str, max_bytes: usize) -> WireStr {
        WireStr(text(s, max_bytes).into_owned())
    }

    /// Like [`WireStr::new`], reusing the allocation when nothing changes.
    pub fn from_string(s: String, max_bytes: usize) -> WireStr {
        WireStr(owned(s, max_bytes))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl Deref for WireStr {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WireStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for WireStr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl Type for WireStr {
    const SIGNATURE: &'static Signature = &Signature::Str;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_str_serializes_as_s() {
        assert_eq!(WireStr::SIGNATURE, &Signature::Str);
        assert_eq!(WireStr::new("a\0", 10).as_str(), "a\u{FFFD}");
    }
}
