//! API keys, tokens, JWTs, bearer tokens, `password = ...` values and private key blocks.

use super::{Found, Pii, ends_word, starts_word};

/// Which bytes may follow a token's prefix.
type Allowed = fn(u8) -> bool;

/// Prefixes of well-known credentials and the characters and minimum length of what follows.
const TOKEN_FORMS: &[(&str, Allowed, usize)] = &[
    ("AKIA", |c| c.is_ascii_uppercase() || c.is_ascii_digit(), 16),
    ("ASIA", |c| c.is_ascii_uppercase() || c.is_ascii_digit(), 16),
    ("ghp_", |c| c.is_ascii_alphanumeric(), 36),
    ("gho_", |c| c.is_ascii_alphanumeric(), 36),
    ("ghu_", |c| c.is_ascii_alphanumeric(), 36),
    ("ghs_", |c| c.is_ascii_alphanumeric(), 36),
    ("ghr_", |c| c.is_ascii_alphanumeric(), 36),
    (
        "github_pat_",
        |c| c.is_ascii_alphanumeric() || c == b'_',
        40,
    ),
    (
        "glpat-",
        |c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_',
        20,
    ),
    ("xoxb-", |c| c.is_ascii_alphanumeric() || c == b'-', 10),
    ("xoxp-", |c| c.is_ascii_alphanumeric() || c == b'-', 10),
    ("xoxa-", |c| c.is_ascii_alphanumeric() || c == b'-', 10),
    ("xoxr-", |c| c.is_ascii_alphanumeric() || c == b'-', 10),
    ("sk_live_", |c| c.is_ascii_alphanumeric(), 16),
    ("sk_test_", |c| c.is_ascii_alphanumeric(), 16),
    ("rk_live_", |c| c.is_ascii_alphanumeric(), 16),
    (
        "sk-",
        |c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_',
        20,
    ),
    (
        "AIza",
        |c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_',
        35,
    ),
    ("npm_", |c| c.is_ascii_alphanumeric(), 36),
];

/// Words after which `: value` or `= value` is a secret.
const SECRET_WORDS: &[&str] = &[
    "password",
    "passwd",
    "pwd",
    "secret",
    "api_key",
    "apikey",
    "api-key",
    "access_token",
    "auth_token",
    "token",
    "client_secret",
];

pub(super) fn secrets(text: &str, out: &mut Vec<Found>) {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if starts_word(b, i)
            && let Some(end) = token_at(b, i)
        {
            out.push(Found {
                start: i,
                end,
                kind: Pii::Secret,
            });
            i = end;
            continue;
        }
        i += 1;
    }
    jwts(b, out);
    bearer_and_assignments(text, out);
    private_keys(text, out);
}

fn token_at(b: &[u8], i: usize) -> Option<usize> {
    for (prefix, allowed, min) in TOKEN_FORMS {
        if b[i..].starts_with(prefix.as_bytes()) {
            let body = b[i + prefix.len()..]
                .iter()
                .take_while(|c| allowed(**c))
                .count();
            let end = i + prefix.len() + body;
            if body >= *min && ends_word(b, end) {
                return Some(end);
            }
        }
    }
    None
}

fn b64url(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c == b'_'
}

/// `eyJ...` `.` `eyJ...` `.` signature: a JSON Web Token.
fn jwts(b: &[u8], out: &mut Vec<Found>) {
    let mut i = 0;
    while let Some(off) = find(&b[i..], b"eyJ") {
        let start = i + off;
        i = start + 3;
        if !starts_word(b, start) {
            continue;
        }
        let mut end = start;
        let mut parts = 0;
        loop {
            let n = b[end..].iter().take_while(|c| b64url(**c)).count();
            if n < 4 {
                break;
            }
            end += n;
            parts += 1;
            if parts == 3 || end >= b.len() || b[end] != b'.' {
                break;
            }
            end += 1;
        }
        if parts == 3 {
            out.push(Found {
                start,
                end,
                kind: Pii::Secret,
            });
            i = end;
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `Bearer TOKEN`, and `password: VALUE` / `api_key = "VALUE"` (the value only).
fn bearer_and_assignments(text: &str, out: &mut Vec<Found>) {
    let lower = text.to_ascii_lowercase();
    let b = lower.as_bytes();
    let value_at = |mut j: usize, min: usize| -> Option<(usize, usize)> {
        if j < b.len() && (b[j] == b'"' || b[j] == b'\'') {
            j += 1;
        }
        let n = b[j..]
            .iter()
            .take_while(|c| {
                !c.is_ascii_whitespace()
                    && **c != b'"'
                    && **c != b'\''
                    && **c != b','
                    && **c != b';'
            })
            .count();
        (n >= min).then_some((j, j + n))
    };
    let mut i = 0;
    while let Some(off) = find(&b[i..], b"bearer ") {
        let at = i + off;
        i = at + 7;
        if starts_word(b, at)
            && let Some((s, e)) = value_at(at + 7, 16)
        {
            out.push(Found {
                start: s,
                end: e,
                kind: Pii::Secret,
            });
        }
    }
    for word in SECRET_WORDS {
        let mut i = 0;
        while let Some(off) = find(&b[i..], word.as_bytes()) {
            let at = i + off;
            i = at + word.len();
            if !starts_word(b, at) || !ends_word(b, at + word.len()) {
                continue;
            }
            let mut j = at + word.len();
            // `"password": "x"` and `password = x` and `password: x`.
            if j < b.len() && (b[j] == b'"' || b[j] == b'\'') {
                j += 1;
            }
            while j < b.len() && b[j] == b' ' {
                j += 1;
            }
            if j >= b.len() || (b[j] != b':' && b[j] != b'=') {
                continue;
            }
            j += 1;
            while j < b.len() && b[j] == b' ' {
                j += 1;
            }
            if let Some((s, e)) = value_at(j, 8) {
                out.push(Found {
                    start: s,
                    end: e,
                    kind: Pii::Secret,
                });
            }
        }
    }
}

/// `-----BEGIN ... PRIVATE KEY-----` through its END line (or to the end of the text).
fn private_keys(text: &str, out: &mut Vec<Found>) {
    let mut i = 0;
    while let Some(off) = text[i..].find("-----BEGIN ") {
        let start = i + off;
        let Some(hdr_end) = text[start..]
            .find("-----\n")
            .or_else(|| text[start + 5..].find("-----").map(|p| p + 5))
        else {
            break;
        };
        let header = &text[start..start + hdr_end];
        i = start + 11;
        if !header.contains("PRIVATE KEY") {
            continue;
        }
        let end = match text[start..].find("-----END ") {
            Some(e) => {
                let after = start + e + 9;
                text[after..]
                    .find("-----")
                    .map_or(text.len(), |p| after + p + 5)
            }
            None => text.len(),
        };
        out.push(Found {
            start,
            end,
            kind: Pii::Secret,
        });
        i = end;
    }
}

/// Where an unfinished private key block starts (the output filter holds it back whole).
pub fn open_private_key(text: &str) -> Option<usize> {
    let start = text.rfind("-----BEGIN ")?;
    let rest = &text[start..];
    let header_done = rest.len() > 11 && rest[11..].contains("-----");
    if header_done
        && !rest[11..]
            .split("-----")
            .next()
            .is_some_and(|h| h.contains("PRIVATE KEY"))
    {
        return None;
    }
    (!rest.contains("-----END ")).then_some(start)
}
