//! The package's Hugging Face tokenizer with the manifest's BOS rule applied to raw prompts.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("cannot load tokenizer {path}: {message}")]
    Load { path: PathBuf, message: String },
    #[error("cannot encode text: {0}")]
    Encode(String),
    #[error("cannot decode token ids: {0}")]
    Decode(String),
    #[error(
        "the manifest's bos token id {id} is outside the tokenizer's vocabulary of {vocab} tokens"
    )]
    BosOutOfRange { id: u32, vocab: usize },
}

/// Tokenizer plus the BOS rule from the manifest (`tokenizer.add_bos_token`, `special_tokens.bos`).
#[derive(Debug, Clone)]
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    bos: Option<u32>,
    add_bos: bool,
}

impl TextTokenizer {
    pub fn from_file(path: &Path, bos: Option<u32>, add_bos: bool) -> Result<Self, TokenizerError> {
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| TokenizerError::Load {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Self::new(inner, bos, add_bos)
    }

    pub fn new(
        inner: tokenizers::Tokenizer,
        bos: Option<u32>,
        add_bos: bool,
    ) -> Result<Self, TokenizerError> {
        let vocab = inner.get_vocab_size(true);
        if let Some(id) = bos
            && id as usize >= vocab
        {
            return Err(TokenizerError::BosOutOfRange { id, vocab });
        }
        Ok(TextTokenizer {
            inner,
            bos,
            add_bos,
        })
    }

    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Encodes text as it stands: added tokens in the text (`<｜User｜>`, `<think>`) become their
    /// ids, but no post-processor tokens are added. This is how transformers tokenizes a rendered
    /// chat template, which writes `bos_token` itself.
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let encoding = self
            .inner
            .encode(text, false)
            .map_err(|e| TokenizerError::Encode(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Encodes a raw (untemplated) prompt: plain encoding, then BOS in front when the manifest asks
    /// for it and the text did not already start with it.
    pub fn encode_raw_prompt(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let mut ids = self.encode_plain(text)?;
        if self.add_bos
            && let Some(bos) = self.bos
            && ids.first() != Some(&bos)
        {
            ids.insert(0, bos);
        }
        Ok(ids)
    }

    /// Decodes ids; special tokens are kept so that nothing the model wrote is hidden.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        self.inner
            .decode(ids, false)
            .map_err(|e| TokenizerError::Decode(e.to_string()))
    }

    /// Text of one token id as the vocabulary spells it, if the id exists.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Id of an exact token text (vocabulary or added token).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Ids of the added tokens marked special (BOS, EOS, role markers): left out of streamed text.
    pub fn special_ids(&self) -> HashSet<u32> {
        self.inner
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, token)| token.special)
            .map(|(id, _)| id)
            .collect()
    }
}

/// A small byte-level BPE tokenizer built in code, for tests of the text layer.
#[cfg(test)]
pub(crate) mod test_support {
    use tokenizers::models::bpe::{BPE, Vocab};
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::{AddedToken, Tokenizer};

    /// Every byte is a token (ids 0..256 in byte order of the byte-level alphabet) plus the merge
    /// "h"+"e", and added tokens `<s>` (special), `</s>` (special), `<think>`, `</think>` (not
    /// special, as in DeepSeek-R1). Multi-byte characters are always split across tokens.
    pub fn byte_tokenizer() -> Tokenizer {
        let mut alphabet: Vec<char> = ByteLevel::alphabet().into_iter().collect();
        alphabet.sort_unstable();
        let mut vocab = Vocab::default();
        for (i, c) in alphabet.iter().enumerate() {
            vocab.insert(c.to_string(), i as u32);
        }
        let next = vocab.len() as u32;
        vocab.insert("he".to_string(), next);
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, vec![("h".to_string(), "e".to_string())])
            .build()
            .expect("test BPE builds");
        let mut tok = Tokenizer::new(bpe);
        tok.with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)));
        tok.with_decoder(Some(ByteLevel::default()));
        tok.add_special_tokens(&[
            AddedToken::from("<s>", true),
            AddedToken::from("</s>", true),
        ]);
        tok.add_tokens(&[
            AddedToken::from("<think>", false),
            AddedToken::from("</think>", false),
        ]);
        tok
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::byte_tokenizer;
    use super::*;

    fn tok(add_bos: bool) -> TextTokenizer {
        let inner = byte_tokenizer();
        let bos = inner.token_to_id("<s>");
        TextTokenizer::new(inner, bos, add_bos).expect("tokenizer")
    }

    #[test]
    fn round_trip_and_added_tokens() {
        let t = tok(false);
        let ids = t.encode_plain("<think>hello é</think>").expect("encode");
        assert_eq!(ids[0], t.token_to_id("<think>").expect("id"));
        assert_eq!(
            *ids.last().expect("ids"),
            t.token_to_id("</think>").expect("id")
        );
        assert!(ids.contains(&t.token_to_id("he").expect("merge")));
        assert_eq!(t.decode(&ids).expect("decode"), "<think>hello é</think>");
    }

    #[test]
    fn bos_rule_for_raw_prompts() {
        let bos = tok(true).token_to_id("<s>").expect("bos");
        assert_eq!(tok(true).encode_raw_prompt("hi").expect("enc")[0], bos);
        assert_ne!(tok(false).encode_raw_prompt("hi").expect("enc")[0], bos);
        // Text that already starts with BOS does not get a second one.
        let ids = tok(true).encode_raw_prompt("<s>hi").expect("enc");
        assert_eq!(ids.iter().filter(|&&i| i == bos).count(), 1);
    }

    #[test]
    fn special_ids_are_the_special_added_tokens() {
        let t = tok(false);
        let special = t.special_ids();
        assert!(special.contains(&t.token_to_id("<s>").expect("id")));
        assert!(special.contains(&t.token_to_id("</s>").expect("id")));
        assert!(!special.contains(&t.token_to_id("<think>").expect("id")));
    }

    #[test]
    fn load_errors_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("tokenizer.json");
        let err = TextTokenizer::from_file(&missing, None, false).expect_err("missing file");
        assert!(err.to_string().contains("tokenizer.json"), "{err}");
        std::fs::write(&missing, b"{not json").expect("write");
        let err = TextTokenizer::from_file(&missing, None, false).expect_err("corrupt file");
        assert!(
            err.to_string().contains(&missing.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn saved_tokenizer_loads_from_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tokenizer.json");
        byte_tokenizer().save(&path, false).expect("save");
        let bos = byte_tokenizer().token_to_id("<s>");
        let t = TextTokenizer::from_file(&path, bos, true).expect("load");
        assert_eq!(
            t.decode(&t.encode_plain("ok ✓").expect("enc"))
                .expect("dec"),
            "ok ✓"
        );
    }

    #[test]
    fn bos_outside_vocabulary_is_an_error() {
        let err = TextTokenizer::new(byte_tokenizer(), Some(100_000), true).expect_err("bad bos");
        assert!(err.to_string().contains("100000"), "{err}");
    }
}
