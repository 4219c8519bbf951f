//! `plugin_params`: the per-request parameters a client gives the plugins of a request, checked
//! and turned into the (key, JSON text) pairs the plugin interface passes (WIT `params`).

use std::collections::HashMap;

use zbus::{OwnedVariant, Str, Variant};

use crate::MoedError;
use crate::options::{integer, invalid, too_long, type_name, unwrap_variant};
use crate::wire::{self, limits::NAME};

/// Most entries of `plugin_params`.
pub const MAX_PLUGIN_PARAMS: usize = 64;
/// Most bytes of one `plugin_params` value (as JSON text).
pub const MAX_PLUGIN_PARAM_BYTES: usize = 16 * 1024;
/// Most bytes of all `plugin_params` values together (as JSON text).
pub const MAX_PLUGIN_PARAMS_TOTAL: usize = 256 * 1024;

/// `plugin_params`: the parameters a request gives its plugins, each plugin reading the keys
/// it knows (by convention prefixed with its name, `expert_budget.k`). Plugins receive every
/// value as JSON text. As `a{ss}`, each value *is* JSON text (`"1"`, `"[3, 5]"`, `"\"x\""`)
/// and must parse; as `a{sv}`, each value is converted: booleans, integers and doubles to
/// JSON numbers and booleans, strings to JSON strings, arrays to JSON arrays, `a{sv}`/`a{ss}`
/// to JSON objects. Keys are non-empty, at most [`MAX_PLUGIN_PARAMS`] of them, each value at
/// most [`MAX_PLUGIN_PARAM_BYTES`] of JSON and all of them at most [`MAX_PLUGIN_PARAMS_TOTAL`].
/// The entry count is checked before any entry is looked at, and a JSON text's length before it
/// is parsed. Returned sorted by key.
pub fn plugin_params(key: &str, value: &Variant<'_>) -> Result<Vec<(String, String)>, MoedError> {
    let Variant::Dict(dict) = value else {
        return Err(invalid(
            key,
            &format!(
                "expected a dictionary a{{sv}} or a{{ss}}, got type {}",
                type_name(value)
            ),
        ));
    };
    // The dictionary is a BTreeMap underneath: counting is bounded by the limit, not the size.
    let count = dict.iter().take(MAX_PLUGIN_PARAMS + 1).count();
    if count > MAX_PLUGIN_PARAMS {
        return Err(invalid(
            key,
            &format!("more than {MAX_PLUGIN_PARAMS} parameters, at most {MAX_PLUGIN_PARAMS}"),
        ));
    }
    let mut out: Vec<(String, String)> = Vec::with_capacity(count);
    let mut total = 0usize;
    for (k, v) in dict.iter() {
        let Variant::Str(name) = unwrap_variant(k) else {
            return Err(invalid(
                key,
                &format!("keys must be strings, got type {}", type_name(k)),
            ));
        };
        if name.len() > NAME {
            return Err(too_long(&format!("{key} key"), name.as_str(), NAME));
        }
        let name = name.to_string();
        let what = format!("{key}.{name}");
        if name.trim().is_empty() {
            return Err(invalid(key, "a parameter name must not be empty"));
        }
        // A string longer than the limit is refused before it is parsed or converted (as JSON
        // it would only grow).
        if let Variant::Str(text) = unwrap_variant(v)
            && text.len() > MAX_PLUGIN_PARAM_BYTES
        {
            return Err(too_long(&what, text.as_str(), MAX_PLUGIN_PARAM_BYTES));
        }
        let json = match v {
            // a{ss}: the value is JSON text already.
            Variant::Str(text) => {
                let text = text.to_string();
                serde_json::from_str::<serde_json::Value>(&text).map_err(|e| {
                    let q = wire::quote(&text);
                    invalid(
                        &what,
                        &format!(
                            "{q} is not JSON ({e}); with a{{ss}} every value is JSON text, so a string is written with quotes, e.g. '\"text\"'"
                        ),
                    )
                })?;
                text
            }
            other => to_json(&what, unwrap_variant(other))?.to_string(),
        };
        if json.len() > MAX_PLUGIN_PARAM_BYTES {
            return Err(invalid(
                &what,
                &format!(
                    "{} bytes of JSON, at most {MAX_PLUGIN_PARAM_BYTES}",
                    json.len()
                ),
            ));
        }
        total += json.len();
        if total > MAX_PLUGIN_PARAMS_TOTAL {
            return Err(invalid(
                key,
                &format!("more than {MAX_PLUGIN_PARAMS_TOTAL} bytes of JSON in all"),
            ));
        }
        out.push((name, json));
    }
    out.sort();
    Ok(out)
}

