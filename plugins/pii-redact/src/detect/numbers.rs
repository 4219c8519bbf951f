//! Payment cards (issuer prefix and Luhn), IBANs (country length and mod 97), phone numbers.

use super::{Found, Pii, ends_word, starts_word};

// Cards.

fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(*d);
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

/// Issuer prefixes of the major card networks.
fn card_issuer(d: &[u8], len: usize) -> bool {
    let n = |k: usize| d[..k].iter().fold(0u32, |a, x| a * 10 + u32::from(*x));
    match d[0] {
        4 => matches!(len, 13 | 16 | 19),                // Visa
        5 => (51..=55).contains(&n(2)) && len == 16,     // Mastercard
        2 => (2221..=2720).contains(&n(4)) && len == 16, // Mastercard 2-series
        3 => {
            (matches!(n(2), 34 | 37) && len == 15)                         // Amex
            || (n(2) == 35 && (16..=19).contains(&len))                      // JCB
            || (matches!(n(2), 36 | 38 | 30) && (14..=19).contains(&len))
        } // Diners
        6 => n(4) == 6011 || n(2) == 65 || (644..=649).contains(&n(3)) || n(2) == 62, // Discover, UnionPay
        _ => false,
    }
}

/// Digit runs with single spaces or dashes between groups: the spans and digits of each.
fn digit_runs(b: &[u8], seps: &[u8]) -> Vec<(usize, usize, Vec<u8>)> {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() || !starts_word(b, i) {
            i += 1;
            continue;
        }
        let start = i;
        let mut digits = Vec::new();
        let mut end = i;
        while i < b.len() {
            if b[i].is_ascii_digit() {
                digits.push(b[i] - b'0');
                i += 1;
                end = i;
            } else if seps.contains(&b[i]) && i + 1 < b.len() && b[i + 1].is_ascii_digit() {
                i += 1;
            } else {
                break;
            }
        }
        if ends_word(b, end) {
            runs.push((start, end, digits));
        }
        i = end.max(start + 1);
    }
    runs
}

pub(super) fn cards(text: &str, out: &mut Vec<Found>) {
    for (start, end, d) in digit_runs(text.as_bytes(), b" -") {
        if (13..=19).contains(&d.len()) && card_issuer(&d, d.len()) && luhn(&d) {
            out.push(Found {
                start,
                end,
                kind: Pii::Card,
            });
        }
    }
}

// IBAN.

/// IBAN lengths of common countries; others are accepted at 15-34 characters.
const IBAN_LENGTHS: &[(&str, usize)] = &[
    ("AT", 20),
    ("BE", 16),
    ("CH", 21),
    ("CZ", 24),
    ("DE", 22),
    ("DK", 18),
    ("ES", 24),
    ("FI", 18),
    ("FR", 27),
    ("GB", 22),
    ("IE", 22),
    ("IT", 27),
    ("LU", 20),
    ("NL", 18),
    ("NO", 15),
    ("PL", 28),
    ("PT", 25),
    ("SE", 24),
];

