//! Filter plugins on realistic text: `pii-redact` on prompts and on answers streamed in small
//! pieces (secrets split across tokens), `input-check` on likely input errors; look-alikes pass.

mod util;

use moed_plugins::{CallFailure, FilterError, FilterPlugin};
use serde_json::json;
use util::*;

fn pii(config: &[(&str, serde_json::Value)]) -> (moed_plugins::PluginHost, FilterPlugin) {
    let host = host();
    let plugin = host
        .load(&spec_with("pii-redact", config))
        .expect("load pii-redact");
    let f = FilterPlugin::new(&plugin).expect("filter");
    (host, f)
}

const EMAIL_TO_SUPPORT: &str = "Hi team, please refund order 88231 for Jane Doe (jane.doe@example.com, \
+44 20 7946 0958). She paid with 4111 1111 1111 1111; her IBAN is GB82 WEST 1234 5698 7654 32. \
The request came from 203.0.113.42 and 2001:db8::ff00:42:8329. Our Stripe key sk_live_4eC39HqLyjWDarjtT1zdp7dc \
must not be shared.";

#[test]
fn pii_redact_redacts_a_realistic_prompt() {
    let (_host, f) = pii(&[]);
    let out = f.check_input(EMAIL_TO_SUPPORT, &[]).expect("allowed");
    let text = out.redacted.expect("redacted");
    for secret in [
        "jane.doe@example.com",
        "7946 0958",
        "4111 1111 1111 1111",
        "GB82 WEST",
        "203.0.113.42",
        "2001:db8::ff00",
        "sk_live_",
    ] {
        assert!(!text.contains(secret), "{secret} left in: {text}");
    }
    for kept in ["order 88231", "Jane Doe", "Hi team", "must not be shared"] {
        assert!(text.contains(kept), "{kept} lost: {text}");
    }
    for kind in ["email", "phone", "card", "iban", "ipv4", "ipv6", "secret"] {
        assert!(
            text.contains(&format!("[REDACTED:{kind}]")),
            "{kind} not marked: {text}"
        );
        assert!(
            out.alerts.iter().any(|a| a.code == format!("pii.{kind}")),
            "{kind}: {:?}",
            out.alerts
        );
    }
}

#[test]
fn pii_redact_leaves_look_alikes_alone() {
    let (_host, f) = pii(&[]);
    let text = "Release 2.4.1 ships on 2024-03-15 at 09:30:00. Order 4111 1111 1111 1112 (not a valid card) \
costs $1,299.00; ISBN 978-3-16-148410-0. Ping @jane or see icon@2x.png. The MAC is 00:1A:2B:3C:4D:5E, \
commit 3f786850e387550fdab836ed7e6dc881de23001b, uuid 123e4567-e89b-12d3-a456-426614174000, \
std::vector::push_back, version 10.0.0.1, DE88 3704 0044 0532 0130 00 (bad check digits), room 101, zip 94107.";
    let out = f.check_input(text, &[]).expect("allowed");
    assert_eq!(out.redacted, None, "look-alike redacted");
    assert!(out.alerts.is_empty(), "{:?}", out.alerts);
}

/// Streams `text` through the output filter in pieces of `n` bytes (at char boundaries).
fn stream(f: &FilterPlugin, text: &str, n: usize) -> Result<String, FilterError> {
    let mut out = f.output(&[]);
    let mut shown = String::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut cut = n.min(rest.len());
        while !rest.is_char_boundary(cut) {
            cut += 1;
        }
        let (piece, tail) = rest.split_at(cut);
        shown.push_str(&out.push(piece)?.text);
        // Nothing shown may contain the start of a secret yet to be completed.
        assert!(!shown.contains("4111 1111"), "card released early: {shown}");
        rest = tail;
    }
    shown.push_str(&out.finish()?.text);
    Ok(shown)
}

#[test]
fn pii_redact_catches_secrets_split_across_tokens() {
    let (_host, f) = pii(&[]);
    let answer = "Sure. The customer's card is 4111 1111 1111 1111 and her address is jane.doe@example.com; \
the API token is ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789 and the key:\n\
-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\nVTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK\n\
-----END RSA PRIVATE KEY-----\nAnything else?";
    let full = f
        .check_input(answer, &[])
        .expect("ok")
        .redacted
        .expect("redacted");
    for n in [1, 2, 3, 5, 8, 13] {
        let shown = stream(&f, answer, n).expect("stream");
        assert_eq!(shown, full, "pieces of {n} bytes");
    }
    assert!(
        full.contains("[REDACTED:card]")
            && full.contains("[REDACTED:email]")
            && full.contains("[REDACTED:secret]")
    );
    assert!(
        !full.contains("MIIE") && full.ends_with("Anything else?"),
        "{full}"
    );
}