/// A variant of `plugin_params` (`a{sv}`) as JSON.
fn to_json(key: &str, value: &Variant<'_>) -> Result<serde_json::Value, MoedError> {
    use serde_json::Value;
    if let Some(i) = integer(value) {
        return Ok(match i64::try_from(i) {
            Ok(v) => Value::from(v),
            Err(_) => Value::from(i as u64),
        });
    }
    Ok(match value {
        Variant::Bool(b) => Value::Bool(*b),
        Variant::F64(f) => serde_json::Number::from_f64(*f)
            .map(Value::Number)
            .ok_or_else(|| invalid(key, &format!("{f} is not a finite number")))?,
        Variant::Str(s) => Value::String(s.to_string()),
        Variant::Array(items) => Value::Array(
            items
                .inner()
                .iter()
                .map(|item| to_json(key, unwrap_variant(item)))
                .collect::<Result<_, _>>()?,
        ),
        Variant::Dict(dict) => {
            let mut map = serde_json::Map::new();
            for (k, v) in dict.iter() {
                let Variant::Str(name) = unwrap_variant(k) else {
                    return Err(invalid(key, "keys of a nested dictionary must be strings"));
                };
                map.insert(name.to_string(), to_json(key, unwrap_variant(v))?);
            }
            Value::Object(map)
        }
        other => {
            return Err(invalid(
                key,
                &format!(
                    "type {} has no JSON form; use booleans, numbers, strings, arrays or dictionaries",
                    type_name(other)
                ),
            ));
        }
    })
}

