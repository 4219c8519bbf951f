//! The checks, as plain functions over the prompt text.

/// One likely mistake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub code: &'static str,
    pub message: String,
}

fn finding(code: &'static str, message: String) -> Finding {
    Finding { code, message }
}

/// Every finding for `prompt`, in a fixed order.
pub fn check(prompt: &str, max_chars: usize, min_repeat: usize) -> Vec<Finding> {
    let mut out = Vec::new();
    if prompt.trim().is_empty() {
        let what = if prompt.is_empty() {
            "empty"
        } else {
            "blank (only whitespace)"
        };
        out.push(finding("input.empty", format!("the prompt is {what}")));
        return out;
    }
    let chars = prompt.chars().count();
    if chars > max_chars {
        out.push(finding(
            "input.too_long",
            format!("the prompt is {chars} characters, more than the {max_chars} expected"),
        ));
    }
    out.extend(control_chars(prompt));
    out.extend(unbalanced(prompt));
    if prompt.matches("```").count() % 2 == 1 {
        out.push(finding(
            "input.code_fence",
            "a ``` code fence is opened but not closed".into(),
        ));
    }
    out.extend(repeated(prompt, min_repeat));
    out.extend(placeholder(prompt));
    out.extend(encoding(prompt));
    out
}

fn control_chars(s: &str) -> Vec<Finding> {
    let control = s
        .chars()
        .filter(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        .count();
    // Bidirectional overrides reorder what is shown ("Trojan Source"); zero-width characters hide.
    let invisible = s
        .chars()
        .filter(|c| matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}'))
        .count();
    let mut out = Vec::new();
    if control > 0 {
        out.push(finding(
            "input.control_chars",
            format!("the prompt contains {control} control character(s)"),
        ));
    }
    if invisible > 0 {
        out.push(finding(
            "input.invisible_chars",
            format!("the prompt contains {invisible} invisible or direction-changing character(s)"),
        ));
    }
    out
}

/// `)` that closes no bracket but is an emoticon (`:)`) or a list marker (`1)`, `a)`).
fn ignorable_close(prev: &[char]) -> bool {
    match prev {
        [.., ':' | ';' | '='] | [.., ':' | ';', '-'] => true,
        [.., before, c] if c.is_alphanumeric() && (before.is_whitespace()) => true,
        [c] if c.is_alphanumeric() => true,
        _ => false,
    }
}

fn unbalanced(s: &str) -> Vec<Finding> {
    let mut stack: Vec<char> = Vec::new();
    let mut stray: Vec<char> = Vec::new();
    let mut prev: Vec<char> = Vec::new();
    let mut in_code = false;
    let mut ticks = 0;
    for c in s.chars() {
        // Brackets inside `inline code` and ``` blocks are not prose.
        if c == '`' {
            ticks += 1;
            prev.push(c);
            continue;
        }
        if ticks == 1 || ticks == 3 {
            in_code = !in_code;
        }
        ticks = 0;
        // `ESC [` starts a terminal escape sequence, not a bracket.
        let escape = c == '[' && prev.last() == Some(&'\u{1b}');
        if !in_code && !escape {
            match c {
                '(' | '[' | '{' => stack.push(c),
                ')' | ']' | '}' => {
                    let open = match c {
                        ')' => '(',
                        ']' => '[',
                        _ => '{',
                    };
                    if stack.last() == Some(&open) {
                        stack.pop();
                    } else if !(c == ')' && ignorable_close(&prev[prev.len().saturating_sub(2)..]))
                    {
                        stray.push(c);
                    }
                }
                _ => {}
            }
        }
        prev.push(c);
    }
    let mut out = Vec::new();
    if !stack.is_empty() || !stray.is_empty() {
        let mut parts = Vec::new();
        if !stack.is_empty() {
            parts.push(format!(
                "{} unclosed ({})",
                stack.len(),
                stack.iter().collect::<String>()
            ));
        }
        if !stray.is_empty() {
            parts.push(format!(
                "{} unopened ({})",
                stray.len(),
                stray.iter().collect::<String>()
            ));
        }
        out.push(finding(
            "input.unbalanced",
            format!("brackets do not match: {}", parts.join(", ")),
        ));
    }
    let straight = s.matches('"').count();
    let (open, close) = (s.matches('\u{201C}').count(), s.matches('\u{201D}').count());
    if straight % 2 == 1 || open != close {
        out.push(finding(
            "input.unbalanced",
            "a quotation is opened but not closed".into(),
        ));
    }
    out
}

fn normalize(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn repeated(s: &str, min: usize) -> Vec<Finding> {
    let norm = normalize(s);
    let n = norm.chars().count();
    // The whole prompt is the same text twice (a double paste), with or without a separator.
    if n >= 2 * min {
        let half = norm.len() / 2;
        for mid in [half, half + 1] {
            if mid <= norm.len() && norm.is_char_boundary(mid) {
                let (a, b) = norm.split_at(mid);
                if a.trim() == b.trim() && a.trim().chars().count() >= min {
                    return vec![finding(
                        "input.repeated",
                        "the prompt is the same text pasted twice".into(),
                    )];
                }
            }
        }
    }
    // A paragraph that appears twice.
    let paragraphs: Vec<String> = s
        .split("\n\n")
        .map(normalize)
        .filter(|p| p.chars().count() >= min)
        .collect();
    for (i, p) in paragraphs.iter().enumerate() {
        if paragraphs[..i].contains(p) {
            let head: String = p.chars().take(40).collect();
            return vec![finding(
                "input.repeated",
                format!("a paragraph appears twice (\"{head}...\")"),
            )];
        }
    }
    Vec::new()
}

fn placeholder(s: &str) -> Vec<Finding> {
    let lower = s.to_lowercase();
    let markers = [
        "{{",
        "[insert",
        "<insert",
        "[your ",
        "<your ",
        "lorem ipsum",
        "todo: fill",
        "xxx-xxx",
    ];
    let hit: Vec<&str> = markers
        .iter()
        .copied()
        .filter(|m| lower.contains(m))
        .collect();
    if hit.is_empty() {
        return Vec::new();
    }
    vec![finding(
        "input.placeholder",
        format!(
            "the prompt seems to contain a template placeholder ({})",
            hit.join(", ")
        ),
    )]
}

fn encoding(s: &str) -> Vec<Finding> {
    let replacement = s.contains('\u{FFFD}');
    // UTF-8 read as Latin-1: "Ã©", "â€™" and similar pairs.
    let mojibake = s.chars().zip(s.chars().skip(1)).any(|(a, b)| {
        (a == 'Ã' && ('\u{80}'..='\u{BF}').contains(&b))
            || (a == 'â' && b == '€')
            || (a == 'Ã' && b.is_ascii_punctuation())
    }) || s.contains("Ã©")
        || s.contains("â€");
    if replacement || mojibake {
        vec![finding(
            "input.encoding",
            "the text seems to be wrongly decoded (replacement characters or Ã©-style pairs)"
                .into(),
        )]
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(s: &str) -> Vec<&'static str> {
        check(s, 2000, 40).into_iter().map(|f| f.code).collect()
    }

    #[test]
    fn mistakes_are_found() {
        assert_eq!(codes(""), ["input.empty"]);
        assert_eq!(codes("  \n\t "), ["input.empty"]);
        let long: String = (0..500).map(|i| format!("w{i} ")).collect();
        assert_eq!(codes(&long), ["input.too_long"]);
        assert_eq!(
            codes("Summarize this:\u{7}\u{1b}[31m red"),
            ["input.control_chars"]
        );
        assert_eq!(codes("admin\u{202E}txt.exe"), ["input.invisible_chars"]);
        assert_eq!(codes("Compute f(g(x) for x = 3"), ["input.unbalanced"]);
        assert_eq!(codes("He said \"stop and left."), ["input.unbalanced"]);
        assert_eq!(
            codes("Fix this:\n```rust\nfn main() {}\n"),
            ["input.code_fence"]
        );
        let para = "Please translate the following sentence into French, keeping the tone formal.";
        assert_eq!(codes(&format!("{para}\n{para}")), ["input.repeated"]);
        assert_eq!(codes(&format!("{para} {para}")), ["input.repeated"]);
        assert_eq!(
            codes(&format!("Intro.\n\n{para}\n\nMiddle.\n\n{para}")),
            ["input.repeated"]
        );
        assert_eq!(
            codes("Dear {{name}}, thanks for your order."),
            ["input.placeholder"]
        );
        assert_eq!(codes("The cafÃ© was closed"), ["input.encoding"]);
    }

    #[test]
    fn ordinary_prompts_pass() {
        let fine = [
            "What is the capital of France?",
            "I'm happy with it :) but can you shorten it? (Just a little.)",
            "Steps: 1) open the lid 2) pour the water a) slowly b) carefully",
            "In Rust, `vec![1, 2]` and `map(|x| x)` are common; so is fn f() -> Result<(), E> {}",
            "She said \u{201C}hello\u{201D} and \u{2018}bye\u{2019}. Don't worry, it's fine.",
            "The café in Zürich serves crème brûlée.",
            "Multiply [1, 2; 3, 4] by {5, 6}.",
            "Line one\nLine two\tindented\r\nWindows line",
            "ok ok ok",
        ];
        for f in fine {
            assert_eq!(codes(f), Vec::<&str>::new(), "{f:?}");
        }
    }
}
