//! E-mail addresses and IPv4/IPv6 addresses.

use std::net::Ipv6Addr;

use super::{Found, Pii, ends_word, is_word, starts_word};

// E-mail.

/// Endings of file names that look like domains (`icon@2x.png`).
const FILE_ENDINGS: &[&str] = &[
    "png", "jpg", "jpeg", "gif", "svg", "webp", "ico", "bmp", "pdf",
];

pub(super) fn emails(text: &str, out: &mut Vec<Found>) {
    let b = text.as_bytes();
    let local_ok = |c: u8| c.is_ascii_alphanumeric() || b"._%+-".contains(&c);
    let domain_ok = |c: u8| c.is_ascii_alphanumeric() || c == b'.' || c == b'-';
    for (at, _) in text.match_indices('@') {
        let mut s = at;
        while s > 0 && local_ok(b[s - 1]) {
            s -= 1;
        }
        while s < at && b[s] == b'.' {
            s += 1;
        }
        let mut e = at + 1;
        while e < b.len() && domain_ok(b[e]) {
            e += 1;
        }
        while e > at + 1 && (b[e - 1] == b'.' || b[e - 1] == b'-') {
            e -= 1;
        }
        if s == at || e == at + 1 {
            continue;
        }
        let domain = &text[at + 1..e];
        let labels: Vec<&str> = domain.split('.').collect();
        let Some(tld) = labels.last() else { continue };
        let ok = labels.len() >= 2
            && labels.iter().all(|l| !l.is_empty() && !l.starts_with('-'))
            && tld.len() >= 2
            && tld.bytes().all(|c| c.is_ascii_alphabetic())
            && !FILE_ENDINGS.contains(&tld.to_ascii_lowercase().as_str());
        if ok {
            out.push(Found {
                start: s,
                end: e,
                kind: Pii::Email,
            });
        }
    }
}

// IP addresses.

pub(super) fn ipv4s(text: &str, out: &mut Vec<Found>) {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() || !starts_word(b, i) || (i > 0 && b[i - 1] == b'.') {
            i += 1;
            continue;
        }
        let start = i;
        let mut parts = 0;
        let mut ok = true;
        loop {
            let n = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
            let part = &text[i..i + n];
            if n == 0
                || n > 3
                || (n > 1 && part.starts_with('0'))
                || part.parse::<u16>().map_or(true, |v| v > 255)
            {
                ok = false;
            }
            i += n;
            parts += 1;
            if parts == 4
                || i >= b.len()
                || b[i] != b'.'
                || !b.get(i + 1).is_some_and(u8::is_ascii_digit)
            {
                break;
            }
            i += 1;
        }
        // Exactly four parts, not followed by more dotted digits, not a version ("v1.2.3.4").
        let followed = i + 1 < b.len() && b[i] == b'.' && b[i + 1].is_ascii_digit();
        let version = text[..start]
            .trim_end()
            .to_ascii_lowercase()
            .ends_with("version")
            || (start > 0 && (b[start - 1] == b'v' || b[start - 1] == b'V'));
        if ok && parts == 4 && !followed && ends_word(b, i) && !version {
            out.push(Found {
                start,
                end: i,
                kind: Pii::Ipv4,
            });
        }
        i = i.max(start + 1);
    }
}

pub(super) fn ipv6s(text: &str, out: &mut Vec<Found>) {
    let b = text.as_bytes();
    let cand = |c: u8| c.is_ascii_hexdigit() || c == b':' || c == b'.';
    let mut i = 0;
    while i < b.len() {
        if !cand(b[i]) || (i > 0 && (is_word(b[i - 1]) || b[i - 1] == b':')) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && cand(b[i]) {
            i += 1;
        }
        let mut end = i;
        while end > start && b[end - 1] == b'.' {
            end -= 1;
        }
        let s = &text[start..end];
        let colons = s.bytes().filter(|c| *c == b':').count();
        let hex = s.bytes().filter(u8::is_ascii_hexdigit).count();
        if colons >= 2 && hex >= 5 && ends_word(b, end) && s.parse::<Ipv6Addr>().is_ok() {
            out.push(Found {
                start,
                end,
                kind: Pii::Ipv6,
            });
        }
    }
}
