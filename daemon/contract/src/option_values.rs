//! Reading single values out of option variants: integer widths, numbers, booleans, strings
//! bounded before they are copied, and the `InvalidArgument` messages that name the key.

use zbus::{OwnedVariant, Str, Variant};

use crate::MoedError;
use crate::wire;

pub(crate) fn string_array(items: &[String]) -> OwnedVariant {
    // A Vec<String> always converts: strings need no fds and no signature checks.
    OwnedVariant::try_from(Variant::from(items.to_vec()))
        .unwrap_or_else(|_| OwnedVariant::from(Str::from("")))
}

/// `gdbus` and some bindings wrap values once more (`v` inside `v`).
pub(crate) fn unwrap_variant<'a, 'b>(value: &'a Variant<'b>) -> &'a Variant<'b> {
    let mut v = value;
    while let Variant::Variant(inner) = v {
        v = inner;
    }
    v
}

pub(crate) fn type_name(value: &Variant<'_>) -> String {
    format!("'{}'", value.value_signature())
}

/// `InvalidArgument` naming the option; the key is quoted (a `plugin_params` key is the
/// client's own text and may be of any length).
pub(crate) fn invalid(key: &str, why: &str) -> MoedError {
    MoedError::InvalidArgument(format!("option {}: {why}", wire::quote(key)))
}

pub(crate) fn unknown_key(key: &str, known: &[&str]) -> MoedError {
    MoedError::InvalidArgument(format!(
        "unknown option {}; known options: {}",
        wire::quote(key),
        known.join(", ")
    ))
}

/// `InvalidArgument` for a string over its byte limit, quoting only its start.
pub(crate) fn too_long(key: &str, s: &str, max_bytes: usize) -> MoedError {
    invalid(
        key,
        &format!("{} is too long: at most {max_bytes} bytes", wire::quote(s)),
    )
}

pub(crate) fn integer(value: &Variant<'_>) -> Option<i128> {
    Some(match value {
        Variant::U8(v) => *v as i128,
        Variant::I16(v) => *v as i128,
        Variant::U16(v) => *v as i128,
        Variant::I32(v) => *v as i128,
        Variant::U32(v) => *v as i128,
        Variant::I64(v) => *v as i128,
        Variant::U64(v) => *v as i128,
        _ => return None,
    })
}

pub(crate) fn uint(key: &str, value: &Variant<'_>, min: u64, max: u64) -> Result<u64, MoedError> {
    let v = integer(value).ok_or_else(|| {
        invalid(
            key,
            &format!("expected an integer, got type {}", type_name(value)),
        )
    })?;
    if v < min as i128 || v > max as i128 {
        return Err(invalid(
            key,
            &format!("{v} is out of range; expected {min} to {max}"),
        ));
    }
    Ok(v as u64)
}

pub(crate) fn float(
    key: &str,
    value: &Variant<'_>,
    rule: &super::FloatRule,
) -> Result<f64, MoedError> {
    let v = match value {
        Variant::F64(v) => *v,
        other => match integer(other) {
            Some(i) => i as f64,
            None => {
                return Err(invalid(
                    key,
                    &format!("expected a number, got type {}", type_name(value)),
                ));
            }
        },
    };
    rule.check(v).map_err(|reason| invalid(key, &reason))
}

pub(crate) fn boolean(key: &str, value: &Variant<'_>) -> Result<bool, MoedError> {
    match value {
        Variant::Bool(b) => Ok(*b),
        other => Err(invalid(
            key,
            &format!("expected a boolean, got type {}", type_name(other)),
        )),
    }
}

/// A string, unbounded: for administrators' calls (client options use [`bounded_string`]).
pub(crate) fn string(key: &str, value: &Variant<'_>) -> Result<String, MoedError> {
    bounded_string(key, value, usize::MAX)
}

/// Strings, unbounded: for administrators' calls (client options use [`bounded_strings`]).
pub(crate) fn strings(key: &str, value: &Variant<'_>) -> Result<Vec<String>, MoedError> {
    bounded_strings(key, value, usize::MAX, usize::MAX)
}

/// A string of at most `max_bytes` bytes (checked before it is copied).
pub(crate) fn bounded_string(
    key: &str,
    value: &Variant<'_>,
    max_bytes: usize,
) -> Result<String, MoedError> {
    match value {
        Variant::Str(s) if s.len() > max_bytes => Err(too_long(key, s.as_str(), max_bytes)),
        Variant::Str(s) => Ok(s.to_string()),
        other => Err(invalid(
            key,
            &format!("expected a string, got type {}", type_name(other)),
        )),
    }
}

/// One string or an array of at most `max_count` strings of at most `max_bytes` bytes each; the
/// count is checked before any element is looked at.
pub(crate) fn bounded_strings(
    key: &str,
    value: &Variant<'_>,
    max_count: usize,
    max_bytes: usize,
) -> Result<Vec<String>, MoedError> {
    match value {
        Variant::Str(_) => Ok(vec![bounded_string(key, value, max_bytes)?]),
        Variant::Array(items) if items.len() > max_count => Err(invalid(
            key,
            &format!("{} entries, at most {max_count}", items.len()),
        )),
        Variant::Array(items) => items
            .inner()
            .iter()
            .map(|item| match unwrap_variant(item) {
                s @ Variant::Str(_) => bounded_string(key, s, max_bytes),
                other => Err(invalid(
                    key,
                    &format!(
                        "expected strings, got an element of type {}",
                        type_name(other)
                    ),
                )),
            })
            .collect(),
        other => Err(invalid(
            key,
            &format!("expected a string array, got type {}", type_name(other)),
        )),
    }
}
