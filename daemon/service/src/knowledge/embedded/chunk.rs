//! Chunking: a document's text cut into windows of `words` words, each repeating the last
//! `overlap` words of the one before, so a passage that straddles a boundary is whole in one
//! chunk. Chunks are slices of the original text (line breaks kept).

/// The chunks of `text`; none when it has no words. `overlap < words` (checked by the
/// configuration).
pub fn chunks(text: &str, words: usize, overlap: usize) -> Vec<String> {
    let spans: Vec<(usize, usize)> = word_spans(text);
    if spans.is_empty() {
        return Vec::new();
    }
    let words = words.max(1);
    let step = words.saturating_sub(overlap).max(1);
    let mut out = Vec::new();
    let mut start = 0;
    loop {
        let end = (start + words).min(spans.len());
        out.push(text[spans[start].0..spans[end - 1].1].to_string());
        if end == spans.len() {
            return out;
        }
        start += step;
    }
}

/// Byte ranges of the whitespace-separated words of `text`.
fn word_spans(text: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        match (c.is_whitespace(), start) {
            (true, Some(s)) => {
                spans.push((s, i));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        spans.push((s, text.len()));
    }
    spans
}

/// Index terms: lowercased runs of letters and digits.
pub fn terms(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_overlap_and_cover_every_word() {
        let text = (1..=10)
            .map(|i| format!("w{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        let c = chunks(&text, 4, 1);
        assert_eq!(c, ["w1 w2 w3 w4", "w4 w5 w6 w7", "w7 w8 w9 w10"]);
        let c = chunks(&text, 4, 2);
        assert_eq!(c.len(), 4);
        assert_eq!(c[3], "w7 w8 w9 w10");
        assert_eq!(chunks("one  two\nthree", 10, 2), ["one  two\nthree"]);
        assert!(chunks(" \n\t", 10, 2).is_empty());
        // Every word is in some chunk, and consecutive chunks share `overlap` words.
        let c = chunks(&text, 3, 1);
        for pair in c.windows(2) {
            let last = pair[0].split(' ').next_back().expect("word");
            assert!(pair[1].starts_with(last), "{pair:?}");
        }
        assert!(c.last().expect("chunk").ends_with("w10"));
    }

    #[test]
    fn terms_are_lowercase_words() {
        let t: Vec<String> = terms("Vacation-days: 25, Ünïcode!").collect();
        assert_eq!(t, ["vacation", "days", "25", "ünïcode"]);
    }
}