#[test]
fn pii_redact_can_reject_and_be_narrowed_per_request() {
    let (_host, f) = pii(&[("action", json!("reject"))]);
    let e = f
        .check_input("mail me at a.b@example.org", &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("rejected the prompt") && e.contains("email"),
        "{e}"
    );
    let (_host, f) = pii(&[]);
    let skip = vec![(
        "pii_redact.skip".to_owned(),
        "[\"ipv4\", \"ip\"]".to_owned(),
    )];
    let e = f
        .check_input("host 10.1.2.3", &skip)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("unknown kind 'ipv4'") && e.contains("fail closed"),
        "{e}"
    );
    // The caller's mistake, named, not the plugin's: it never disables the filter.
    for _ in 0..7 {
        match f.check_input("host 10.1.2.3", &skip) {
            Err(FilterError::Failed {
                failure: CallFailure::Param { key, .. },
                ..
            }) => assert_eq!(key, "pii_redact.skip"),
            other => panic!("expected the parameter refused, got {other:?}"),
        }
    }
    let status = f.plugin().status();
    assert_eq!(
        status.disabled_reason, None,
        "disabled by a client's bad parameter"
    );
    assert_eq!(status.consecutive_failures, 0);
    let skip = vec![("pii_redact.skip".to_owned(), "[\"ip\"]".to_owned())];
    assert_eq!(
        f.check_input("host 10.1.2.3", &skip).expect("ok").redacted,
        None
    );
    // Configuration is checked against the manifest's schema at load.
    let host = host();
    let e = host
        .load(&spec_with("pii-redact", &[("window", json!(8))]))
        .expect_err("refused")
        .to_string();
    assert!(
        e.contains("'window'") && e.contains("below the minimum 48"),
        "{e}"
    );
}

fn input_check() -> (moed_plugins::PluginHost, FilterPlugin) {
    let host = host();
    let plugin = host.load(&spec("input-check")).expect("load input-check");
    (host, FilterPlugin::new(&plugin).expect("filter"))
}

#[test]
fn input_check_alerts_on_input_errors() {
    let (_host, f) = input_check();
    let para = "Please summarize the attached quarterly report and list the three biggest risks.";
    let cases = [
        (format!("{para}\n{para}"), "input.repeated"),
        (
            "Why does f(g(x) diverge when x -> 0?".to_owned(),
            "input.unbalanced",
        ),
        (
            "Translate: \"Good morning, everyone.".to_owned(),
            "input.unbalanced",
        ),
        (
            "Review this code:\n```python\ndef f():\n    return 1\n".to_owned(),
            "input.code_fence",
        ),
        (
            "Dear {{customer_name}}, your order has shipped.".to_owned(),
            "input.placeholder",
        ),
        (
            "Explain\u{0008}\u{0008} this".to_owned(),
            "input.control_chars",
        ),
        (
            "Is user\u{200B}name valid?".to_owned(),
            "input.invisible_chars",
        ),
        (
            "The cafÃ© menu lists crÃ¨me brÃ»lÃ©e".to_owned(),
            "input.encoding",
        ),
        (
            (0..7000).map(|i| format!("w{i} ")).collect::<String>(),
            "input.too_long",
        ),
    ];
    for (prompt, code) in &cases {
        let out = f.check_input(prompt, &[]).expect("allowed with an alert");
        assert_eq!(out.redacted, None);
        let codes: Vec<&str> = out.alerts.iter().map(|a| a.code.as_str()).collect();
        assert_eq!(codes, [*code], "for {:?}", &prompt[..prompt.len().min(60)]);
    }
    let e = f.check_input("   \n ", &[]).unwrap_err().to_string();
    assert!(
        e.contains("rejected the prompt") && e.contains("blank"),
        "{e}"
    );
}

#[test]
fn input_check_passes_ordinary_prompts() {
    let (_host, f) = input_check();
    let fine = [
        "What's the difference between a mutex and a semaphore? (Short answer, please.)",
        "Rank these: 1) speed 2) cost 3) quality :) thanks",
        "Write a haiku about the sea.\n\nMake it melancholic.",
        "In `fn main() { let v = vec![1, 2]; }`, why is `v` immutable?",
        "She wrote \u{201C}see you soon\u{201D} and left. It's fine.",
        "Compare crème brûlée and flan.",
        "ok ok ok ok",
    ];
    for p in fine {
        let out = f.check_input(p, &[]).expect("allowed");
        assert!(out.alerts.is_empty(), "{p:?}: {:?}", out.alerts);
    }
    // The answer side passes text through untouched.
    let mut out = f.output(&[]);
    assert_eq!(out.push("Hello (world").expect("pass").text, "Hello (world");
    assert_eq!(out.finish().expect("finish").text, "");
}
