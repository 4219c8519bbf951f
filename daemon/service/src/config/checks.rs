//! The checks every configuration section uses for its values; each error names its key.

use std::path::PathBuf;

use super::ConfigError;
use super::sections::RawByteSize;
use crate::bytesize::ByteSize;

pub(in crate::config) fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        message: message.into(),
    }
}

/// An integer: `default` when unset, else from `min` to `max`.
pub(in crate::config) fn int_in(
    key: &str,
    value: Option<i64>,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) if v < min as i64 || v as u64 > max => Err(invalid(
            key,
            format!("{v} is out of range; expected {min} to {max}"),
        )),
        Some(v) => Ok(v as u64),
    }
}

/// A byte count, as a number or a text such as `"512MiB"` (`examples` shows the key's own when
/// the text is not one); `None` when unset.
pub(in crate::config) fn byte_count(
    key: &str,
    value: Option<RawByteSize>,
    examples: &str,
) -> Result<Option<u64>, ConfigError> {
    match value {
        None => Ok(None),
        Some(RawByteSize::Bytes(b)) if b < 0 => Err(invalid(key, format!("{b} is negative"))),
        Some(RawByteSize::Bytes(b)) => Ok(Some(b as u64)),
        Some(RawByteSize::Text(t)) => match parse_bytes(&t) {
            Some(b) => Ok(Some(b)),
            None => Err(invalid(
                key,
                format!("'{t}' is not a byte count (examples: {examples})"),
            )),
        },
    }
}

/// An absolute path; unset or empty is `None`.
pub(in crate::config) fn absolute_path(
    key: &str,
    value: Option<String>,
) -> Result<Option<PathBuf>, ConfigError> {
    match value {
        None => Ok(None),
        Some(p) if p.is_empty() => Ok(None),
        Some(p) => {
            let path = PathBuf::from(&p);
            if !path.is_absolute() {
                return Err(invalid(key, format!("'{p}' is not an absolute path")));
            }
            Ok(Some(path))
        }
    }
}

/// A byte count as configuration writes it (see [`ByteSize`]: `2G` is 2·10⁹, `2GiB` 2³¹).
pub(in crate::config) fn parse_bytes(text: &str) -> Option<u64> {
    text.parse::<ByteSize>().ok().map(ByteSize::bytes)
}
