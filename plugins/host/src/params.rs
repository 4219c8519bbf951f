//! Which of a request's parameters a plugin's error names: such an error is the caller's
//! mistake (a value the plugin refuses), not a failure of the plugin.

use crate::bounds;
use crate::error::CallFailure;

/// A plugin's `err` result: [`CallFailure::Param`] when it names one of `params`' keys (see
/// [`named_param`]), else [`CallFailure::Plugin`]. The text is bounded before it is searched.
pub(crate) fn plugin_error(message: String, params: &[(String, String)]) -> CallFailure {
    let message = bounds::detail(&message);
    match named_param(&message, params) {
        Some(key) => CallFailure::Param {
            key: bounds::line(key, 256),
            message,
        },
        None => CallFailure::Plugin(message),
    }
}

/// The first of `params`' keys that `text` names as a whole word (as the SDK's `param_json`
/// errors do: `parameter 'expert_budget.k': ...`): not inside a longer name, where a name is
/// letters, digits, `_`, `-` and `.` (a key ending a sentence, `... expert_budget.k.`, counts).
pub fn named_param<'a>(text: &str, params: &'a [(String, String)]) -> Option<&'a str> {
    let part_of_name = |c: char| c.is_alphanumeric() || matches!(c, '_' | '-' | '.');
    params.iter().map(|(k, _)| k.as_str()).find(|key| {
        !key.is_empty()
            && text.match_indices(key).any(|(at, _)| {
                let before = text[..at].chars().next_back();
                let rest = &text[at + key.len()..];
                let after_ok = match rest.chars().next() {
                    None => true,
                    Some('.') => !rest[1..].chars().next().is_some_and(part_of_name),
                    Some(c) => !part_of_name(c),
                };
                !before.is_some_and(part_of_name) && after_ok
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(keys: &[&str]) -> Vec<(String, String)> {
        keys.iter().map(|k| (k.to_string(), "1".into())).collect()
    }

    #[test]
    fn a_failure_names_a_parameter_only_as_a_whole_word() {
        let p = params(&["expert_budget.k", "expert_budget.masked"]);
        let named = |text: &str| named_param(text, &p);
        assert_eq!(
            named("parameter 'expert_budget.k': invalid type: string \"abc\", expected u32"),
            Some("expert_budget.k")
        );
        assert_eq!(
            named("expert_budget.k = 99 is more than the model's top-2"),
            Some("expert_budget.k")
        );
        assert_eq!(
            named("too many experts in expert_budget.masked."),
            Some("expert_budget.masked")
        );
        assert_eq!(named("parameter 'expert_budget.kx': bad"), None);
        assert_eq!(named("parameter 'my.expert_budget.k': bad"), None);
        assert_eq!(named("expert_budget.k.extra is unknown"), None);
        assert_eq!(named("the plugin ran out of memory"), None);
        assert_eq!(named_param("parameter 'x': bad", &[]), None);
    }

    #[test]
    fn an_error_naming_a_parameter_is_the_callers_and_bounded() {
        let p = params(&["expert_budget.k"]);
        let failure = plugin_error("parameter 'expert_budget.k': bad".into(), &p);
        assert!(failure.is_callers(), "{failure:?}");
        assert!(matches!(&failure, CallFailure::Param { key, .. } if key == "expert_budget.k"));
        let other = plugin_error("no such layer".into(), &p);
        assert_eq!(other, CallFailure::Plugin("no such layer".into()));
        assert!(!other.is_callers());
        let huge = format!("expert_budget.k {}", "x".repeat(1 << 20));
        let CallFailure::Param { message, .. } = plugin_error(huge, &p) else {
            panic!("not a parameter error");
        };
        assert!(
            message.len() <= moed_wire::limits::PLUGIN_DETAIL,
            "{}",
            message.len()
        );
    }
}
