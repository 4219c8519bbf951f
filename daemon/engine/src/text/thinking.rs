//! Splits a reasoning model's streamed output into its thinking section and its answer, by markers.

use super::stop::partial_suffix_len;

/// The package's thinking markers (manifest `thinking`), e.g. `<think>` and `</think>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThinkingMarkers {
    pub start: String,
    pub end: String,
}

/// A piece of output text and which part of the output it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Thinking(String),
    Answer(String),
}

/// Whether a rendered prompt leaves the model inside a thinking section: the last start marker is
/// not followed by an end marker. DeepSeek-R1's template ends its generation prompt with
/// `<｜Assistant｜><think>\n`, so the model's first tokens are already thinking.
pub fn prompt_opens_thinking(prompt: &str, markers: &ThinkingMarkers) -> bool {
    if markers.start.is_empty() {
        return false;
    }
    match prompt.rfind(markers.start.as_str()) {
        Some(pos) => !prompt[pos + markers.start.len()..].contains(markers.end.as_str()),
        None => false,
    }
}

/// Streaming splitter. Markers may arrive split across chunks: a suffix that could still become
/// the marker awaited next is held back until the next chunk decides it. The markers themselves
/// are not reported, nor the whitespace right after one (R1 writes `</think>\n\n` before its
/// answer), so neither part starts with the separator.
#[derive(Debug, Clone)]
pub struct ThinkingSplitter {
    markers: Option<ThinkingMarkers>,
    inside: bool,
    held: String,
    skip_whitespace: bool,
}

impl ThinkingSplitter {
    /// `starts_inside`: the prompt already opened the thinking section.
    pub fn new(markers: Option<ThinkingMarkers>, starts_inside: bool) -> Self {
        let markers = markers.filter(|m| !m.start.is_empty() && !m.end.is_empty());
        let inside = starts_inside && markers.is_some();
        ThinkingSplitter {
            markers,
            inside,
            held: String::new(),
            skip_whitespace: inside,
        }
    }

    pub fn is_inside(&self) -> bool {
        self.inside
    }

    pub fn push(&mut self, chunk: &str) -> Vec<Segment> {
        let mut out = Vec::new();
        let Some(markers) = self.markers.clone() else {
            if !chunk.is_empty() {
                out.push(Segment::Answer(chunk.to_string()));
            }
            return out;
        };
        self.held.push_str(chunk);
        loop {
            if self.skip_whitespace {
                let trimmed = self.held.trim_start().len();
                self.held.drain(..self.held.len() - trimmed);
                if self.held.is_empty() {
                    return out;
                }
                self.skip_whitespace = false;
            }
            let awaited = if self.inside {
                &markers.end
            } else {
                &markers.start
            };
            if let Some(pos) = self.held.find(awaited.as_str()) {
                let before: String = self.held.drain(..pos).collect();
                self.held.drain(..awaited.len());
                self.emit(&mut out, before);
                self.inside = !self.inside;
                self.skip_whitespace = true;
                continue;
            }
            let keep = partial_suffix_len(&self.held, std::slice::from_ref(awaited));
            let release: String = self.held.drain(..self.held.len() - keep).collect();
            self.emit(&mut out, release);
            return out;
        }
    }

    /// Releases whatever is held when the output ends (an unfinished marker is plain text).
    pub fn finish(&mut self) -> Vec<Segment> {
        let mut out = Vec::new();
        let rest = std::mem::take(&mut self.held);
        self.emit(&mut out, rest);
        out
    }

    fn emit(&self, out: &mut Vec<Segment>, text: String) {
        if text.is_empty() {
            return;
        }
        out.push(if self.inside {
            Segment::Thinking(text)
        } else {
            Segment::Answer(text)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn think() -> ThinkingMarkers {
        ThinkingMarkers {
            start: "<think>".into(),
            end: "</think>".into(),
        }
    }

    /// Feeds the chunks and joins the segments: (thinking, answer).
    fn split(inside: bool, chunks: &[&str]) -> (String, String) {
        let mut s = ThinkingSplitter::new(Some(think()), inside);
        let mut segments = Vec::new();
        for c in chunks {
            segments.extend(s.push(c));
        }
        segments.extend(s.finish());
        let (mut t, mut a) = (String::new(), String::new());
        for seg in segments {
            match seg {
                Segment::Thinking(x) => t.push_str(&x),
                Segment::Answer(x) => a.push_str(&x),
            }
        }
        (t, a)
    }

    #[test]
    fn detects_prompt_that_opens_thinking() {
        let m = think();
        assert!(prompt_opens_thinking(
            "<｜User｜>hi<｜Assistant｜><think>\n",
            &m
        ));
        assert!(!prompt_opens_thinking(
            "<think>a</think>b<｜Assistant｜>",
            &m
        ));
        assert!(!prompt_opens_thinking("plain prompt", &m));
    }

    #[test]
    fn markers_in_output() {
        assert_eq!(
            split(false, &["<think>\nLet me see.", "</think>\n\nThe answer."]),
            ("Let me see.".into(), "The answer.".into())
        );
    }

    #[test]
    fn generation_starting_inside_thinking() {
        assert_eq!(
            split(true, &["\nhmm", " ok</think>", "\n\nYes"]),
            ("hmm ok".into(), "Yes".into())
        );
    }

    #[test]
    fn markers_split_across_chunks_one_char_at_a_time() {
        let text = "<think>a<b</think>\n\nc</d";
        let chars: Vec<String> = text.chars().map(String::from).collect();
        let chunks: Vec<&str> = chars.iter().map(String::as_str).collect();
        assert_eq!(split(false, &chunks), ("a<b".into(), "c</d".into()));
    }

    #[test]
    fn releases_text_that_cannot_be_a_marker_at_once() {
        let mut s = ThinkingSplitter::new(Some(think()), true);
        assert_eq!(s.push("abc</th"), vec![Segment::Thinking("abc".into())]);
        assert_eq!(s.push("x"), vec![Segment::Thinking("</thx".into())]);
    }

    #[test]
    fn unterminated_thinking_stays_thinking() {
        assert_eq!(
            split(true, &["still thinking </thi"]),
            ("still thinking </thi".into(), String::new())
        );
    }

    #[test]
    fn without_markers_everything_is_answer() {
        let mut s = ThinkingSplitter::new(None, true);
        assert!(!s.is_inside());
        assert_eq!(s.push("<think>x"), vec![Segment::Answer("<think>x".into())]);
        assert!(s.finish().is_empty());
    }

    #[test]
    fn answer_without_thinking_keeps_its_whitespace() {
        assert_eq!(
            split(false, &["  plain"]),
            (String::new(), "  plain".into())
        );
    }
}
