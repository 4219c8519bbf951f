//! The one boundary for text that leaves moed: valid D-Bus strings (no NUL), bounded length with a
//! visible clip marker, one-line log text, short quotes of client values, terminal-safe display.
//!
//! The bus daemon drops a connection that sends a string containing NUL, and a message over its
//! size limit; both take the whole service off the bus. Every string moed sends — replies, error
//! messages, signals, properties — and every string it stores to send later passes [`text`] (or a
//! `WireStr` (moed-dbus) made by it), so neither can happen whatever a plugin, document or client supplies.

//!
//! A crate of its own, without D-Bus, so the engine and the service bound their strings with the
//! same rules as the bus adapter.

use std::borrow::Cow;

/// A tool's function name as OpenAI allows it, `[A-Za-z0-9_.-]{1,64}`: one rule for the engine,
/// which checks a request's `tools`, and the bridges, which refuse a bad name by its field.
pub fn is_function_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= limits::FUNCTION_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// What replaces a NUL byte: U+FFFD REPLACEMENT CHARACTER.
pub const NUL_REPLACEMENT: char = '\u{FFFD}';

/// The byte limits of the strings moed sends, each documented in CONTRACT.md ("Limits").
pub mod limits {
    /// An error message of any `org.moed.Moed1.Error.*` reply.
    pub const ERROR_MESSAGE: usize = 4 * 1024;
    /// A quoted client value inside an error message.
    pub const QUOTE: usize = 64;
    /// A name: plugin, model, data source, alert severity, finish reason, request id.
    pub const NAME: usize = 256;
    /// An alert code.
    pub const ALERT_CODE: usize = 128;
    /// A tool's function name (OpenAI's limit; CONTRACT.md, *Tools*).
    pub const FUNCTION_NAME: usize = 64;
    /// Functions in one request's `tools`.
    pub const TOOLS: usize = 128;
    /// Calls in one answer or one turn's `tool_calls`.
    pub const TOOL_CALLS: usize = 128;
    /// An alert message, a plugin's failure message or reject reason.
    pub const ALERT_MESSAGE: usize = 2 * 1024;
    /// A document id (retrieval, `Knowledge.Search`, the audit log).
    pub const DOCUMENT_ID: usize = 1024;
    /// A document title.
    pub const DOCUMENT_TITLE: usize = 1024;
    /// The text of one document or passage returned on the bus.
    pub const DOCUMENT_TEXT: usize = 64 * 1024;
    /// Generated or scored text (a `Token` signal, a reply's text); far above what a model emits per
    /// call, it only guarantees the message stays under the bus's limit.
    pub const GENERATED_TEXT: usize = 8 * 1024 * 1024;
    /// One line a plugin writes to stderr, as logged.
    pub const LOG_LINE: usize = 1024;
    /// A file system path (a model or plugin directory, a document's name as added).
    pub const PATH: usize = 4096;
    /// The text of one token of a `Score` reply.
    pub const TOKEN: usize = 1024;
    /// A plugin's description from its manifest.
    pub const DESCRIPTION: usize = 2 * 1024;
    /// A plugin's configuration or configuration schema, as JSON.
    pub const JSON: usize = 64 * 1024;
    /// What a plugin's own text (its error, a trap message, its stderr tail) adds to one failure
    /// message: room is left for the host's words around it within [`ALERT_MESSAGE`].
    pub const PLUGIN_DETAIL: usize = 1024;
    /// Where a retrieved document came from (a file name, a table row), as a plugin names it.
    pub const DOCUMENT_SOURCE: usize = 1024;
}

/// Each string of a list through [`owned`] with `max_bytes`.
pub fn strings(list: Vec<String>, max_bytes: usize) -> Vec<String> {
    list.into_iter().map(|s| owned(s, max_bytes)).collect()
}

/// Makes `s` a valid D-Bus string of at most `max_bytes` bytes: each NUL becomes U+FFFD, and a
/// longer string is cut at a character boundary and ends with a marker saying how many bytes were
/// clipped (`…[+N bytes]`). Borrows when nothing changes.
pub fn text(s: &str, max_bytes: usize) -> Cow<'_, str> {
    let nuls = s.bytes().filter(|&b| b == 0).count();
    if nuls == 0 && s.len() <= max_bytes {
        return Cow::Borrowed(s);
    }
    // Each NUL (1 byte) grows to 3 bytes; measure as replaced so the limit is exact, but never
    // build the whole replaced string: a 40 MiB string of NULs would need 120 MiB.
    let grown = s.len() + 2 * nuls;
    if grown <= max_bytes {
        return Cow::Owned(s.replace('\0', "\u{FFFD}"));
    }
    // The marker's length depends on the clipped count; reserve for the widest count.
    let budget = max_bytes.saturating_sub(marker(grown).len());
    let mut out = String::with_capacity(max_bytes);
    for c in s.chars() {
        let c = if c == '\0' { NUL_REPLACEMENT } else { c };
        if out.len() + c.len_utf8() > budget {
            break;
        }
        out.push(c);
    }
    let m = marker(grown - out.len());
    if out.len() + m.len() <= max_bytes {
        out.push_str(&m);
    }
    Cow::Owned(out)
}

