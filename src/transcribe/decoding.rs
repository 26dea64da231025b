//! Decoding one 30 s window: the token search and the logit rules of OpenAI's
//! `whisper/decoding.py` (release 20250625), over any decoder that implements [`Session`].
//!
//! - the prompt: `<|startofprev|>` and the previous text (at most `n_text_ctx / 2 - 1`
//!   tokens), the start-of-transcript sequence, `<|notimestamps|>` without timestamps, a prefix;
//! - logit rules in OpenAI's order: [`suppress_blank`](DecodingOptions::suppress_blank),
//!   [`suppress_tokens`](DecodingOptions::suppress_tokens) (`-1`: the non-speech symbols), and
//!   with timestamps the timestamp rules (pairs, monotonic, nonzero segments, the initial
//!   timestamp at most `max_initial_timestamp`, a timestamp forced when their total
//!   probability beats every text token);
//! - the search: greedy (argmax at temperature 0, a draw from `softmax(logits / T)` above),
//!   best-of-N draws, or beam search with patience, ranked by the summed log probability over
//!   the length (or Google NMT's length penalty);
//! - the result: tokens, text, average log probability, the probability of `<|nospeech|>` at
//!   `<|startoftranscript|>`, and the text's gzip compression ratio.

use super::TranscribeError;
use super::tokenizer::{N_TIMESTAMPS, Task, WhisperTokenizer};
use crate::model::DecoderError;

/// A decoder's state for one window: the encoder's features, the self-attention cache of
/// each row.
pub trait Session {
    /// Runs `tokens` (one row per sequence, every row the same length) after what each row
    /// already holds; returns the logits of each row's last position, `[rows * n_vocab]`.
    fn forward(&mut self, tokens: &[Vec<u32>]) -> Result<Vec<f32>, DecoderError>;

    /// Makes `n` rows out of row 0 (beam search and best-of-N start from one prompt).
    fn expand(&mut self, n: usize) -> Result<(), DecoderError>;

    /// Keeps, as row `i`, the row `source[i]` (beam search's survivors).
    fn reorder(&mut self, source: &[usize]) -> Result<(), DecoderError>;
}

/// Which tokens to suppress at every step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuppressTokens {
    /// Token ids to suppress.
    pub ids: Vec<u32>,
    /// Whether the non-speech symbols are suppressed too (OpenAI's `-1`).
    pub non_speech: bool,
}

impl Default for SuppressTokens {
    fn default() -> Self {
        SuppressTokens {
            ids: Vec::new(),
            non_speech: true,
        }
    }
}

impl std::str::FromStr for SuppressTokens {
    type Err = String;

    /// A comma-separated list of token ids, `-1` standing for the non-speech symbols, as
    /// OpenAI's `--suppress_tokens`; the empty string suppresses nothing.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = SuppressTokens {
            ids: Vec::new(),
            non_speech: false,
        };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.parse::<i64>() {
                Ok(-1) => out.non_speech = true,
                Ok(id) if id >= 0 && id <= u32::MAX as i64 => out.ids.push(id as u32),
                _ => {
                    return Err(format!(
                        "{part:?} is not a token id: give ids separated by commas, -1 for the \
                         non-speech symbols"
                    ));
                }
            }
        }
        Ok(out)
    }
}

/// How to decode one window (OpenAI's `DecodingOptions`).
#[derive(Debug, Clone, PartialEq)]
pub struct DecodingOptions {
    /// Transcribe, or translate to English.
    pub task: Task,
    /// The language code (multilingual models); `None` detects it.
    pub language: Option<String>,
    /// 0 for the most likely tokens, above for draws from the tempered distribution.
    pub temperature: f32,
    /// The most tokens to sample (default `n_text_ctx / 2`).
    pub sample_len: Option<usize>,
    /// Independent draws to rank, at a temperature above 0.
    pub best_of: Option<usize>,
    /// Beams of beam search, at temperature 0.
    pub beam_size: Option<usize>,
    /// Beam search's patience (arXiv:2204.05424): finished candidates to collect, in beams.
    pub patience: Option<f32>,
    /// Google NMT's length penalty alpha for ranking, or `None` for the plain length.
    pub length_penalty: Option<f32>,
    /// Tokens of the previous context (after `<|startofprev|>`).
    pub prompt: Vec<u32>,
    /// Tokens the transcript must start with.
    pub prefix: Vec<u32>,
    /// Tokens never sampled.
    pub suppress_tokens: SuppressTokens,
    /// Whether a blank (a space or `<|endoftext|>`) is forbidden as the first token.
    pub suppress_blank: bool,
    /// Text only, no timestamp tokens.
    pub without_timestamps: bool,
    /// The latest first timestamp, in seconds (`None`: no limit).
    pub max_initial_timestamp: Option<f32>,
}