fn iban_valid(s: &[u8]) -> bool {
    let country = std::str::from_utf8(&s[..2]).unwrap_or("");
    let len_ok = match IBAN_LENGTHS.iter().find(|(c, _)| *c == country) {
        Some((_, l)) => s.len() == *l,
        None => (15..=34).contains(&s.len()),
    };
    if !len_ok || !s[2..4].iter().all(u8::is_ascii_digit) {
        return false;
    }
    let mut rem = 0u32;
    for &c in s[4..].iter().chain(&s[..4]) {
        let v = if c.is_ascii_digit() {
            u32::from(c - b'0')
        } else if c.is_ascii_uppercase() {
            u32::from(c - b'A') + 10
        } else {
            return false;
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

pub(super) fn ibans(text: &str, out: &mut Vec<Found>) {
    let b = text.as_bytes();
    let mut i = 0;
    while i + 4 <= b.len() {
        let head = b[i].is_ascii_uppercase()
            && b[i + 1].is_ascii_uppercase()
            && b[i + 2].is_ascii_digit()
            && b[i + 3].is_ascii_digit();
        if !head || !starts_word(b, i) {
            i += 1;
            continue;
        }
        // Characters of the IBAN, with single spaces between groups allowed.
        let mut chars = Vec::new();
        let mut j = i;
        let mut ends = Vec::new();
        while j < b.len() && chars.len() < 34 {
            let c = b[j];
            if c.is_ascii_uppercase() || c.is_ascii_digit() {
                chars.push(c);
                j += 1;
                ends.push((chars.len(), j));
            } else if c == b' '
                && j + 1 < b.len()
                && b[j + 1].is_ascii_alphanumeric()
                && !chars.is_empty()
            {
                j += 1;
            } else {
                break;
            }
        }
        // The longest valid prefix that ends at a word boundary.
        let hit = ends
            .iter()
            .rev()
            .find(|(n, e)| *n >= 15 && ends_word(b, *e) && iban_valid(&chars[..*n]));
        match hit {
            Some(&(_, e)) => {
                out.push(Found {
                    start: i,
                    end: e,
                    kind: Pii::Iban,
                });
                i = e;
            }
            None => i += 1,
        }
    }
}

// Phone numbers.

pub(super) fn phones(text: &str, out: &mut Vec<Found>) {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let plus = c == b'+';
        // Not inside a longer number: after `+.-/`, or after digits and one separator.
        let inside = (i > 0 && b"+.-/".contains(&b[i - 1]))
            || (i > 1 && matches!(b[i - 1], b' ' | b'-') && b[i - 2].is_ascii_digit());
        if !(plus || c == b'(' || c.is_ascii_digit()) || !starts_word(b, i) || inside {
            i += 1;
            continue;
        }
        let start = i;
        let mut j = i + usize::from(plus);
        let mut groups: Vec<usize> = Vec::new();
        let mut seps: Vec<u8> = Vec::new();
        let mut cur = 0;
        let mut end = j;
        let mut open_paren = false;
        while j < b.len() {
            let c = b[j];
            if c.is_ascii_digit() {
                cur += 1;
                j += 1;
                end = j;
                if open_paren {
                    continue;
                }
            } else if c == b'(' && cur == 0 && !open_paren {
                open_paren = true;
                j += 1;
            } else if c == b')' && open_paren && cur > 0 {
                open_paren = false;
                groups.push(cur);
                cur = 0;
                j += 1;
                end = j;
                seps.push(b')');
                if j < b.len() && b[j] == b' ' {
                    j += 1;
                }
            } else if (c == b' ' || c == b'-' || c == b'.')
                && cur > 0
                && b.get(j + 1)
                    .is_some_and(|n| n.is_ascii_digit() || *n == b'(')
            {
                groups.push(cur);
                cur = 0;
                seps.push(c);
                j += 1;
            } else {
                break;
            }
        }
        if cur > 0 {
            groups.push(cur);
        }
        let digits: usize = groups.iter().sum();
        let all_dots = !seps.is_empty() && seps.iter().all(|s| *s == b'.');
        let ok = ends_word(b, end)
            && !open_paren
            && if plus {
                (8..=15).contains(&digits) && groups.iter().all(|g| *g <= 12)
            } else {
                (10..=11).contains(&digits)
                    && groups.len() >= 2
                    && groups[..groups.len() - 1]
                        .iter()
                        .all(|g| (2..=5).contains(g))
                    && !(all_dots && groups.len() == 4 && groups.iter().all(|g| *g <= 3))
            };
        if ok {
            out.push(Found {
                start,
                end,
                kind: Pii::Phone,
            });
            i = end;
        } else {
            i = start + 1;
            // Skip the rest of this digit run: a phone number does not start inside one.
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
        }
    }
}
