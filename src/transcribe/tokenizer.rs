//! Whisper's tokenizer: byte-level BPE from `tokenizer.json` (the `tokenizers` crate), the
//! special tokens found by name in it, and the token sets the decoding rules use.
//!
//! The special tokens follow OpenAI's `whisper/tokenizer.py`: `<|endoftext|>`,
//! `<|startoftranscript|>`, one `<|xx|>` per language, `<|translate|>`, `<|transcribe|>`,
//! `<|startoflm|>`, `<|startofprev|>`, `<|nospeech|>` (`<|nocaptions|>` in older Hugging Face
//! files), `<|notimestamps|>`, then 1501 timestamps `<|0.00|>` .. `<|30.00|>`. Their ids differ
//! between English-only, multilingual and large-v3 vocabularies, so every id is looked up by
//! name, never assumed.

use std::path::{Path, PathBuf};

use super::languages::LANGUAGES;

/// Timestamp tokens: 0.00 s to 30.00 s in steps of 0.02 s.
pub const N_TIMESTAMPS: usize = 1501;

/// Why a tokenizer cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// The file is missing or does not parse.
    #[error("{path}: cannot read the tokenizer: {detail}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// A special token Whisper needs is not in the tokenizer.
    #[error("{path}: the special token {token} is missing: this is not a Whisper tokenizer")]
    MissingToken {
        /// The file.
        path: PathBuf,
        /// The token's text.
        token: String,
    },
    /// The tokenizer and the model's other files disagree.
    #[error("{path}: {detail}")]
    Inconsistent {
        /// The file.
        path: PathBuf,
        /// What disagrees.
        detail: String,
    },
}

/// The ids of Whisper's special tokens in one vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SpecialTokens {
    /// `<|endoftext|>`: the end of a transcript.
    pub eot: u32,
    /// `<|startoftranscript|>`.
    pub sot: u32,
    /// `<|translate|>`.
    pub translate: u32,
    /// `<|transcribe|>`.
    pub transcribe: u32,
    /// `<|startoflm|>`.
    pub sot_lm: u32,
    /// `<|startofprev|>`: what follows is the previous window's text.
    pub sot_prev: u32,
    /// `<|nospeech|>`, whose probability at `<|startoftranscript|>` says "silence".
    pub no_speech: Option<u32>,
    /// `<|notimestamps|>`.
    pub no_timestamps: u32,
    /// `<|0.00|>`: the first timestamp token; timestamps run to the end of the vocabulary.
    pub timestamp_begin: u32,
}

/// A Whisper tokenizer bound to one model's vocabulary.
pub struct WhisperTokenizer {
    inner: tokenizers::Tokenizer,
    special: SpecialTokens,
    languages: Vec<(&'static str, u32)>,
    multilingual: bool,
    n_vocab: usize,
}

impl std::fmt::Debug for WhisperTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhisperTokenizer")
            .field("special", &self.special)
            .field("multilingual", &self.multilingual)
            .field("n_vocab", &self.n_vocab)
            .finish_non_exhaustive()
    }
}

/// The fields of `generation_config.json` that name token ids, checked against the tokenizer.
#[derive(Debug, Default, serde::Deserialize)]
struct GenerationIds {
    eos_token_id: Option<serde_json::Value>,
    decoder_start_token_id: Option<u32>,
    no_timestamps_token_id: Option<u32>,
}

