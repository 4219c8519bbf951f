//! Property tests of the option parser: whatever dictionary a client sends, parsing never panics,
//! and every refusal is `InvalidArgument` naming a key, within the error-message limit.

use std::collections::HashMap;

use moed_dbus::options::{GENERATE_OPTION_KEYS, OptionDict, SCORE_OPTION_KEYS};
use moed_dbus::wire::limits::ERROR_MESSAGE;
use moed_dbus::{GenerateOptions, MoedError, ScoreOptions};
use proptest::prelude::*;
use zbus::{OwnedVariant, Str, Variant};

/// Values of every shape a client can put into `a{sv}`: scalars, strings with NULs and
/// controls, long strings, string arrays, number arrays, `a{ss}` and `a{sv}` dictionaries.
fn value() -> impl Strategy<Value = OwnedVariant> {
    let text = prop_oneof![
        ".{0,24}",
        "[a-z_.]{1,12}",
        Just(String::new()),
        Just("\0\n\u{1b}".to_string()),
        (0usize..70_000).prop_map(|n| "x".repeat(n)),
    ];
    prop_oneof![
        any::<bool>().prop_map(OwnedVariant::from),
        any::<u8>().prop_map(OwnedVariant::from),
        any::<i32>().prop_map(OwnedVariant::from),
        any::<u32>().prop_map(OwnedVariant::from),
        any::<i64>().prop_map(OwnedVariant::from),
        any::<u64>().prop_map(OwnedVariant::from),
        any::<f64>().prop_map(OwnedVariant::from),
        text.clone().prop_map(|s| OwnedVariant::from(Str::from(s))),
        prop::collection::vec(text.clone(), 0..40).prop_map(|v| variant(Variant::from(v))),
        prop::collection::vec(any::<i32>(), 0..8).prop_map(|v| variant(Variant::from(v))),
        prop::collection::hash_map(text.clone(), text.clone(), 0..80)
            .prop_map(|m| variant(Variant::from(m))),
        prop::collection::hash_map(text, any::<i64>(), 0..80)
            .prop_map(|m| variant(Variant::from(m))),
    ]
}

fn variant(v: Variant<'_>) -> OwnedVariant {
    OwnedVariant::try_from(v).unwrap_or_else(|_| OwnedVariant::from(false))
}

fn dict(known: &'static [&'static str]) -> impl Strategy<Value = OptionDict> {
    let key = prop_oneof![
        4 => prop::sample::select(known).prop_map(str::to_string),
        1 => ".{0,16}",
        1 => (0usize..100_000).prop_map(|n| "k".repeat(n)),
    ];
    prop::collection::hash_map(key, value(), 0..6).prop_map(|m| m.into_iter().collect())
}

fn check(result: Result<(), MoedError>) -> Result<(), TestCaseError> {
    match result {
        Ok(()) => Ok(()),
        Err(MoedError::InvalidArgument(m)) => {
            prop_assert!(m.len() <= ERROR_MESSAGE, "{} bytes", m.len());
            prop_assert!(m.contains("option '"), "names no key: {m}");
            Ok(())
        }
        Err(other) => Err(TestCaseError::fail(format!(
            "not InvalidArgument: {other:?}"
        ))),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, max_shrink_iters: 64, ..ProptestConfig::default() })]

    #[test]
    fn generate_options_never_panic_and_name_the_key(d in dict(GENERATE_OPTION_KEYS)) {
        check(GenerateOptions::from_dict(&d).map(|o| {
            // What parses writes back to the same options.
            let again = GenerateOptions::from_dict(&o.to_dict());
            assert_eq!(again.ok(), Some(o));
        }))?;
    }

    #[test]
    fn score_options_never_panic_and_name_the_key(d in dict(SCORE_OPTION_KEYS)) {
        check(ScoreOptions::from_dict(&d).map(|_| ()))?;
    }
}

#[test]
fn the_generators_reach_valid_options() {
    // A guard against a strategy that only ever produces refusals.
    let mut d: OptionDict = HashMap::new();
    d.insert("max_tokens".into(), OwnedVariant::from(3u32));
    assert!(GenerateOptions::from_dict(&d).is_ok());
}