/// Owned form of [`text`].
pub fn owned(s: String, max_bytes: usize) -> String {
    match text(&s, max_bytes) {
        Cow::Borrowed(_) => s,
        Cow::Owned(o) => o,
    }
}

fn marker(clipped: usize) -> String {
    format!("…[+{clipped} bytes]")
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    if i >= s.len() {
        return s.len();
    }
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// One line for a log: [`text`], with newlines, carriage returns and other control characters
/// escaped (`\n`, `\u{1b}`), so a plugin's or client's text cannot forge a second log line or
/// drive the terminal that shows the log.
pub fn log_line(s: &str, max_bytes: usize) -> String {
    escape_controls(&text(s, max_bytes))
}

/// A short quote of a client-supplied value for an error message: at most [`limits::QUOTE`] bytes,
/// controls escaped, in single quotes, with the value's total length when it was cut. Never the
/// whole value: an error that echoes 20 MB would itself exceed the bus's message limit.
pub fn quote(s: &str) -> String {
    let cut = floor_char_boundary(s, limits::QUOTE);
    if cut == s.len() {
        format!("'{}'", escape_controls(s))
    } else {
        format!("'{}…' ({} bytes)", escape_controls(&s[..cut]), s.len())
    }
}

/// Text for a terminal: every control character but the newline and tab escaped, so text that
/// came from a plugin, document or model metadata cannot move the cursor, recolour or retitle the
/// terminal.
pub fn terminal(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() && c != '\n' && c != '\t' {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

fn escape_controls(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    out
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_text_is_borrowed() {
        assert!(matches!(text("hello", 10), Cow::Borrowed("hello")));
    }

    #[test]
    fn nul_becomes_replacement_character() {
        assert_eq!(text("a\0b", 100), "a\u{FFFD}b");
        assert!(!text("\0\0\0", 100).contains('\0'));
    }

    #[test]
    fn long_text_is_clipped_with_a_marker_within_the_limit() {
        let s = "x".repeat(10_000);
        let t = text(&s, 100);
        assert!(t.len() <= 100, "{}", t.len());
        assert!(t.starts_with("xxxx"));
        assert!(t.ends_with(" bytes]"), "{t}");
        let clipped: usize = t
            .rsplit("[+")
            .next()
            .and_then(|r| r.strip_suffix(" bytes]"))
            .and_then(|n| n.parse().ok())
            .expect("marker");
        assert_eq!(
            t.len() - "…[+ bytes]".len() - clipped.to_string().len() + clipped,
            10_000
        );
    }

    #[test]
    fn clipping_respects_char_boundaries_and_nul_growth() {
        let s = "é".repeat(1000);
        let t = text(&s, 51);
        assert!(t.len() <= 51);
        let s = "\0".repeat(40);
        let t = text(&s, 60);
        assert!(t.len() <= 60 && !t.contains('\0'));
    }

    #[test]
    fn tiny_limits_never_exceed() {
        for max in 0..20 {
            assert!(text(&"y".repeat(50), max).len() <= max);
        }
    }

    #[test]
    fn log_lines_cannot_forge_lines() {
        assert_eq!(log_line("a\nb\r\x1b[2J", 100), "a\\nb\\r\\u{1b}[2J");
    }

    #[test]
    fn quote_is_short() {
        let q = quote(&"z".repeat(20_000_000));
        assert!(q.len() < 100, "{q}");
        assert!(q.contains("20000000 bytes"));
        assert_eq!(quote("ok"), "'ok'");
        assert_eq!(quote("a\0b"), "'a\\u{0}b'");
    }

    #[test]
    fn terminal_escapes_controls_but_keeps_newlines() {
        assert_eq!(terminal("a\nb\tc"), "a\nb\tc");
        assert_eq!(terminal("\x1b]0;owned\x07"), "\\u{1b}]0;owned\\u{7}");
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn text_is_valid_bounded_and_a_prefix(s in "(?s).{0,300}", max in 0usize..400) {
                let out = text(&s, max);
                let replaced = s.replace('\0', "\u{FFFD}");
                prop_assert!(!out.contains('\0'));
                if replaced.len() <= max {
                    prop_assert_eq!(out.as_ref(), replaced.as_str());
                } else {
                    prop_assert!(out.len() <= max, "{} > {}", out.len(), max);
                    let kept = out.rfind("…[+").map_or(out.as_ref(), |i| &out[..i]);
                    prop_assert!(replaced.starts_with(kept));
                }
            }

            #[test]
            fn log_lines_are_one_line(s in "(?s).{0,200}") {
                let line = log_line(&s, 1024);
                prop_assert!(!line.contains('\n') && !line.contains('\r') && !line.contains('\0'));
            }

            #[test]
            fn quotes_are_short(s in "(?s).{0,5000}") {
                // Each of 64 bytes can escape to at most 10 (`\u{10ffff}`), plus quotes and length.
                prop_assert!(quote(&s).len() <= 64 * 10 + 40);
            }

            #[test]
            fn terminal_text_has_no_controls_but_newline_and_tab(s in "(?s).{0,200}") {
                prop_assert!(!terminal(&s).chars().any(|c| c.is_control() && c != '\n' && c != '\t'));
            }
        }
    }
}