impl WhisperTokenizer {
    /// Reads `tokenizer.json` for a model whose decoder has `n_vocab` logits; the ids that
    /// `generation_config` (when given) names are checked against the tokenizer's.
    ///
    /// Whether the model is multilingual follows OpenAI's rule (`n_vocab >= 51865`), and so
    /// does the number of its languages (`n_vocab - 51765 - multilingual`).
    pub fn load(
        path: &Path,
        generation_config: Option<&Path>,
        n_vocab: usize,
    ) -> Result<WhisperTokenizer, TokenizerError> {
        let read = |detail: String| TokenizerError::Read {
            path: path.to_path_buf(),
            detail,
        };
        let bytes = std::fs::read(path).map_err(|e| read(e.to_string()))?;
        let inner = tokenizers::Tokenizer::from_bytes(&bytes).map_err(|e| read(e.to_string()))?;
        let id = |token: &str| {
            inner
                .token_to_id(token)
                .ok_or_else(|| TokenizerError::MissingToken {
                    path: path.to_path_buf(),
                    token: token.to_string(),
                })
        };
        let no_timestamps = id("<|notimestamps|>")?;
        let special = SpecialTokens {
            eot: id("<|endoftext|>")?,
            sot: id("<|startoftranscript|>")?,
            translate: id("<|translate|>")?,
            transcribe: id("<|transcribe|>")?,
            sot_lm: id("<|startoflm|>")?,
            sot_prev: id("<|startofprev|>")?,
            no_speech: inner
                .token_to_id("<|nospeech|>")
                .or_else(|| inner.token_to_id("<|nocaptions|>")),
            no_timestamps,
            timestamp_begin: inner.token_to_id("<|0.00|>").unwrap_or(no_timestamps + 1),
        };
        let inconsistent = |detail: String| TokenizerError::Inconsistent {
            path: path.to_path_buf(),
            detail,
        };
        if special.timestamp_begin as usize + N_TIMESTAMPS != n_vocab {
            return Err(inconsistent(format!(
                "timestamps begin at id {} and the decoder has {n_vocab} logits, which does not \
                 leave the {N_TIMESTAMPS} timestamp tokens Whisper has: the tokenizer belongs to \
                 another model",
                special.timestamp_begin
            )));
        }
        let multilingual = n_vocab >= 51865;
        let n_languages = n_vocab
            .saturating_sub(51765 + multilingual as usize)
            .min(LANGUAGES.len());
        // OpenAI's layout puts the language tokens right after <|startoftranscript|>, in
        // LANGUAGES order, and <|translate|> after them; some tokenizer.json files spell a
        // code differently (`<|iw|>` for Hebrew), so the position decides when it holds.
        let positional = special.translate == special.sot + 1 + n_languages as u32;
        let languages = LANGUAGES[..n_languages]
            .iter()
            .enumerate()
            .map(|(i, (code, _))| {
                if positional {
                    Ok((*code, special.sot + 1 + i as u32))
                } else {
                    Ok((*code, id(&format!("<|{code}|>"))?))
                }
            })
            .collect::<Result<Vec<_>, TokenizerError>>()?;

        if let Some(config) = generation_config {
            let ids: GenerationIds = std::fs::read(config)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
                .map_err(|e| TokenizerError::Read {
                    path: config.to_path_buf(),
                    detail: e,
                })?;
            let eos = match &ids.eos_token_id {
                Some(serde_json::Value::Number(n)) => n.as_u64(),
                Some(serde_json::Value::Array(v)) => v.first().and_then(|n| n.as_u64()),
                _ => None,
            }
            .map(|v| v as u32);
            for (field, config_id, ours) in [
                ("eos_token_id", eos, special.eot),
                (
                    "decoder_start_token_id",
                    ids.decoder_start_token_id,
                    special.sot,
                ),
                (
                    "no_timestamps_token_id",
                    ids.no_timestamps_token_id,
                    special.no_timestamps,
                ),
            ] {
                if let Some(config_id) = config_id.filter(|&c| c != ours) {
                    return Err(inconsistent(format!(
                        "{} gives {field} {config_id}, the tokenizer {ours}: the files come \
                         from different models",
                        config.display()
                    )));
                }
            }
        }
        Ok(WhisperTokenizer {
            inner,
            special,
            languages,
            multilingual,
            n_vocab,
        })
    }

    /// The special tokens' ids.
    pub fn special(&self) -> &SpecialTokens {
        &self.special
    }

    /// Whether the model is multilingual (it has language and task tokens in its prompt).
    pub fn is_multilingual(&self) -> bool {
        self.multilingual
    }

    /// Logits of the decoder: text tokens, special tokens and timestamps.
    pub fn n_vocab(&self) -> usize {
        self.n_vocab
    }

