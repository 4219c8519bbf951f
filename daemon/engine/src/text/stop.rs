//! Stop strings matched on streamed text across token boundaries, holding back only what could still become one.

/// Length in bytes of the longest suffix of `text` that is a proper prefix of one of `patterns`
/// (a char boundary of `text`), i.e. how much text must wait for the next chunk before it is safe to
/// release. Shared with the thinking-marker splitter.
pub fn partial_suffix_len<S: AsRef<str>>(text: &str, patterns: &[S]) -> usize {
    let mut best = 0;
    for pattern in patterns {
        let pattern = pattern.as_ref();
        // Longest first, so the first hit is this pattern's answer.
        let longest = pattern.len().saturating_sub(1).min(text.len());
        for len in (best + 1..=longest).rev() {
            let start = text.len() - len;
            if text.is_char_boundary(start)
                && pattern.as_bytes().starts_with(&text.as_bytes()[start..])
            {
                best = len;
                break;
            }
        }
    }
    best
}

/// What one chunk of text produced.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StopStep {
    /// Text that can be released: it is before any stop string and cannot start one.
    pub text: String,
    /// Index into the stop strings of the one that matched; generation ends here and the stop
    /// string itself is not part of the output (as in transformers, vLLM and llama.cpp).
    pub matched: Option<usize>,
}

/// Watches a text stream for stop strings. Only a suffix that is a prefix of some stop string is
/// ever held back, so text flows out as soon as it cannot be part of a match.
#[derive(Debug, Clone)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
    done: bool,
}

impl StopMatcher {
    /// Empty stop strings must be rejected by the caller: they would match before any text.
    pub fn new(stops: Vec<String>) -> Self {
        let stops = stops.into_iter().filter(|s| !s.is_empty()).collect();
        StopMatcher {
            stops,
            held: String::new(),
            done: false,
        }
    }

    pub fn stops(&self) -> &[String] {
        &self.stops
    }

    /// Feeds the next chunk. After a match every further chunk is swallowed.
    pub fn push(&mut self, chunk: &str) -> StopStep {
        if self.done {
            return StopStep::default();
        }
        self.held.push_str(chunk);
        // The earliest match wins; among matches starting at the same place, the first listed.
        let earliest = self
            .stops
            .iter()
            .enumerate()
            .filter_map(|(i, s)| self.held.find(s.as_str()).map(|pos| (pos, i)))
            .min();
        if let Some((pos, index)) = earliest {
            self.done = true;
            let text = self.held[..pos].to_string();
            self.held.clear();
            return StopStep {
                text,
                matched: Some(index),
            };
        }
        let keep = partial_suffix_len(&self.held, &self.stops);
        let release = self.held.len() - keep;
        let text: String = self.held.drain(..release).collect();
        StopStep {
            text,
            matched: None,
        }
    }

    /// Releases text held back when generation ends for another reason.
    pub fn finish(&mut self) -> String {
        if self.done {
            return String::new();
        }
        self.done = true;
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], chunks: &[&str]) -> (String, Option<usize>) {
        let mut m = StopMatcher::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for c in chunks {
            let step = m.push(c);
            out.push_str(&step.text);
            if step.matched.is_some() {
                return (out, step.matched);
            }
        }
        out.push_str(&m.finish());
        (out, None)
    }

    #[test]
    fn partial_suffix_finds_longest_prefix() {
        assert_eq!(partial_suffix_len("abc</th", &["</think>"]), 4);
        assert_eq!(partial_suffix_len("abc<", &["</think>"]), 1);
        assert_eq!(partial_suffix_len("abc", &["</think>"]), 0);
        // A complete pattern is not a *proper* prefix: the matcher handles it.
        assert_eq!(partial_suffix_len("x</think>", &["</think>"]), 0);
        assert_eq!(partial_suffix_len("aXY", &["XYZ", "YQ"]), 2);
        // Multi-byte characters: only char boundaries count.
        assert_eq!(partial_suffix_len("é", &["éa"]), 2);
        assert_eq!(partial_suffix_len("xé", &["\u{e9}b"]), 2);
    }

    #[test]
    fn stop_string_split_across_chunks() {
        assert_eq!(
            run(&["STOP"], &["hello S", "TO", "P world"]),
            ("hello ".into(), Some(0))
        );
    }

    #[test]
    fn releases_text_that_cannot_start_a_stop() {
        let mut m = StopMatcher::new(vec!["\n\nUser:".into()]);
        assert_eq!(m.push("abc").text, "abc");
        assert_eq!(m.push("d\n").text, "d");
        assert_eq!(m.push("\nUs").text, "");
        // The held "\n\nUs" turns out not to be a stop: it is released with what follows.
        assert_eq!(m.push("x").text, "\n\nUsx");
    }

    #[test]
    fn earliest_match_wins() {
        assert_eq!(run(&["bb", "ab"], &["xabb"]), ("x".into(), Some(1)));
    }

    #[test]
    fn held_text_is_flushed_at_finish() {
        assert_eq!(run(&["STOP"], &["abc ST"]), ("abc ST".into(), None));
    }

    #[test]
    fn no_stops_passes_through() {
        assert_eq!(run(&[], &["a", "b"]), ("ab".into(), None));
        // Empty stop strings are ignored, not matched everywhere.
        assert_eq!(run(&[""], &["a"]), ("a".into(), None));
    }

    #[test]
    fn match_at_chunk_start_and_unicode() {
        assert_eq!(run(&["。"], &["你好", "。再见"]), ("你好".into(), Some(0)));
    }
}
