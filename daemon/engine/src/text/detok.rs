//! Streaming detokenizer: turns generated ids into text deltas that never split a UTF-8 character.
//!
//! Byte-level BPE can put one character's bytes in two tokens, and some decoders change a token's
//! text depending on its neighbours (leading-space rules). Decoding token by token is therefore
//! wrong; the tokenizer's own `DecodeStream` (the prefix-offset technique of Hugging Face
//! text-generation-inference) decodes a short window of ids with and without the new ones and
//! releases the difference once it no longer ends in an incomplete character (U+FFFD from the
//! lossy decode). Three things it does not do are done here: seeding it with the prompt's last
//! ids, flushing what it holds at the end, and carrying on when a decoder rewrites text already
//! released (it stops with an error; this releases the text after the common prefix).

use std::collections::HashSet;
use std::fmt;

use tokenizers::{
    DecodeStream, DecoderWrapper, ModelWrapper, NormalizerWrapper, PostProcessorWrapper,
    PreTokenizerWrapper,
};

use super::tokenizer::{TextTokenizer, TokenizerError};

/// How many prompt tokens give the first generated token its left context (as TGI does).
const CONTEXT_TOKENS: usize = 5;

type Stream<'t> = DecodeStream<
    't,
    ModelWrapper,
    NormalizerWrapper,
    PreTokenizerWrapper,
    PostProcessorWrapper,
    DecoderWrapper,
>;

pub struct StreamDecoder<'t> {
    tokenizer: &'t TextTokenizer,
    stream: Stream<'t>,
    /// Ids left out of the text (special tokens such as BOS/EOS); they still count as generated.
    hidden: HashSet<u32>,
    /// Prompt ids not yet given to `stream` (it is seeded on the first push).
    context: Vec<u32>,
    /// The last ids whose text was released (the left context of `pending`).
    released: Vec<u32>,
    /// Ids given to `stream` whose text is not released yet.
    pending: Vec<u32>,
}

impl fmt::Debug for StreamDecoder<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamDecoder")
            .field("context", &self.context)
            .field("released", &self.released)
            .field("pending", &self.pending)
            .finish_non_exhaustive()
    }
}

impl<'t> StreamDecoder<'t> {
    /// `context`: the prompt ids (only the last few are kept); `hidden`: ids never shown as text.
    pub fn new(tokenizer: &'t TextTokenizer, context: &[u32], hidden: HashSet<u32>) -> Self {
        let visible: Vec<u32> = context
            .iter()
            .copied()
            .filter(|id| !hidden.contains(id))
            .collect();
        let context = visible[visible.len().saturating_sub(CONTEXT_TOKENS)..].to_vec();
        StreamDecoder {
            tokenizer,
            stream: tokenizer.inner().decode_stream(false),
            hidden,
            context,
            released: Vec::new(),
            pending: Vec::new(),
        }
    }

    /// Adds one generated id and returns the text it completes (often empty: a partial character,
    /// or a hidden special token).
    pub fn push(&mut self, id: u32) -> Result<String, TokenizerError> {
        if self.hidden.contains(&id) {
            return Ok(String::new());
        }
        for c in std::mem::take(&mut self.context) {
            self.step(c)?;
        }
        Ok(self.step(id)?.unwrap_or_default())
    }

    /// Releases what is still held at the end of generation, incomplete characters as U+FFFD.
    pub fn finish(&mut self) -> Result<String, TokenizerError> {
        if self.pending.is_empty() {
            return Ok(String::new());
        }
        let (prefix, full) = self.window()?;
        self.release();
        Ok(text_after(&full, &prefix).to_string())
    }

    fn step(&mut self, id: u32) -> Result<Option<String>, TokenizerError> {
        self.pending.push(id);
        match self.stream.step(id) {
            Ok(Some(text)) => {
                self.release();
                Ok(Some(text))
            }
            Ok(None) => Ok(None),
            Err(e) if e.is::<tokenizers::tokenizer::DecodeStreamError>() => self.unstable_prefix(),
            Err(e) => Err(TokenizerError::Decode(e.to_string())),
        }
    }

    /// The decoder changed text already released: release what follows the common prefix, then
    /// start a new stream from the released ids.
    fn unstable_prefix(&mut self) -> Result<Option<String>, TokenizerError> {
        let (prefix, full) = self.window()?;
        if full.len() <= prefix.len() || full.ends_with(char::REPLACEMENT_CHARACTER) {
            return Ok(None);
        }
        self.release();
        self.stream = self.tokenizer.inner().decode_stream(false);
        for &id in &self.released {
            self.stream
                .step(id)
                .map_err(|e| TokenizerError::Decode(e.to_string()))?;
        }
        Ok(Some(text_after(&full, &prefix).to_string()))
    }