impl Default for DecodingOptions {
    fn default() -> Self {
        DecodingOptions {
            task: Task::Transcribe,
            language: None,
            temperature: 0.0,
            sample_len: None,
            best_of: None,
            beam_size: None,
            patience: None,
            length_penalty: None,
            prompt: Vec::new(),
            prefix: Vec::new(),
            suppress_tokens: SuppressTokens::default(),
            suppress_blank: true,
            without_timestamps: false,
            max_initial_timestamp: Some(1.0),
        }
    }
}

/// The outcome of decoding one window.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodingResult {
    /// The language code the prompt carried (`en` for English-only models).
    pub language: String,
    /// The sampled tokens, timestamps included, without the prompt and `<|endoftext|>`.
    pub tokens: Vec<u32>,
    /// Their text, trimmed.
    pub text: String,
    /// Summed log probability over the tokens and `<|endoftext|>`, divided by their count.
    pub avg_logprob: f64,
    /// The probability of `<|nospeech|>` right after `<|startoftranscript|>` (NaN when the
    /// vocabulary has no such token).
    pub no_speech_prob: f64,
    /// The temperature sampled at.
    pub temperature: f32,
    /// The text's UTF-8 length over its zlib-compressed length.
    pub compression_ratio: f64,
}

/// Why the options cannot be used together (OpenAI's `_verify_options`).
pub fn verify_options(options: &DecodingOptions) -> Result<(), String> {
    if options.beam_size.is_some() && options.best_of.is_some() {
        return Err("beam size and best-of cannot be given together".into());
    }
    if options.temperature == 0.0 && options.best_of.is_some() {
        return Err("best-of needs a temperature above 0 (it ranks random draws)".into());
    }
    if options.patience.is_some() && options.beam_size.is_none() {
        return Err("patience needs a beam size".into());
    }
    if let Some(alpha) = options.length_penalty
        && !(0.0..=1.0).contains(&alpha)
    {
        return Err(format!(
            "the length penalty must be between 0 and 1, not {alpha}"
        ));
    }
    if options.beam_size == Some(0) || options.best_of == Some(0) {
        return Err("beam size and best-of must be at least 1".into());
    }
    if options.patience.is_some_and(|p| p <= 0.0) {
        return Err("patience must be above 0".into());
    }
    Ok(())
}

/// `len(text) / len(zlib.compress(text))` over the UTF-8 bytes, zlib at its default level, as
/// OpenAI's `compression_ratio`: a transcript stuck in a loop compresses well.
pub fn compression_ratio(text: &str) -> f64 {
    let bytes = text.as_bytes();
    if bytes.is_empty() {
        // zlib's output for nothing is 8 bytes.
        return 0.0;
    }
    let compressed = zlib_compressed_len(bytes);
    bytes.len() as f64 / compressed as f64
}

/// The length of zlib's `compress()` output for `data` (level 6, 15-bit window): the
/// reference's own library, so that the ratio matches it to the last bit.
fn zlib_compressed_len(data: &[u8]) -> usize {
    // SAFETY: `compressBound` gives a capacity that `compress` never overruns; both
    // buffers outlive the calls.
    unsafe {
        let bound = libz_sys::compressBound(data.len() as libz_sys::uLong);
        let mut out = vec![0u8; bound as usize];
        let mut len = bound;
        let status = libz_sys::compress(
            out.as_mut_ptr(),
            &mut len,
            data.as_ptr(),
            data.len() as libz_sys::uLong,
        );
        assert_eq!(
            status,
            libz_sys::Z_OK,
            "zlib compress with a bound-sized buffer"
        );
        len as usize
    }
}

