//! Detectors: each finds one kind of personal data or secret in text and returns byte ranges.
//! Written as small scanners with the validity checks that tell real data from look-alikes
//! (Luhn for cards, mod-97 for IBANs, octet ranges for IPv4, full parse for IPv6).

mod addresses;
mod numbers;
mod secrets;

pub use secrets::open_private_key;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Pii {
    /// API keys, tokens, private keys, `password = ...` values.
    Secret,
    Card,
    Iban,
    Email,
    Ipv6,
    Ipv4,
    Phone,
}

impl Pii {
    pub fn name(self) -> &'static str {
        match self {
            Pii::Secret => "secret",
            Pii::Card => "card",
            Pii::Iban => "iban",
            Pii::Email => "email",
            Pii::Ipv6 => "ipv6",
            Pii::Ipv4 => "ipv4",
            Pii::Phone => "phone",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub start: usize,
    pub end: usize,
    pub kind: Pii,
}

/// Which kinds to look for.
#[derive(Debug, Clone, Copy)]
pub struct Kinds {
    pub email: bool,
    pub phone: bool,
    pub card: bool,
    pub iban: bool,
    pub ip: bool,
    pub secret: bool,
}

/// All findings, without overlaps (the earlier, then the longer, then the more specific wins).
pub fn find_all(text: &str, kinds: &Kinds) -> Vec<Found> {
    let mut all = Vec::new();
    if kinds.secret {
        secrets::secrets(text, &mut all);
    }
    if kinds.card {
        numbers::cards(text, &mut all);
    }
    if kinds.iban {
        numbers::ibans(text, &mut all);
    }
    if kinds.email {
        addresses::emails(text, &mut all);
    }
    if kinds.ip {
        addresses::ipv6s(text, &mut all);
        addresses::ipv4s(text, &mut all);
    }
    if kinds.phone {
        numbers::phones(text, &mut all);
    }
    all.sort_by(|a, b| {
        a.start
            .cmp(&b.start)
            .then(b.end.cmp(&a.end))
            .then(a.kind.cmp(&b.kind))
    });
    let mut out: Vec<Found> = Vec::new();
    for f in all {
        match out.last_mut() {
            Some(last) if f.start < last.end => {
                // Overlap: keep the union under the first one's kind, unless this one is a secret.
                if f.kind == Pii::Secret {
                    last.kind = Pii::Secret;
                }
                last.end = last.end.max(f.end);
            }
            _ => out.push(f),
        }
    }
    out
}

pub(crate) fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// No word character right before `i`.
pub(crate) fn starts_word(b: &[u8], i: usize) -> bool {
    i == 0 || !is_word(b[i - 1])
}

/// No word character at `i`.
pub(crate) fn ends_word(b: &[u8], i: usize) -> bool {
    i >= b.len() || !is_word(b[i])
}

#[cfg(test)]
mod tests;