/// `plugin_params` as a client sends them: `a{ss}` of JSON text.
pub(crate) fn params_dict(params: &[(String, String)]) -> OwnedVariant {
    let map: HashMap<String, String> = params.iter().cloned().collect();
    OwnedVariant::try_from(Variant::from(map)).unwrap_or_else(|_| OwnedVariant::from(Str::from("")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::GenerateOptions;
    use crate::options::OptionDict;

    fn dict(pairs: Vec<(&str, OwnedVariant)>) -> OptionDict {
        pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }

    fn err_of(pairs: Vec<(&str, OwnedVariant)>) -> String {
        match GenerateOptions::from_dict(&dict(pairs)) {
            Err(MoedError::InvalidArgument(m)) => m,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    fn params_of(value: OwnedVariant) -> Result<Vec<(String, String)>, MoedError> {
        GenerateOptions::from_dict(&dict(vec![("plugin_params", value)])).map(|o| o.plugin_params)
    }

    #[test]
    fn plugin_params_as_typed_variants_or_json_text() {
        let mut typed: HashMap<String, OwnedVariant> = HashMap::new();
        typed.insert("expert_budget.k".into(), OwnedVariant::from(1u32));
        typed.insert(
            "expert_budget.masked".into(),
            OwnedVariant::try_from(Variant::from(vec![3i32, 5])).expect("array"),
        );
        typed.insert("name".into(), OwnedVariant::from(Str::from("x")));
        typed.insert("on".into(), OwnedVariant::from(true));
        typed.insert("ratio".into(), OwnedVariant::from(0.5f64));
        let typed = OwnedVariant::try_from(Variant::from(typed)).expect("a{sv}");
        assert_eq!(
            params_of(typed).expect("valid"),
            [
                ("expert_budget.k".to_string(), "1".to_string()),
                ("expert_budget.masked".into(), "[3,5]".into()),
                ("name".into(), "\"x\"".into()),
                ("on".into(), "true".into()),
                ("ratio".into(), "0.5".into()),
            ]
        );
        let mut text: HashMap<String, String> = HashMap::new();
        text.insert("expert_budget.masked".into(), "[3, 5]".into());
        let text = OwnedVariant::try_from(Variant::from(text)).expect("a{ss}");
        assert_eq!(
            params_of(text).expect("valid"),
            [("expert_budget.masked".to_string(), "[3, 5]".to_string())]
        );
        // JSON text that does not parse, a wrong type, an empty key: InvalidArgument naming it.
        let mut bad: HashMap<String, String> = HashMap::new();
        bad.insert("expert_budget.k".into(), "one".into());
        let bad = OwnedVariant::try_from(Variant::from(bad)).expect("a{ss}");
        match params_of(bad) {
            Err(MoedError::InvalidArgument(m)) => {
                assert!(m.contains("'plugin_params.expert_budget.k'"), "{m}")
            }
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
        assert!(
            err_of(vec![(
                "plugin_params",
                OwnedVariant::from(Str::from("k=1"))
            )])
            .contains("'plugin_params'")
        );
        let mut empty: HashMap<String, u32> = HashMap::new();
        empty.insert(" ".into(), 1);
        let empty = OwnedVariant::try_from(Variant::from(empty)).expect("a{su}");
        assert!(params_of(empty).is_err());
    }
}

#[cfg(test)]
mod limit_tests {
    use super::*;
    use crate::GenerateOptions;
    use crate::options::OptionDict;

    fn message_of(value: OwnedVariant) -> String {
        let dict: OptionDict = [("plugin_params".to_string(), value)].into_iter().collect();
        match GenerateOptions::from_dict(&dict) {
            Err(MoedError::InvalidArgument(m)) => m,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn a_twenty_megabyte_value_is_refused_with_a_short_message() {
        for text in [
            "x".repeat(20_000_000),
            format!("[{}]", "1,".repeat(10_000_000)),
        ] {
            let mut map: HashMap<String, String> = HashMap::new();
            map.insert("pii_redact.skip".into(), text);
            let m = message_of(OwnedVariant::try_from(Variant::from(map)).expect("a{ss}"));
            assert!(m.contains("'plugin_params.pii_redact.skip'"), "{m}");
            assert!(
                m.contains(&format!("at most {MAX_PLUGIN_PARAM_BYTES}")),
                "{m}"
            );
            assert!(m.len() < 512, "{} bytes", m.len());
        }
    }

    #[test]
    fn non_json_text_is_quoted_once_and_short() {
        let mut map: HashMap<String, String> = HashMap::new();
        map.insert("k".into(), "y".repeat(MAX_PLUGIN_PARAM_BYTES));
        let m = message_of(OwnedVariant::try_from(Variant::from(map)).expect("a{ss}"));
        assert!(m.contains("is not JSON"), "{m}");
        // One quote of at most 64 bytes, not the value (today's message had it twice, whole).
        assert_eq!(m.matches(&"y".repeat(64)).count(), 1, "{m}");
        assert!(!m.contains(&"y".repeat(65)), "{m}");
        assert!(m.len() < 512, "{} bytes", m.len());
    }

    #[test]
    fn too_many_or_too_big_in_all_are_refused() {
        let many: HashMap<String, u32> = (0..100_000).map(|i| (format!("k{i}"), i)).collect();
        let m = message_of(OwnedVariant::try_from(Variant::from(many)).expect("a{su}"));
        assert!(m.contains(&format!("at most {MAX_PLUGIN_PARAMS}")), "{m}");
        let big: HashMap<String, String> = (0..MAX_PLUGIN_PARAMS)
            .map(|i| (format!("k{i}"), format!("\"{}\"", "v".repeat(10_000))))
            .collect();
        let m = message_of(OwnedVariant::try_from(Variant::from(big)).expect("a{ss}"));
        assert!(
            m.contains(&format!("{MAX_PLUGIN_PARAMS_TOTAL} bytes")),
            "{m}"
        );
        let mut long_key: HashMap<String, u32> = HashMap::new();
        long_key.insert("k".repeat(1_000_000), 1);
        let m = message_of(OwnedVariant::try_from(Variant::from(long_key)).expect("a{su}"));
        assert!(m.contains("1000000 bytes") && m.len() < 512, "{m}");
    }
}