/// A small deterministic generator (SplitMix64) for the draws at temperatures above 0.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Python's `xs[-n:]`: the last `n` items for `n` above 0, all of them for 0, and all but the
/// first `-n` below 0 (openai-whisper's prompt and prefix bounds rely on all three).
pub(crate) fn python_tail<T>(xs: &[T], n: isize) -> &[T] {
    let len = xs.len();
    let start = if n > 0 {
        len.saturating_sub(n as usize)
    } else {
        n.unsigned_abs().min(len)
    };
    &xs[start..]
}

/// `log(sum(exp(row)))`: a token's log probability is its logit minus this.
fn logsumexp(row: &[f32]) -> f64 {
    amanuensis_kernels::cpu_math::logsumexp(row)
}

/// The index of the first largest value (`torch.argmax`).
fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best
}

/// The logit rules of one decoding task.
struct Filters {
    sample_begin: usize,
    suppress_blank: Option<Vec<u32>>,
    suppress: Vec<u32>,
    timestamps: Option<TimestampRules>,
}

struct TimestampRules {
    eot: u32,
    no_timestamps: u32,
    timestamp_begin: u32,
    max_initial_timestamp_index: Option<usize>,
}

impl Filters {
    /// Applies every rule to the logits of one row whose tokens so far are `tokens`.
    fn apply(&self, logits: &mut [f32], tokens: &[u32]) {
        let at_begin = tokens.len() == self.sample_begin;
        if let Some(blank) = &self.suppress_blank
            && at_begin
        {
            for &t in blank {
                logits[t as usize] = f32::NEG_INFINITY;
            }
        }
        for &t in &self.suppress {
            logits[t as usize] = f32::NEG_INFINITY;
        }
        if let Some(rules) = &self.timestamps {
            rules.apply(logits, &tokens[self.sample_begin..], at_begin);
        }
    }
}

impl TimestampRules {
    fn apply(&self, logits: &mut [f32], sampled: &[u32], at_begin: bool) {
        let ts = self.timestamp_begin;
        let is_ts = |t: u32| t >= ts;
        let begin = ts as usize;
        logits[self.no_timestamps as usize] = f32::NEG_INFINITY;

        // Timestamps come in pairs, except right before <|endoftext|>.
        let last_was_timestamp = sampled.last().is_some_and(|&t| is_ts(t));
        let penultimate_was_timestamp = sampled.len() < 2 || is_ts(sampled[sampled.len() - 2]);
        if last_was_timestamp {
            if penultimate_was_timestamp {
                logits[begin..].fill(f32::NEG_INFINITY);
            } else {
                logits[..self.eot as usize].fill(f32::NEG_INFINITY);
            }
        }
        // Timestamps never decrease, and a segment is never empty.
        if let Some(&last) = sampled.iter().rev().find(|&&t| is_ts(t)) {
            let end = if last_was_timestamp && !penultimate_was_timestamp {
                last
            } else {
                last + 1
            };
            let end = (end as usize).min(logits.len());
            logits[begin..end].fill(f32::NEG_INFINITY);
        }
        if at_begin {
            // The first token is a timestamp, at most max_initial_timestamp.
            logits[..begin].fill(f32::NEG_INFINITY);
            if let Some(max) = self.max_initial_timestamp_index {
                let last_allowed = begin + max;
                if last_allowed + 1 < logits.len() {
                    logits[last_allowed + 1..].fill(f32::NEG_INFINITY);
                }
            }
        }
        // A timestamp when their total probability beats every text token: the log of the
        // timestamps' summed probability against the best text token's (both relative to
        // the same normaliser, which cancels).
        let timestamp_logprob = logsumexp(&logits[begin..]);
        let max_text = logits[..begin]
            .iter()
            .copied()
            .fold(f32::NEG_INFINITY, f32::max) as f64;
        if timestamp_logprob > max_text {
            logits[..begin].fill(f32::NEG_INFINITY);
        }
    }
}

