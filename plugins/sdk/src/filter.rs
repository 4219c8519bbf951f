//! The filter world's types, the trait a filter plugin implements, and the hold-back window that
//! output filters use so that a secret split across tokens is seen whole.

pub use crate::bindings::exports::moed::plugin::filtering::{
    Guest, InputVerdict, OutputStep, OutputVerdict,
};

/// Where to cut `pending` so that nothing after the cut can be the start of a secret that is still
/// arriving: at least `window` bytes are held back (spaced secrets such as card numbers, phone
/// numbers and IBANs are shorter than that), the cut is moved back to the start of the
/// whitespace-free run it falls in (an e-mail address or token is never split), but never holds
/// more than `max_hold` bytes. With `last` everything is released. The result is a char boundary.
pub fn hold_cut(pending: &str, last: bool, window: usize, max_hold: usize) -> usize {
    let len = pending.len();
    if last {
        return len;
    }
    if len <= window {
        return 0;
    }
    let mut cut = floor_boundary(pending, len - window);
    let floor = floor_boundary(pending, len.saturating_sub(max_hold.max(window)));
    // Move back over the run of non-whitespace the cut falls inside.
    while cut > floor {
        let before = pending[..cut].chars().next_back();
        match before {
            Some(c) if !c.is_whitespace() => cut -= c.len_utf8(),
            _ => break,
        }
    }
    cut
}

/// The largest char boundary at or below `i`.
pub fn floor_boundary(s: &str, mut i: usize) -> usize {
    if i >= s.len() {
        return s.len();
    }
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}
