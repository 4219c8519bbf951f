//! Byte counts as people write them in configuration and on the command line.
//!
//! One meaning everywhere: `K`, `M`, `G`, `T` (and `KB`… `TB`) are powers of 1000, `KiB`… `TiB`
//! powers of 1024, as moed.toml documents. Whole numbers only: a byte budget is exact.

use std::fmt;
use std::str::FromStr;

/// A number of bytes parsed from `123`, `512KiB`, `2G`, `2 GiB` (the unit is case-insensitive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn bytes(self) -> u64 {
        self.0
    }
}

/// Why a text is not a byte count.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ByteSizeError {
    #[error(
        "'{0}' is not a byte count (a whole number, optionally with a unit such as KiB, MiB, G)"
    )]
    NotANumber(String),
    #[error(
        "unknown unit '{unit}' in '{text}' (use B, K, KB, KiB, M, MB, MiB, G, GB, GiB, T, TB or TiB)"
    )]
    UnknownUnit { text: String, unit: String },
    #[error("'{0}' is more bytes than fit in 64 bits")]
    Overflow(String),
}

/// The multiplier of a unit, matched without regard to case.
fn unit_multiplier(unit: &str) -> Option<u64> {
    const UNITS: &[(&str, u64)] = &[
        ("", 1),
        ("b", 1),
        ("k", 1000),
        ("kb", 1000),
        ("kib", 1 << 10),
        ("m", 1000 * 1000),
        ("mb", 1000 * 1000),
        ("mib", 1 << 20),
        ("g", 1000 * 1000 * 1000),
        ("gb", 1000 * 1000 * 1000),
        ("gib", 1 << 30),
        ("t", 1000 * 1000 * 1000 * 1000),
        ("tb", 1000 * 1000 * 1000 * 1000),
        ("tib", 1 << 40),
    ];
    let unit = unit.to_ascii_lowercase();
    UNITS.iter().find(|(u, _)| *u == unit).map(|&(_, m)| m)
}

impl FromStr for ByteSize {
    type Err = ByteSizeError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let t = text.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| ByteSizeError::NotANumber(text.to_owned()))?;
        let unit = unit.trim();
        let mult = unit_multiplier(unit).ok_or_else(|| {
            if unit.starts_with(|c: char| c == '.' || c == ',' || c.is_ascii_digit()) {
                ByteSizeError::NotANumber(text.to_owned())
            } else {
                ByteSizeError::UnknownUnit {
                    text: text.to_owned(),
                    unit: unit.to_owned(),
                }
            }
        })?;
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| ByteSizeError::Overflow(text.to_owned()))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Option<u64> {
        s.parse::<ByteSize>().ok().map(ByteSize::bytes)
    }

    #[test]
    fn decimal_letters_and_binary_iec_units() {
        assert_eq!(parse("123"), Some(123));
        assert_eq!(parse("64K"), Some(64_000));
        assert_eq!(parse("512M"), Some(512_000_000));
        assert_eq!(parse("2G"), Some(2_000_000_000));
        assert_eq!(parse("2GB"), Some(2_000_000_000));
        assert_eq!(parse("1T"), Some(1_000_000_000_000));
        assert_eq!(parse("512KiB"), Some(512 << 10));
        assert_eq!(parse("512MiB"), Some(512 << 20));
        assert_eq!(parse("2GiB"), Some(2 << 30));
        assert_eq!(parse("2 gib"), Some(2 << 30));
        assert_eq!(parse("7B"), Some(7));
    }

    #[test]
    fn rejects_fractions_bare_units_unknown_units_and_overflow() {
        assert!(matches!(
            "1.5G".parse::<ByteSize>(),
            Err(ByteSizeError::NotANumber(_))
        ));
        assert!(matches!(
            "G".parse::<ByteSize>(),
            Err(ByteSizeError::NotANumber(_))
        ));
        assert!(matches!(
            "12Q".parse::<ByteSize>(),
            Err(ByteSizeError::UnknownUnit { .. })
        ));
        assert!(matches!(
            "lots".parse::<ByteSize>(),
            Err(ByteSizeError::NotANumber(_))
        ));
        assert!(matches!(
            "-1".parse::<ByteSize>(),
            Err(ByteSizeError::NotANumber(_))
        ));
        assert!(matches!(
            "20000000TiB".parse::<ByteSize>(),
            Err(ByteSizeError::Overflow(_))
        ));
    }
}