/// One decoding of one window, at one temperature.
pub struct DecodingTask<'a> {
    tokenizer: &'a WhisperTokenizer,
    options: DecodingOptions,
    n_ctx: usize,
    sample_len: usize,
    n_group: usize,
    initial_tokens: Vec<u32>,
    sot_index: usize,
    filters: Filters,
    language: String,
}

impl<'a> DecodingTask<'a> {
    /// Prepares the prompt and the rules for a decoder of `n_text_ctx` positions and
    /// `n_audio_ctx` encoder positions (one timestamp step is 30 s over `n_audio_ctx`).
    pub fn new(
        tokenizer: &'a WhisperTokenizer,
        options: DecodingOptions,
        n_text_ctx: usize,
        n_audio_ctx: usize,
    ) -> Result<DecodingTask<'a>, String> {
        verify_options(&options)?;
        let special = *tokenizer.special();
        let language = options.language.clone().unwrap_or_else(|| "en".into());
        let n_group = options.beam_size.or(options.best_of).unwrap_or(1);
        let sample_len = options.sample_len.unwrap_or(n_text_ctx / 2);

        let mut sot_sequence = tokenizer.sot_sequence(Some(&language), options.task);
        if options.without_timestamps {
            sot_sequence.push(special.no_timestamps);
        }
        let mut initial_tokens = sot_sequence;
        if !options.prefix.is_empty() {
            // `prefix[-(n_ctx // 2 - sample_len):]`: with the default sample length, 0, which
            // Python reads as the whole prefix.
            let max_prefix_len = (n_text_ctx / 2) as isize - sample_len as isize;
            initial_tokens.extend_from_slice(python_tail(&options.prefix, max_prefix_len));
        }
        if !options.prompt.is_empty() {
            let prompt = python_tail(&options.prompt, (n_text_ctx / 2) as isize - 1);
            let mut with_prompt = vec![special.sot_prev];
            with_prompt.extend_from_slice(prompt);
            with_prompt.extend_from_slice(&initial_tokens);
            initial_tokens = with_prompt;
        }
        let sample_begin = initial_tokens.len();
        let sot_index = initial_tokens
            .iter()
            .position(|&t| t == special.sot)
            .expect("the prompt holds <|startoftranscript|>");

