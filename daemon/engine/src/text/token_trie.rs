//! The package's vocabulary as llguidance's token trie: the bytes each token id stands for, read
//! from the workspace's own `tokenizers` (toktrie_hf_tokenizers pins another major version).

use std::collections::HashSet;
use std::sync::Arc;

use llguidance::toktrie::{TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};
use tokenizers::DecoderWrapper;

use super::tokenizer::TextTokenizer;

/// A token longer than this is left out of the trie (never allowed under a constraint): no real
/// vocabulary has one, and the trie stores lengths in a fixed width.
const MAX_TOKEN_BYTES: usize = 1024;

/// How the tokenizer spells bytes in its vocabulary.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Spelling {
    /// GPT-2 style: every byte is one printable character (`Ġ` is a space).
    ByteLevel,
    /// SentencePiece style: pieces with `space` for a blank and `<0xNN>` for raw bytes.
    Pieces { space: char },
}

fn spelling(decoder: Option<&DecoderWrapper>) -> Option<Spelling> {
    let mut byte_fallback = false;
    let mut space = None;
    fn walk(d: &DecoderWrapper, byte_fallback: &mut bool, space: &mut Option<char>) -> bool {
        match d {
            DecoderWrapper::ByteLevel(_) => return true,
            DecoderWrapper::ByteFallback(_) => *byte_fallback = true,
            DecoderWrapper::Metaspace(m) => *space = Some(m.get_replacement()),
            DecoderWrapper::Replace(r) => {
                // The pattern has no accessor; its serialized form says it.
                if let Ok(v) = serde_json::to_value(r)
                    && v["content"].as_str() == Some(" ")
                    && let Some(p) = v["pattern"]["String"].as_str()
                    && let (Some(c), None) = (p.chars().next(), p.chars().nth(1))
                {
                    *space = Some(c);
                }
            }
            DecoderWrapper::Sequence(seq) => {
                for d in seq.get_decoders() {
                    if walk(d, byte_fallback, space) {
                        return true;
                    }
                }
            }
            _ => {}
        }
        false
    }
    let decoder = decoder?;
    if walk(decoder, &mut byte_fallback, &mut space) {
        return Some(Spelling::ByteLevel);
    }
    (byte_fallback || space.is_some()).then(|| Spelling::Pieces {
        space: space.unwrap_or(' '),
    })
}

/// GPT-2's byte-to-character table, reversed.
fn byte_level_table() -> std::collections::HashMap<char, u8> {
    let mut table = std::collections::HashMap::with_capacity(256);
    let mut next = 0x100u32;
    for byte in 0..=255u8 {
        let c = byte as char;
        if matches!(c, '!'..='~' | '\u{A1}'..='\u{AC}' | '\u{AE}'..='\u{FF}') {
            table.insert(c, byte);
        } else if let Some(mapped) = char::from_u32(next) {
            table.insert(mapped, byte);
            next += 1;
        }
    }
    table
}

fn piece_bytes(piece: &str, space: char) -> Vec<u8> {
    if piece.len() == 6
        && let Some(hex) = piece.strip_prefix("<0x").and_then(|s| s.strip_suffix('>'))
        && let Ok(byte) = u8::from_str_radix(hex, 16)
    {
        return vec![byte];
    }
    piece.replace(space, " ").into_bytes()
}

/// The bytes of every token id, in id order; empty for ids that cannot be spelled.
pub(super) fn token_bytes(tok: &TextTokenizer) -> Result<Vec<Vec<u8>>, String> {
    let inner = tok.inner();
    let spelling = spelling(inner.get_decoder()).ok_or_else(|| {
        "the tokenizer's decoder is neither byte-level nor byte-fallback, so its tokens' bytes are unknown"
            .to_string()
    })?;
    let table = byte_level_table();
    let added = inner.get_added_tokens_decoder();
    let vocab = tok.vocab_size();
    let mut words = Vec::with_capacity(vocab);
    for id in 0..vocab as u32 {
        let bytes = if let Some(token) = added.get(&id) {
            let mut b = token.content.as_bytes().to_vec();
            if token.special {
                b.insert(0, TokTrie::SPECIAL_TOKEN_MARKER);
            }
            b
        } else {
            match (inner.id_to_token(id), spelling) {
                (None, _) => Vec::new(),
                (Some(t), Spelling::ByteLevel) => t
                    .chars()
                    .map(|c| table.get(&c).copied())
                    .collect::<Option<Vec<u8>>>()
                    .unwrap_or_default(),
                (Some(t), Spelling::Pieces { space }) => piece_bytes(&t, space),
            }
        };
        words.push(if bytes.len() > MAX_TOKEN_BYTES {
            Vec::new()
        } else {
            bytes
        });
    }
    Ok(words)
}

/// The trie of `tok`'s vocabulary with `eos` as its end-of-sequence ids, and the tokenizer for
/// the text llguidance tokenizes itself (forced continuations).
pub(super) fn token_env(tok: &TextTokenizer, eos: &HashSet<u32>) -> Result<TokEnv, String> {
    let words = token_bytes(tok)?;
    let mut eos: Vec<TokenId> = eos
        .iter()
        .copied()
        .filter(|&id| (id as usize) < words.len())
        .collect();
    eos.sort_unstable();
    let Some(&first) = eos.first() else {
        return Err("the package names no end-of-sequence token inside its vocabulary".into());
    };
    let info = TokRxInfo::new(words.len() as u32, first);
    // toktrie asserts on what it is given; the checks above make those assertions hold, and a
    // panic left in it must not take the worker down.
    let trie = std::panic::catch_unwind(|| TokTrie::from(&info, &words).with_eos_tokens(&eos))
        .map_err(|_| "cannot build the token trie of this vocabulary".to_string())?;
    Ok(Arc::new(Env {
        trie,
        tokenizer: tok.clone(),
    }))
}

struct Env {
    trie: TokTrie,
    tokenizer: TextTokenizer,
}

impl TokenizerEnv for Env {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        self.trie.tokenize_with_greedy_fallback(s, |text| {
            self.tokenizer
                .encode_plain(text)
                .unwrap_or_else(|_| self.trie.greedy_tokenize(text.as_bytes()))
        })
    }
}