    /// The model's languages, `(code, token)`, in token order.
    pub fn languages(&self) -> &[(&'static str, u32)] {
        &self.languages
    }

    /// The token of language `code`, when the model knows it.
    pub fn language_token(&self, code: &str) -> Option<u32> {
        self.languages
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, t)| *t)
    }

    /// The prompt that starts a transcript: `<|startoftranscript|>`, and for multilingual
    /// models the language and the task (OpenAI's `sot_sequence`; English-only models have
    /// neither).
    pub fn sot_sequence(&self, language: Option<&str>, task: Task) -> Vec<u32> {
        let mut tokens = vec![self.special.sot];
        if self.multilingual {
            if let Some(token) = language.and_then(|l| self.language_token(l)) {
                tokens.push(token);
            }
            tokens.push(match task {
                Task::Transcribe => self.special.transcribe,
                Task::Translate => self.special.translate,
            });
        }
        tokens
    }

    /// The tokens of `text`, without special tokens.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        self.inner
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .unwrap_or_default()
    }

    /// The text of `tokens`; timestamp tokens are left out (OpenAI's `decode`), byte sequences
    /// that are not UTF-8 become U+FFFD.
    pub fn decode(&self, tokens: &[u32]) -> String {
        let text: Vec<u32> = tokens
            .iter()
            .copied()
            .filter(|&t| t < self.special.timestamp_begin)
            .collect();
        self.inner.decode(&text, false).unwrap_or_default()
    }

    /// The words of `tokens` and their tokens, as openai-whisper's `split_to_word_tokens`
    /// splits them: at spaces (a token that starts with one, punctuation and special tokens
    /// begin words), or, for languages written without spaces (Chinese, Japanese, Thai, Lao,
    /// Burmese, Cantonese), wherever the tokens so far decode to whole characters.
    pub fn split_to_word_tokens(&self, tokens: &[u32], language: &str) -> Vec<(String, Vec<u32>)> {
        let subwords = self.split_on_unicode(tokens);
        if matches!(language, "zh" | "ja" | "th" | "lo" | "my" | "yue") {
            return subwords;
        }
        // Python's `string.punctuation`; "in" it is a substring test, as there.
        const PUNCTUATION: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";
        let mut words: Vec<(String, Vec<u32>)> = Vec::new();
        for (subword, subword_tokens) in subwords {
            let special = subword_tokens[0] >= self.special.eot;
            let with_space = subword.starts_with(' ');
            let punctuation = PUNCTUATION.contains(subword.trim());
            match words.last_mut() {
                Some((word, word_tokens)) if !(special || with_space || punctuation) => {
                    word.push_str(&subword);
                    word_tokens.extend(subword_tokens);
                }
                _ => words.push((subword, subword_tokens)),
            }
        }
        words
    }

    /// openai-whisper's `split_tokens_on_unicode`: `tokens` cut wherever those so far decode
    /// without a replacement character (or with one that the whole text has there too).
    fn split_on_unicode(&self, tokens: &[u32]) -> Vec<(String, Vec<u32>)> {
        const REPLACEMENT: char = '\u{fffd}';
        let full: Vec<char> = self.decode_with_specials(tokens).chars().collect();
        let mut out = Vec::new();
        let mut current = Vec::new();
        let mut offset = 0;
        for &token in tokens {
            current.push(token);
            let decoded = self.decode_with_specials(&current);
            let whole = match decoded.chars().position(|c| c == REPLACEMENT) {
                None => true,
                Some(at) => full.get(offset + at) == Some(&REPLACEMENT),
            };
            if whole {
                offset += decoded.chars().count();
                out.push((decoded, std::mem::take(&mut current)));
            }
        }
        out
    }

    /// `tokens` as text, special tokens written out (`<|endoftext|>`), timestamps left out.
    fn decode_with_specials(&self, tokens: &[u32]) -> String {
        self.decode(tokens)
    }

    /// Tokens that would let the model write speaker tags or sound descriptions rather than
    /// speech (OpenAI's `non_speech_tokens`): each symbol of `"#()*+/:;<=>@[\]^_`{|}~「」『』`,
    /// the sequences `<< >> <<< >>> -- --- -( -[ (' (" (( )) ((( ))) [[ ]] {{ }} ♪♪ ♪♪♪`, alone
    /// or after a space, when it is one token, the first token of the musical symbols
    /// `♩♪♫♬♭♮♯`, and the first tokens of `" -"` and `" '"`; basic punctuation stays allowed.
    pub fn non_speech_tokens(&self) -> Vec<u32> {
        let mut symbols: Vec<String> = "\"#()*+/:;<=>@[\\]^_`{|}~「」『』"
            .chars()
            .map(String::from)
            .collect();
        symbols.extend(
            "<< >> <<< >>> -- --- -( -[ (' (\" (( )) ((( ))) [[ ]] {{ }} ♪♪ ♪♪♪"
                .split(' ')
                .map(String::from),
        );
        let miscellaneous: Vec<String> = "♩♪♫♬♭♮♯".chars().map(String::from).collect();
        let mut result = std::collections::BTreeSet::new();
        for text in [" -", " '"] {
            result.extend(self.encode(text).first().copied());
        }
        for symbol in symbols.iter().chain(&miscellaneous) {
            let misc = miscellaneous.contains(symbol);
            for tokens in [self.encode(symbol), self.encode(&format!(" {symbol}"))] {
                if tokens.len() == 1 || misc {
                    result.extend(tokens.first().copied());
                }
            }
        }
        result.into_iter().collect()
    }
}

/// What the decoder writes: the speech in its language, or its English translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// The words as spoken.
    #[default]
    Transcribe,
    /// An English translation (multilingual models only).
    Translate,
}

amanuensis_kernels::named_variants!(Task { Transcribe => "transcribe", Translate => "translate" });