        let suppress_blank = options.suppress_blank.then(|| {
            let mut blank = tokenizer.encode(" ");
            blank.push(special.eot);
            blank
        });
        let mut suppress = options.suppress_tokens.ids.clone();
        if options.suppress_tokens.non_speech {
            suppress.extend(tokenizer.non_speech_tokens());
        }
        suppress.extend([
            special.transcribe,
            special.translate,
            special.sot,
            special.sot_prev,
            special.sot_lm,
        ]);
        suppress.extend(special.no_speech);
        suppress.retain(|&t| (t as usize) < tokenizer.n_vocab());
        suppress.sort_unstable();
        suppress.dedup();
        let timestamps = (!options.without_timestamps).then(|| {
            // Seconds per timestamp step: 30 s over the encoder's positions (0.02 s).
            let precision = crate::audio::CHUNK_LENGTH as f64 / n_audio_ctx as f64;
            TimestampRules {
                eot: special.eot,
                no_timestamps: special.no_timestamps,
                timestamp_begin: special.timestamp_begin,
                max_initial_timestamp_index: options
                    .max_initial_timestamp
                    .filter(|&t| t > 0.0)
                    .map(|t| (t as f64 / precision).round_ties_even() as usize),
            }
        });
        debug_assert_eq!(
            special.timestamp_begin as usize + N_TIMESTAMPS,
            tokenizer.n_vocab()
        );
        Ok(DecodingTask {
            tokenizer,
            options,
            n_ctx: n_text_ctx,
            sample_len,
            n_group,
            initial_tokens,
            sot_index,
            filters: Filters {
                sample_begin,
                suppress_blank,
                suppress,
                timestamps,
            },
            language,
        })
    }

    /// The prompt the decoder is given, in order.
    pub fn initial_tokens(&self) -> &[u32] {
        &self.initial_tokens
    }

    /// Decodes one window on `session` (fresh: it holds no tokens yet); `rng` draws the tokens
    /// at temperatures above 0.
    pub fn run(
        &self,
        session: &mut dyn Session,
        rng: &mut Rng,
    ) -> Result<DecodingResult, TranscribeError> {
        let special = *self.tokenizer.special();
        let n_vocab = self.tokenizer.n_vocab();
        let eot = special.eot;

        // The prompt runs in two parts: up to <|startoftranscript|>, whose logits give the
        // no-speech probability, then the rest (the same attention as one pass, as every
        // position attends only to earlier ones).
        let head = self.initial_tokens[..=self.sot_index].to_vec();
        let at_sot = session.forward(&[head])?;
        if at_sot.len() != n_vocab {
            return Err(TranscribeError::Model(format!(
                "the decoder gives {} logits, the tokenizer has {n_vocab} tokens",
                at_sot.len()
            )));
        }
        let no_speech_prob = match special.no_speech {
            Some(t) => (at_sot[t as usize] as f64 - logsumexp(&at_sot)).exp(),
            None => f64::NAN,
        };
        let tail = self.initial_tokens[self.sot_index + 1..].to_vec();
        let first = if tail.is_empty() {
            at_sot
        } else {
            session.forward(&[tail])?
        };
        let n = self.n_group;
        session.expand(n)?;
        let mut logits: Vec<f32> = Vec::with_capacity(n * n_vocab);
        for _ in 0..n {
            logits.extend_from_slice(&first);
        }

        let mut tokens: Vec<Vec<u32>> = vec![self.initial_tokens.clone(); n];
        let mut sum_logprobs = vec![0.0f64; n];
        let mut search = match self.options.beam_size {
            Some(beam_size) => Search::Beam(BeamSearch::new(beam_size, self.options.patience, eot)),
            None => Search::Greedy,
        };
        for _ in 0..self.sample_len {
            for (row, toks) in logits.chunks_exact_mut(n_vocab).zip(&tokens) {
                self.filters.apply(row, toks);
            }
            let completed = match &mut search {
                Search::Greedy => {
                    greedy_update(
                        &mut tokens,
                        &logits,
                        &mut sum_logprobs,
                        self.options.temperature,
                        eot,
                        n_vocab,
                        rng,
                    );
                    tokens.iter().all(|t| t.last() == Some(&eot))
                }
                Search::Beam(beam) => {
                    let (next, source) = beam.update(&tokens, &logits, &mut sum_logprobs, n_vocab);
                    tokens = next;
                    session.reorder(&source)?;
                    beam.completed()
                }
            };
            if completed || tokens[0].len() > self.n_ctx {
                break;
            }
            let last: Vec<Vec<u32>> = tokens.iter().map(|t| vec![*t.last().unwrap()]).collect();
            logits = session.forward(&last)?;
        }

        // The candidates, cut between the first sampled token and <|endoftext|>.
        let (candidates, scores) = match search {
            Search::Greedy => (
                tokens
                    .into_iter()
                    .map(|mut t| {
                        t.push(eot);
                        t
                    })
                    .collect::<Vec<_>>(),
                sum_logprobs,
            ),
            Search::Beam(beam) => beam.finalize(&tokens, &sum_logprobs),
        };
        let begin = self.filters.sample_begin;
        let candidates: Vec<Vec<u32>> = candidates
            .into_iter()
            .map(|t| {
                let end = t[begin..]
                    .iter()
                    .position(|&x| x == eot)
                    .map_or(t.len(), |p| begin + p);
                t[begin..end].to_vec()
            })
            .collect();
        let selected = rank(&candidates, &scores, self.options.length_penalty);
        Ok(self.result(
            candidates[selected].clone(),
            scores[selected],
            no_speech_prob,
        ))
    }

    /// The result of a decoding that sampled `tokens` (cut before `<|endoftext|>`) with
    /// summed log probability `sum_logprob`.
    fn result(&self, tokens: Vec<u32>, sum_logprob: f64, no_speech_prob: f64) -> DecodingResult {
        let text = self.tokenizer.decode(&tokens).trim().to_string();
        DecodingResult {
            language: self.language.clone(),
            avg_logprob: sum_logprob / (tokens.len() + 1) as f64,
            compression_ratio: compression_ratio(&text),
            tokens,
            text,
            no_speech_prob,
            temperature: self.options.temperature,
        }
    }

    /// Decodes a batch of windows side by side on `session`, whose rows are the windows
    /// (fresh: [`DecoderModel::batch_session`](crate::model::DecoderModel::batch_session)):
    /// each window as [`run`](DecodingTask::run) decodes it alone with one sequence (greedy at
    /// temperature 0, one draw above), every forward pass running the windows still
    /// decoding at once; a window leaves the batch when its text ends. Beam search and
    /// best-of are not batched.
    pub fn run_batch(
        &self,
        session: &mut dyn Session,
        windows: usize,
        rng: &mut Rng,
    ) -> Result<Vec<DecodingResult>, TranscribeError> {
        if self.options.beam_size.is_some() || self.n_group != 1 {
            return Err(TranscribeError::Options(
                "batched decoding is greedy (one sequence a window): drop --beam-size and \
                 --best-of, or --batch-size"
                    .into(),
            ));
        }
        let special = *self.tokenizer.special();
        let n_vocab = self.tokenizer.n_vocab();
        let eot = special.eot;
        let head = self.initial_tokens[..=self.sot_index].to_vec();
        let at_sot = session.forward(&vec![head; windows])?;
        if at_sot.len() != windows * n_vocab {
            return Err(TranscribeError::Model(format!(
                "the decoder gives {} logits for {windows} windows, the tokenizer has {n_vocab} \
                 tokens",
                at_sot.len()
            )));
        }
        let no_speech: Vec<f64> = at_sot
            .chunks_exact(n_vocab)
            .map(|row| match special.no_speech {
                Some(t) => (row[t as usize] as f64 - logsumexp(row)).exp(),
                None => f64::NAN,
            })
            .collect();
        let tail = self.initial_tokens[self.sot_index + 1..].to_vec();
        let mut logits = if tail.is_empty() {
            at_sot
        } else {
            session.forward(&vec![tail; windows])?
        };
        let mut tokens = vec![self.initial_tokens.clone(); windows];
        let mut sums = vec![0.0f64; windows];
        // The window of each row of the session.
        let mut rows: Vec<usize> = (0..windows).collect();
        for _ in 0..self.sample_len {
            let mut going = Vec::with_capacity(rows.len());
            for (i, (row, &w)) in logits.chunks_exact_mut(n_vocab).zip(&rows).enumerate() {
                self.filters.apply(row, &tokens[w]);
                let next = if self.options.temperature == 0.0 {
                    argmax(row)
                } else {
                    sample(row, self.options.temperature, rng)
                };
                sums[w] += row[next] as f64 - logsumexp(row);
                tokens[w].push(next as u32);
                if next as u32 != eot {
                    going.push(i);
                }
            }
            // Every row holds as many tokens.
            if going.is_empty() || tokens[rows[0]].len() > self.n_ctx {
                break;
            }
            if going.len() != rows.len() {
                session.reorder(&going)?;
                rows = going.iter().map(|&i| rows[i]).collect();
            }
            let last: Vec<Vec<u32>> = rows
                .iter()
                .map(|&w| vec![*tokens[w].last().unwrap()])
                .collect();
            logits = session.forward(&last)?;
        }
        let begin = self.filters.sample_begin;
        Ok(tokens
            .into_iter()
            .zip(sums)
            .zip(no_speech)
            .map(|((t, sum), no_speech_prob)| {
                let end = t[begin..]
                    .iter()
                    .position(|&x| x == eot)
                    .map_or(t.len(), |p| begin + p);
                self.result(t[begin..end].to_vec(), sum, no_speech_prob)
            })
            .collect())
    }
}