    /// The text of the released ids, and of those followed by the pending ones.
    fn window(&self) -> Result<(String, String), TokenizerError> {
        let prefix = self.tokenizer.decode(&self.released)?;
        let mut ids = self.released.clone();
        ids.extend_from_slice(&self.pending);
        Ok((prefix, self.tokenizer.decode(&ids)?))
    }

    /// The pending ids' text has gone out: they become the left context.
    fn release(&mut self) {
        self.released.append(&mut self.pending);
        let keep = self.released.len().saturating_sub(CONTEXT_TOKENS);
        self.released.drain(..keep);
    }
}

/// The part of `full` after `prefix`. Decoders are expected to keep the prefix stable; if one does
/// not, the text after the longest common prefix (at a char boundary) is the best available.
fn text_after<'a>(full: &'a str, prefix: &str) -> &'a str {
    if let Some(rest) = full.strip_prefix(prefix) {
        return rest;
    }
    let common = full
        .char_indices()
        .zip(prefix.chars())
        .find(|((_, a), b)| a != b)
        .map(|((i, _), _)| i)
        .unwrap_or_else(|| prefix.len().min(full.len()));
    let mut start = common;
    while !full.is_char_boundary(start) {
        start -= 1;
    }
    &full[start..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::tokenizer::test_support::byte_tokenizer;

    fn tok() -> TextTokenizer {
        TextTokenizer::new(byte_tokenizer(), None, false).expect("tokenizer")
    }

    fn stream(
        t: &TextTokenizer,
        context: &[u32],
        ids: &[u32],
        hidden: HashSet<u32>,
    ) -> Vec<String> {
        let mut d = StreamDecoder::new(t, context, hidden);
        let mut out: Vec<String> = ids.iter().map(|&id| d.push(id).expect("push")).collect();
        out.push(d.finish().expect("finish"));
        out
    }

    #[test]
    fn multibyte_characters_split_across_tokens_come_out_whole() {
        let t = tok();
        let text = "héllo wörld ✓ 你好 🦀!";
        let ids = t.encode_plain(text).expect("encode");
        // Every multi-byte character is several byte tokens here.
        assert!(ids.len() > text.chars().count());
        let deltas = stream(&t, &[], &ids, HashSet::new());
        for d in &deltas {
            assert!(
                !d.contains(char::REPLACEMENT_CHARACTER),
                "partial character released: {deltas:?}"
            );
        }
        assert_eq!(deltas.concat(), text);
        // The 4-byte crab is released exactly once, by its last byte token.
        assert_eq!(deltas.iter().filter(|d| d.contains('🦀')).count(), 1);
        let crab_pos = deltas.iter().position(|d| d.contains('🦀')).expect("crab");
        assert!(
            deltas[crab_pos - 3..crab_pos].iter().all(String::is_empty),
            "{deltas:?}"
        );
    }

    #[test]
    fn context_is_not_repeated() {
        let t = tok();
        let prompt = t.encode_plain("a prompt that is long").expect("encode");
        let ids = t.encode_plain(" and more").expect("encode");
        assert_eq!(
            stream(&t, &prompt, &ids, HashSet::new()).concat(),
            " and more"
        );
    }

    #[test]
    fn hidden_ids_produce_no_text() {
        let t = tok();
        let eos = t.token_to_id("</s>").expect("eos");
        let mut ids = t.encode_plain("ok").expect("encode");
        ids.push(eos);
        assert_eq!(stream(&t, &[], &ids, t.special_ids()).concat(), "ok");
        // Not hidden: the special token's text is shown.
        assert_eq!(stream(&t, &[], &ids, HashSet::new()).concat(), "ok</s>");
    }

    #[test]
    fn incomplete_character_at_the_end_is_flushed_as_replacement() {
        let t = tok();
        let ids = t.encode_plain("a€").expect("encode");
        let cut = &ids[..ids.len() - 1];
        let deltas = stream(&t, &[], cut, HashSet::new());
        assert_eq!(deltas.concat(), "a\u{FFFD}");
        assert_eq!(deltas.last().map(String::as_str), Some("\u{FFFD}"));
    }

    #[test]
    fn invalid_bytes_in_the_middle_do_not_block_the_stream() {
        let t = tok();
        let lone = t.encode_plain("é").expect("encode")[1]; // a continuation byte on its own
        let mut ids = vec![lone];
        ids.extend(t.encode_plain("ok").expect("encode"));
        let deltas = stream(&t, &[], &ids, HashSet::new());
        assert_eq!(deltas.concat(), "\u{FFFD}ok");
    }

    #[test]
    fn text_after_handles_unstable_prefixes() {
        assert_eq!(text_after("abcdef", "abc"), "def");
        assert_eq!(text_after("abXdef", "abc"), "Xdef");
        assert_eq!(text_after("é!", "e"), "é!");
        assert_eq!(text_after("ab", "abc"), "");
    }
}
