//! How large a regular expression becomes once its counted repetitions are unrolled: the bound
//! that keeps `a{100000}` or `(a{1000}){1000}` from costing a worker seconds per token.

use regex_syntax::ParserBuilder;
use regex_syntax::hir::{Hir, HirKind};

/// Deepest nesting of groups and repetitions accepted.
const NEST_LIMIT: u32 = 64;

/// The expanded size of `rx` (literal bytes and classes, repetitions multiplied by their larger
/// bound, or by their lower bound plus one when unbounded), or why it does not parse.
pub(super) fn expanded_size(rx: &str) -> Result<u64, String> {
    let hir = ParserBuilder::new()
        .nest_limit(NEST_LIMIT)
        .build()
        .parse(rx)
        .map_err(|e| e.to_string())?;
    Ok(size(&hir))
}

fn size(hir: &Hir) -> u64 {
    match hir.kind() {
        HirKind::Empty => 0,
        HirKind::Literal(lit) => lit.0.len() as u64,
        HirKind::Class(_) | HirKind::Look(_) => 1,
        HirKind::Repetition(rep) => {
            let times = rep.max.unwrap_or(rep.min.saturating_add(1)).max(1);
            size(&rep.sub).saturating_mul(u64::from(times))
        }
        HirKind::Capture(cap) => size(&cap.sub),
        HirKind::Concat(subs) | HirKind::Alternation(subs) => {
            subs.iter().map(size).fold(0u64, u64::saturating_add)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::expanded_size;

    #[test]
    fn repetitions_multiply_and_nesting_is_bounded() {
        assert_eq!(expanded_size("ab[0-9]").expect("size"), 3);
        assert_eq!(expanded_size("(ab){3}c*").expect("size"), 7);
        assert_eq!(expanded_size("(a{1000}){1000}").expect("size"), 1_000_000);
        assert_eq!(
            expanded_size("((a{1,65535}){65535}){65535}").expect("size"),
            65535u64.pow(3)
        );
        assert!(expanded_size(&format!("{}a{}", "(".repeat(200), ")".repeat(200))).is_err());
        assert!(expanded_size("(unclosed").is_err());
    }
}