enum Search {
    Greedy,
    Beam(BeamSearch),
}

/// OpenAI's `GreedyDecoder.update`: the most likely token (or a draw at `temperature`),
/// its log probability added while the row has not ended; ended rows repeat
/// `<|endoftext|>`.
fn greedy_update(
    tokens: &mut [Vec<u32>],
    logits: &[f32],
    sum_logprobs: &mut [f64],
    temperature: f32,
    eot: u32,
    n_vocab: usize,
    rng: &mut Rng,
) {
    for ((row, toks), sum) in logits
        .chunks_exact(n_vocab)
        .zip(tokens.iter_mut())
        .zip(sum_logprobs.iter_mut())
    {
        let next = if temperature == 0.0 {
            argmax(row)
        } else {
            sample(row, temperature, rng)
        };
        let ended = toks.last() == Some(&eot);
        if !ended {
            *sum += row[next] as f64 - logsumexp(row);
        }
        toks.push(if ended { eot } else { next as u32 });
    }
}

/// A draw from `softmax(logits / temperature)`.
fn sample(logits: &[f32], temperature: f32, rng: &mut Rng) -> usize {
    let t = temperature as f64;
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let weights: Vec<f64> = logits
        .iter()
        .map(|&x| ((x as f64 - max) / t).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    let mut target = rng.next_f64() * total;
    for (i, w) in weights.iter().enumerate() {
        if *w > 0.0 {
            if target < *w {
                return i;
            }
            target -= w;
        }
    }
    // Rounding left the target past the end: the last possible token.
    weights.iter().rposition(|&w| w > 0.0).unwrap_or(0)
}

/// OpenAI's `MaximumLikelihoodRanker`: the candidate with the best summed log probability
/// over its length, or over Google NMT's `((5 + length) / 6) ^ alpha`.
fn rank(candidates: &[Vec<u32>], scores: &[f64], length_penalty: Option<f32>) -> usize {
    let mut best = 0;
    let mut best_score = f64::NEG_INFINITY;
    for (i, (tokens, &logprob)) in candidates.iter().zip(scores).enumerate() {
        let length = tokens.len() as f64;
        let penalty = match length_penalty {
            None => length,
            Some(alpha) => ((5.0 + length) / 6.0).powf(alpha as f64),
        };
        let score = logprob / penalty;
        if i == 0 || score > best_score {
            best = i;
            best_score = score;
        }
    }
    best
}

/// OpenAI's `BeamSearchDecoder`, for one audio.
struct BeamSearch {
    beam_size: usize,
    eot: u32,
    max_candidates: usize,
    /// Finished sequences and their scores, in insertion order.
    finished: Vec<(Vec<u32>, f64)>,
}

impl BeamSearch {
    fn new(beam_size: usize, patience: Option<f32>, eot: u32) -> BeamSearch {
        let patience = patience.unwrap_or(1.0) as f64;
        BeamSearch {
            beam_size,
            eot,
            max_candidates: ((beam_size as f64 * patience).round_ties_even() as usize).max(1),
            finished: Vec::new(),
        }
    }

    /// One step: every beam's `beam_size + 1` best continuations, ranked; the best
    /// `beam_size` unfinished ones go on (returned with the beam each came from), the
    /// finished ones ahead of them are collected.
    fn update(
        &mut self,
        tokens: &[Vec<u32>],
        logits: &[f32],
        sum_logprobs: &mut [f64],
        n_vocab: usize,
    ) -> (Vec<Vec<u32>>, Vec<usize>) {
        // Candidates in insertion order; a sequence reached twice keeps its first place and
        // takes the later score and source, as a Python dict does.
        let mut order: Vec<Vec<u32>> = Vec::new();
        let mut seen: std::collections::HashMap<Vec<u32>, (f64, usize)> =
            std::collections::HashMap::new();
        for (idx, row) in logits.chunks_exact(n_vocab).enumerate() {
            let lse = logsumexp(row);
            let mut top: Vec<usize> = (0..n_vocab).collect();
            let k = (self.beam_size + 1).min(n_vocab);
            top.select_nth_unstable_by(k - 1, |&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
            top.truncate(k);
            top.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
            for token in top {
                let mut sequence = tokens[idx].clone();
                sequence.push(token as u32);
                let score = sum_logprobs[idx] + (row[token] as f64 - lse);
                if seen.insert(sequence.clone(), (score, idx)).is_none() {
                    order.push(sequence);
                }
            }
        }
        // Stable sort by score, best first (Python's sorted(..., reverse=True)).
        order.sort_by(|a, b| seen[b].0.total_cmp(&seen[a].0));
        let mut next = Vec::new();
        let mut source = Vec::new();
        let mut newly_finished: Vec<(Vec<u32>, f64)> = Vec::new();
        for sequence in order {
            let (score, from) = seen[&sequence];
            if sequence.last() == Some(&self.eot) {
                newly_finished.push((sequence, score));
            } else {
                sum_logprobs[next.len()] = score;
                next.push(sequence);
                source.push(from);
                if next.len() == self.beam_size {
                    break;
                }
            }
        }
        for (sequence, score) in newly_finished {
            if self.finished.len() >= self.max_candidates {
                break;
            }
            match self.finished.iter_mut().find(|(s, _)| *s == sequence) {
                Some(entry) => entry.1 = score,
                None => self.finished.push((sequence, score)),
            }
        }
        (next, source)
    }

    fn completed(&self) -> bool {
        self.finished.len() >= self.max_candidates
    }

    /// The finished sequences, topped up with the best unfinished ones (ended with
    /// `<|endoftext|>`) when fewer than `beam_size` finished.
    fn finalize(mut self, tokens: &[Vec<u32>], sum_logprobs: &[f64]) -> (Vec<Vec<u32>>, Vec<f64>) {
        if self.finished.len() < self.beam_size {
            let mut order: Vec<usize> = (0..tokens.len()).collect();
            order.sort_by(|&a, &b| sum_logprobs[b].total_cmp(&sum_logprobs[a]));
            for j in order {
                let mut sequence = tokens[j].clone();
                sequence.push(self.eot);
                match self.finished.iter_mut().find(|(s, _)| *s == sequence) {
                    Some(entry) => entry.1 = sum_logprobs[j],
                    None => self.finished.push((sequence, sum_logprobs[j])),
                }
                if self.finished.len() >= self.beam_size {
                    break;
                }
            }
        }
        self.finished.into_iter().unzip()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suppress_tokens_parse_as_openai_does() {
        let s: SuppressTokens = "-1".parse().unwrap();
        assert!(s.non_speech && s.ids.is_empty());
        let s: SuppressTokens = "1, 2,-1".parse().unwrap();
        assert!(s.non_speech && s.ids == [1, 2]);
        let s: SuppressTokens = "".parse().unwrap();
        assert!(!s.non_speech && s.ids.is_empty());
        assert!("x".parse::<SuppressTokens>().is_err());
        assert!("-2".parse::<SuppressTokens>().is_err());
    }

    #[test]
    fn python_tails_are_pythons() {
        let xs = [1, 2, 3, 4];
        // Python: xs[-2:], xs[-0:], xs[-(-1):], xs[-9:], xs[-(-9):]
        assert_eq!(python_tail(&xs, 2), [3, 4]);
        assert_eq!(python_tail(&xs, 0), [1, 2, 3, 4]);
        assert_eq!(python_tail(&xs, -1), [2, 3, 4]);
        assert_eq!(python_tail(&xs, 9), [1, 2, 3, 4]);
        assert!(python_tail(&xs, -9).is_empty());
    }

    #[test]
    fn compression_ratio_of_a_loop_is_high() {
        let looped = "I'm going to go. ".repeat(20);
        assert!(compression_ratio(&looped) > 2.4);
        assert!(compression_ratio("And so my fellow Americans") < 1.2);
    }

    #[test]
    fn ranking_divides_by_length_or_the_penalty() {
        let c = vec![vec![1, 2, 3, 4], vec![1]];
        // -4 over 4 tokens beats -2 over 1.
        assert_eq!(rank(&c, &[-4.0, -2.0], None), 0);
        // With alpha 0 the penalty is 1: the raw sums decide.
        assert_eq!(rank(&c, &[-4.0, -2.0], Some(0.0)), 1);
    }

    #[test]
    fn sampling_follows_the_distribution() {
        let logits = [0.0f32, (3.0f32).ln(), f32::NEG_INFINITY];
        let mut rng = Rng::new(7);
        let mut counts = [0usize; 3];
        for _ in 0..40_000 {
            counts[sample(&logits, 1.0, &mut rng)] += 1;
        }
        assert_eq!(counts[2], 0);
        let share = counts[1] as f64 / 40_000.0;
        assert!((share - 0.75).abs() < 0.01, "{share}");
    }
}
