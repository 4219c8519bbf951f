//! Plugin strings made valid and bounded (with `moed_wire`, the one boundary) at the moment
//! the host takes them, before it logs, stores or returns them to the daemon.
//!
//! What bounds the copy itself: the canonical ABI lifts a string or list a plugin hands over by
//! copying it out of the instance's linear memory, which the kind's memory limit caps
//! (`KindLimits::memory_bytes`: 32 MiB for a gate, 64 MiB for a filter, 128 MiB for retrieval by
//! default). So one string costs the host at most one copy of that size, dropped as soon as it is
//! clipped here; a plugin that hands over such strings in a loop is stopped by its time limit.

use moed_wire::{self as wire, limits};

use crate::error::CallFailure;

/// One line of at most `max` bytes: NUL replaced, newlines and other controls escaped (so that a
/// plugin's text cannot forge a log line), clipped with the wire's marker.
pub(crate) fn line(s: &str, max: usize) -> String {
    // Escaping lengthens what the clip kept. Clip to less until the escaped line fits, so that
    // the marker still counts the bytes cut from `s`; a line of nearly only control characters
    // that does not fit after a few tries is clipped once more (`max` always holds).
    let mut budget = max;
    for _ in 0..3 {
        let l = wire::log_line(s, budget);
        if l.len() <= max {
            return l;
        }
        budget = budget.saturating_mul(max) / l.len();
    }
    wire::owned(wire::log_line(s, budget), max)
}

/// Text that is shown as it is (redacted prompts, released answer text, document text): NULs
/// replaced, at most `max` bytes.
pub(crate) fn text(s: String, max: usize) -> String {
    wire::owned(s, max)
}

/// The end of `s`: at most `max` bytes, from a character boundary, after `…` when cut.
pub(crate) fn tail(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= max {
        return s.into();
    }
    let mut i = s.len() - max;
    while !s.is_char_boundary(i) {
        i += 1;
    }
    format!("…{}", &s[i..]).into()
}

/// A plugin's contribution to a failure message.
pub(crate) fn detail(s: &str) -> String {
    line(s, limits::PLUGIN_DETAIL)
}

impl CallFailure {
    /// The failure with every string in it bounded: a plugin's error, a trap message with its
    /// stderr and backtrace, an interface mismatch naming the component's exports.
    pub(crate) fn bounded(self) -> CallFailure {
        match self {
            CallFailure::Trap(m) => CallFailure::Trap(detail(&m)),
            CallFailure::Memory(m) => CallFailure::Memory(detail(&m)),
            CallFailure::Plugin(m) => CallFailure::Plugin(detail(&m)),
            CallFailure::Param { key, message } => CallFailure::Param {
                key: line(&key, 256),
                message: detail(&message),
            },
            CallFailure::BadAnswer(m) => CallFailure::BadAnswer(detail(&m)),
            CallFailure::Start(m) => CallFailure::Start(detail(&m)),
            CallFailure::Interface(m) => CallFailure::Interface(detail(&m)),
            // Made by the host from an already bounded failure (or a fixed text).
            f @ (CallFailure::Disabled(_) | CallFailure::Timeout(_)) => f,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_bounded_escaped_and_nul_free() {
        let s = format!("a\0b\nforged\x1b[2J{}", "\n".repeat(5000));
        let l = line(&s, 100);
        assert!(l.len() <= 100, "{}", l.len());
        assert!(
            !l.contains('\0') && !l.contains('\n') && !l.contains('\x1b'),
            "{l}"
        );
        assert!(l.starts_with("a\u{FFFD}b\\nforged\\u{1b}[2J"), "{l}");
    }

    #[test]
    fn the_marker_counts_the_bytes_cut_from_the_original() {
        let s = format!("a\nb\x1b{}", "x".repeat(10_000));
        let l = line(&s, 100);
        assert!(l.len() <= 100, "{l}");
        let (kept, marker) = l.split_once('…').expect("a marker");
        let cut: usize = marker
            .strip_prefix("[+")
            .and_then(|m| m.strip_suffix(" bytes]"))
            .and_then(|n| n.parse().ok())
            .expect("a count");
        let kept = kept.replace("\\n", "\n").replace("\\u{1b}", "\x1b");
        assert_eq!(kept.len() + cut, s.len(), "{l}");
    }

    #[test]
    fn tails_keep_the_end_at_a_boundary() {
        assert_eq!(tail("short", 10), "short");
        let t = tail("ééééé panicked: boom", 16);
        assert!(t.starts_with('…') && t.ends_with("panicked: boom"), "{t}");
    }

    #[test]
    fn failures_are_bounded_whatever_the_plugin_said() {
        let huge = format!("{}\0", "é".repeat(4 << 20));
        for f in [
            CallFailure::Plugin(huge.clone()),
            CallFailure::Trap(huge.clone()),
            CallFailure::BadAnswer(huge.clone()),
        ] {
            let b = f.bounded().to_string();
            assert!(b.len() < limits::PLUGIN_DETAIL + 64, "{}", b.len());
            assert!(b.contains(" bytes]") && !b.contains('\0'), "{b}");
        }
        let t = CallFailure::Timeout(std::time::Duration::from_millis(5));
        assert_eq!(t.clone().bounded(), t);
    }
}
