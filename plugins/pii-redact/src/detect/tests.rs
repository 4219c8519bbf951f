//! Detector tests: real formats fire, look-alikes do not.

use super::*;

const ALL: Kinds = Kinds {
    email: true,
    phone: true,
    card: true,
    iban: true,
    ip: true,
    secret: true,
};

fn found(text: &str) -> Vec<(Pii, &str)> {
    find_all(text, &ALL)
        .into_iter()
        .map(|f| (f.kind, &text[f.start..f.end]))
        .collect()
}

#[test]
fn real_data_is_found() {
    let cases: &[(&str, Pii, &str)] = &[
        (
            "write to jane.doe+news@mail.example.co.uk today",
            Pii::Email,
            "jane.doe+news@mail.example.co.uk",
        ),
        (
            "card 4111 1111 1111 1111 exp 12/27",
            Pii::Card,
            "4111 1111 1111 1111",
        ),
        ("amex 378282246310005.", Pii::Card, "378282246310005"),
        ("mc 5555-5555-5555-4444", Pii::Card, "5555-5555-5555-4444"),
        (
            "IBAN DE89 3704 0044 0532 0130 00 please",
            Pii::Iban,
            "DE89 3704 0044 0532 0130 00",
        ),
        (
            "iban GB82WEST12345698765432",
            Pii::Iban,
            "GB82WEST12345698765432",
        ),
        (
            "server at 192.168.10.254, port 22",
            Pii::Ipv4,
            "192.168.10.254",
        ),
        (
            "v6 2001:db8:85a3::8a2e:370:7334 ok",
            Pii::Ipv6,
            "2001:db8:85a3::8a2e:370:7334",
        ),
        (
            "link-local fe80::1ff:fe23:4567:890a%eth0",
            Pii::Ipv6,
            "fe80::1ff:fe23:4567:890a",
        ),
        (
            "call +49 151 2345 6789 now",
            Pii::Phone,
            "+49 151 2345 6789",
        ),
        ("call (555) 123-4567 now", Pii::Phone, "(555) 123-4567"),
        ("or 555-123-4567.", Pii::Phone, "555-123-4567"),
        (
            "key AKIAIOSFODNN7EXAMPLE in config",
            Pii::Secret,
            "AKIAIOSFODNN7EXAMPLE",
        ),
        (
            "token ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789 leaked",
            Pii::Secret,
            "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
        ),
        (
            "OPENAI=sk-proj-abcdefghijklmnopqrstuvwxyz012345",
            Pii::Secret,
            "sk-proj-abcdefghijklmnopqrstuvwxyz012345",
        ),
        (
            "slack xoxb-1234567890-abcdefghij",
            Pii::Secret,
            "xoxb-1234567890-abcdefghij",
        ),
        ("password: hunter2hunter2", Pii::Secret, "hunter2hunter2"),
        (
            "{\"api_key\": \"0123456789abcdef\"}",
            Pii::Secret,
            "0123456789abcdef",
        ),
        (
            "Authorization: Bearer abcdefghijklmnop1234",
            Pii::Secret,
            "abcdefghijklmnop1234",
        ),
        (
            "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJlX2hlcmU end",
            Pii::Secret,
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJlX2hlcmU",
        ),
    ];
    for (text, kind, want) in cases {
        assert_eq!(found(text), vec![(*kind, *want)], "in {text:?}");
    }
}

#[test]
fn private_key_blocks() {
    let text =
        "here:\n-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nAbc==\n-----END RSA PRIVATE KEY-----\nbye";
    let f = found(text);
    assert_eq!(f.len(), 1);
    assert!(
        f[0].1.starts_with("-----BEGIN") && f[0].1.ends_with("KEY-----"),
        "{f:?}"
    );
    assert_eq!(
        open_private_key("x -----BEGIN PRIVATE KEY-----\nMIIE"),
        Some(2)
    );
    assert_eq!(open_private_key("-----BEGIN CERTIFICATE-----\nMIIE"), None);
    assert_eq!(open_private_key(text), None);
}

#[test]
fn look_alikes_do_not_fire() {
    let texts = [
        // Numbers that are not cards: wrong Luhn, no issuer, order numbers, ISBNs.
        "order 4111 1111 1111 1112 shipped",
        "tracking 1234567890123456",
        "ISBN 978-3-16-148410-0",
        // Not e-mail addresses.
        "ping @jane on chat, user@localhost, icon@2x.png, @Override",
        // Dates, times, versions, prices, decimals.
        "on 2024-01-15 at 12:30:45 we shipped version 1.2.3.4 (v10.0.0.1) for $1,234,567.89",
        "pi is 3.14159265358979 and e is 2.718281828",
        // IBAN with a wrong check digit, and a random uppercase code.
        "DE88 3704 0044 0532 0130 00 and SKU AB12CD34EF56GH78",
        // Not IPs: too many parts, octet out of range, MAC address, C++ paths.
        "1.2.3.4.5 and 256.1.1.1 and 00:1A:2B:3C:4D:5E and std::vector::push_back",
        // Not tokens: words containing prefixes, short values.
        "the task-force met; password: short; token = 5; a skeleton key",
        "commit 3f786850e387550fdab836ed7e6dc881de23001b and uuid 123e4567-e89b-12d3-a456-426614174000",
        "room 101, ext. 4021, zip 94107, 5 kg",
    ];
    for t in texts {
        assert_eq!(found(t), vec![], "in {t:?}");
    }
}

#[test]
fn kinds_can_be_switched_off() {
    let text = "mail a@b.example and 192.168.1.1";
    let only_ip = Kinds {
        email: false,
        ..ALL
    };
    let f = find_all(text, &only_ip);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].kind, Pii::Ipv4);
}

#[test]
fn arbitrary_text_never_panics() {
    // Pieces that start detectors, mixed with multi-byte characters, in pseudo-random order.
    let pieces = [
        "@",
        ".",
        "+",
        "(",
        ")",
        "-",
        " ",
        "4",
        "1",
        "0",
        "9",
        "a",
        "Z",
        "é",
        "€",
        "😀",
        ":",
        "::",
        "DE",
        "GB82",
        "sk-",
        "ghp_",
        "eyJ",
        "-----BEGIN ",
        "PRIVATE KEY-----",
        "-----END ",
        "bearer ",
        "password:",
        "=",
        "\"",
    ];
    let mut x = 12345u64;
    for _ in 0..3000 {
        let mut s = String::new();
        for _ in 0..(x % 40) {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            s.push_str(pieces[(x >> 33) as usize % pieces.len()]);
        }
        let found = find_all(&s, &ALL);
        for f in &found {
            assert!(
                s.is_char_boundary(f.start) && s.is_char_boundary(f.end) && f.start < f.end,
                "{s:?}: {f:?}"
            );
        }
        let _ = open_private_key(&s);
    }
}
