//! A whole input to a transcript: openai-whisper's `transcribe()` (whisper/transcribe.py,
//! release 20250625) over this project's encoder and decoder.
//!
//! The spectrogram of the whole input is computed first ([`MelSpool`]); then the seek loop:
//! 30 s from `seek` go through the encoder, the window is decoded with the temperature
//! fallback, skipped as silence when `<|nospeech|>` is likely and the text improbable, cut into
//! segments at pairs of timestamps, and `seek` moves to the last complete timestamp (or the
//! window's end); the text so far prompts the next window.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::decoding::{DecodingOptions, DecodingResult, DecodingTask, Rng};
use super::languages::{language_code, language_name};
use super::tokenizer::{Task, WhisperTokenizer};
use crate::audio::{AudioStream, HOP_LENGTH, Input, LogMel, MelSpool, N_FRAMES, SAMPLE_RATE};
use crate::model::{
    DecoderFiles, DecoderHints, DecoderModel, Encoder, EncoderOptions, ModelFiles, locate,
};

/// How to transcribe (the options of OpenAI's `transcribe()`).
#[derive(Debug, Clone)]
pub struct TranscribeOptions {
    /// How each window is decoded; its `temperature` and `prompt` are set per window.
    pub decoding: DecodingOptions,
    /// Temperatures tried in turn while a decoding fails the thresholds below.
    pub temperatures: Vec<f32>,
    /// A decoding whose gzip compression ratio is above this is too repetitive.
    pub compression_ratio_threshold: Option<f64>,
    /// A decoding whose average log probability is below this failed.
    pub logprob_threshold: Option<f64>,
    /// A window whose `<|nospeech|>` probability is above this, and whose decoding failed
    /// the log probability threshold, is silence.
    pub no_speech_threshold: Option<f64>,
    /// Whether the previous text prompts the next window.
    pub condition_on_previous_text: bool,
    /// Text that prompts the first window (names, spellings, a style).
    pub initial_prompt: Option<String>,
    /// Whether the initial prompt prompts every window, ahead of the previous text.
    pub carry_initial_prompt: bool,
    /// Seed of the draws at temperatures above 0.
    pub seed: u64,
}

impl Default for TranscribeOptions {
    fn default() -> Self {
        TranscribeOptions {
            decoding: DecodingOptions::default(),
            temperatures: vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
            compression_ratio_threshold: Some(2.4),
            logprob_threshold: Some(-1.0),
            no_speech_threshold: Some(0.6),
            condition_on_previous_text: true,
            initial_prompt: None,
            carry_initial_prompt: false,
            seed: 0,
        }
    }
}

/// One segment of a transcript (the fields of openai-whisper's segments).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Segment {
    /// Position in the transcript, from 0.
    pub id: usize,
    /// The mel frame the window started at.
    pub seek: usize,
    /// Start, in seconds.
    pub start: f64,
    /// End, in seconds.
    pub end: f64,
    /// The text, with its leading space.
    pub text: String,
    /// Its tokens, timestamps included.
    pub tokens: Vec<u32>,
    /// The temperature the window was decoded at.
    pub temperature: f32,
    /// The window's average log probability.
    pub avg_logprob: f64,
    /// The window's text compression ratio.
    pub compression_ratio: f64,
    /// The window's `<|nospeech|>` probability.
    pub no_speech_prob: f64,
}

/// Where the time went.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    /// Loading the encoder and the tokenizer, in seconds (the decoder loads meanwhile on a
    /// thread of its own, see `decoder_wait`).
    pub load: f64,
    /// Decoding the audio and computing its spectrogram.
    pub mel: f64,
    /// Each encoder run, in order.
    pub encoder: Vec<f64>,
    /// Waiting for the decoder's loading, which runs beside the spectrogram and the first
    /// encoder run (0 once it is loaded).
    pub decoder_wait: f64,
    /// The decoder, language detection included.
    pub decoder: f64,
    /// The decoder's forward passes (the prompt's and one for each later token, of all beams
    /// or candidates together), for its time per token.
    pub decoder_forwards: usize,
    /// From the start of [`Transcriber::transcribe`] to the transcript.
    pub total: f64,
    /// Seconds of audio per second of `total`.
    pub realtime_factor: f64,
}

/// A transcript.
#[derive(Debug, Clone, Serialize)]
pub struct Transcript {
    /// The whole text.
    pub text: String,
    /// The segments, in order.
    pub segments: Vec<Segment>,
    /// The language code (given, detected, or `en` for English-only models).
    pub language: String,
    /// The probability of each language when it was detected, best first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language_probs: Option<Vec<(String, f64)>>,
    /// Seconds of audio.
    pub duration: f64,
    /// Where the time went.
    pub timings: Timings,
}

/// Events of a transcription, for a caller that shows progress.
pub trait Progress {
    /// The audio has been read: `seconds` of it.
    fn audio_read(&mut self, _seconds: f64) {}
    /// The language was detected (probability `p`).
    fn language(&mut self, _code: &str, _p: f64) {}
    /// A segment is complete.
    fn segment(&mut self, _segment: &Segment) {}
    /// `done` of `total` mel frames are transcribed.
    fn position(&mut self, _done: usize, _total: usize) {}
    /// A window was decoded again at a higher temperature, or skipped as silence.
    fn note(&mut self, _message: &str) {}
}

/// A [`Progress`] that shows nothing.
pub struct Quiet;

impl Progress for Quiet {}

/// Why a model cannot transcribe, or a transcription failed.
#[derive(Debug, thiserror::Error)]
pub enum TranscribeError {
    /// The model directory lacks a file transcription needs.
    #[error("{dir}: {what} is missing: {fix}")]
    Missing {
        /// The model directory.
        dir: PathBuf,
        /// The file.
        what: &'static str,
        /// How to get it.
        fix: &'static str,
    },
    /// The options do not fit this model or each other.
    #[error("{0}")]
    Options(String),
    /// The audio cannot be read.
    #[error(transparent)]
    Audio(#[from] crate::audio::AudioError),
    /// The encoder cannot be loaded or failed on a window.
    #[error(transparent)]
    Encoder(#[from] crate::model::EncoderError),
    /// The decoder cannot be loaded or failed.
    #[error(transparent)]
    Decoder(#[from] crate::model::DecoderError),
    /// The tokenizer cannot be loaded.
    #[error(transparent)]
    Tokenizer(#[from] super::TokenizerError),
    /// A configuration file of the model cannot be read.
    #[error("{path}: {detail}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong, and what to do.
        detail: String,
    },
    /// The model's parts do not fit together (the decoder's vocabulary and the tokenizer's,
    /// the encoder's width and the decoder's), or its decoder failed to load (the message).
    #[error("{0}")]
    Model(String),
}

/// A Whisper model ready to transcribe: encoder (on the chosen backend), decoder (CPU) and
/// tokenizer.
pub struct Transcriber {
    dir: PathBuf,
    encoder: Encoder,
    decoder: std::sync::OnceLock<Result<DecoderModel, String>>,
    /// The decoder's loading thread, joined when the decoder is first needed.
    loading: std::sync::Mutex<Option<DecoderLoad>>,
    tokenizer: WhisperTokenizer,
    n_text_ctx: usize,
    load_time: Duration,
}

/// A decoder being loaded on a thread of its own.
type DecoderLoad = std::thread::JoinHandle<Result<DecoderModel, crate::model::DecoderError>>;

impl std::fmt::Debug for Transcriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transcriber")
            .field("dir", &self.dir)
            .field("decoder", &self.decoder.get())
            .finish_non_exhaustive()
    }
}

/// `config.json` fields the decoder needs.
#[derive(Debug, Default, serde::Deserialize)]
struct TextConfig {
    max_target_positions: Option<usize>,
    decoder_attention_heads: Option<usize>,
    d_model: Option<usize>,
    max_source_positions: Option<usize>,
    vocab_size: Option<usize>,
}

impl Transcriber {
    /// Loads the model in `dir` (a model directory, or its encoder `.onnx` file): the encoder
    /// with `options`, the decoder on as many threads, the tokenizer.
    pub fn load(dir: &Path, options: &EncoderOptions) -> Result<Transcriber, TranscribeError> {
        let started = Instant::now();
        let files: ModelFiles = locate(dir)?;
        let root = files
            .encoder
            .parent()
            .map(|p| {
                if p.file_name().is_some_and(|n| n == "onnx") {
                    p.parent().unwrap_or(p)
                } else {
                    p
                }
            })
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let tokenizer_path = files.tokenizer.clone().ok_or(TranscribeError::Missing {
            dir: root.clone(),
            what: "tokenizer.json",
            fix: "copy the tokenizer.json of the same checkpoint there (Hugging Face repositories \
                  and faster-whisper models carry one)",
        })?;
        let decoder_files = DecoderFiles::locate(&root)?;
        let config: TextConfig = match &files.config {
            Some(path) => {
                let bytes = std::fs::read(path).map_err(|e| TranscribeError::Config {
                    path: path.clone(),
                    detail: format!("cannot read: {e}"),
                })?;
                serde_json::from_slice(&bytes).map_err(|e| TranscribeError::Config {
                    path: path.clone(),
                    detail: format!("not valid JSON ({e}); fix or remove it"),
                })?
            }
            None => TextConfig::default(),
        };
        let spawn_decoder = |d_model, n_audio_ctx| {
            let hints = DecoderHints {
                d_model,
                n_audio_ctx,
                n_heads: config.decoder_attention_heads,
            };
            let (files, threads) = (decoder_files.clone(), options.threads);
            std::thread::spawn(move || DecoderModel::load(files, hints, threads))
        };
        // With the widths in config.json, the decoder loads on a thread of its own while the
        // encoder loads and runs its first window (loading is mostly one thread's work); else
        // it starts once the encoder, which tells them, is loaded.
        let (encoder, loading) = match (config.d_model, config.max_source_positions) {
            (Some(d_model), Some(n_audio_ctx)) => {
                let loading = spawn_decoder(d_model, n_audio_ctx);
                (Encoder::load_files(files.clone(), options), loading)
            }
            _ => {
                let encoder = Encoder::load_files(files.clone(), options)?;
                let dims = *encoder.dims();
                let loading = spawn_decoder(dims.d_model, dims.n_audio_ctx);
                (Ok(encoder), loading)
            }
        };
        let encoder = encoder?;
        let mut transcriber = Transcriber {
            dir: root.clone(),
            encoder,
            decoder: std::sync::OnceLock::new(),
            loading: std::sync::Mutex::new(Some(loading)),
            tokenizer: WhisperTokenizer::dummy(),
            n_text_ctx: config.max_target_positions.unwrap_or(448),
            load_time: Duration::ZERO,
        };
        // The tokenizer needs the decoder's vocabulary size: config.json says it, else the
        // decoder, once loaded.
        let n_vocab = match config.vocab_size {
            Some(n) => n,
            None => transcriber.decoder()?.shape().n_vocab,
        };
        let generation = Some(root.join("generation_config.json")).filter(|p| p.is_file());
        transcriber.tokenizer =
            WhisperTokenizer::load(&tokenizer_path, generation.as_deref(), n_vocab)?;
        transcriber.load_time = started.elapsed();
        Ok(transcriber)
    }

    /// Waits for the decoder, loaded on its own thread, and checks it against the encoder and
    /// the tokenizer.
    fn join_decoder(&self) -> Result<DecoderModel, String> {
        let loading = self
            .loading
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or("the decoder's loading thread is gone")?;
        let decoder = loading
            .join()
            .map_err(|_| "the decoder's loading thread panicked".to_string())?
            .map_err(|e| e.to_string())?;
        let dims = *self.encoder.dims();
        if (dims.d_model, dims.n_audio_ctx)
            != (decoder.shape().d_model, decoder.shape().n_audio_ctx)
        {
            return Err(format!(
                "{}: config.json gives d_model {} and {} positions, the encoder has {} and {}",
                self.dir.display(),
                decoder.shape().d_model,
                decoder.shape().n_audio_ctx,
                dims.d_model,
                dims.n_audio_ctx
            ));
        }
        Ok(decoder)
    }

    /// The encoder.
    pub fn encoder(&self) -> &Encoder {
        &self.encoder
    }

    /// The decoder (loaded on a thread of its own: this waits for it the first time).
    pub fn decoder(&self) -> Result<&DecoderModel, TranscribeError> {
        let decoder = self.decoder.get_or_init(|| {
            let decoder = self.join_decoder()?;
            if self.tokenizer.n_vocab() != 0 && decoder.shape().n_vocab != self.tokenizer.n_vocab()
            {
                return Err(format!(
                    "{}: config.json gives vocab_size {}, the decoder has {} logits",
                    self.dir.display(),
                    self.tokenizer.n_vocab(),
                    decoder.shape().n_vocab
                ));
            }
            Ok(decoder)
        });
        decoder
            .as_ref()
            .map_err(|e| TranscribeError::Model(e.to_string()))
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &WhisperTokenizer {
        &self.tokenizer
    }

    /// The model directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Time spent loading.
    pub fn load_time(&self) -> Duration {
        self.load_time
    }

    /// Checks `options` against the model: the language it knows, the task it can do.
    pub fn check_options(&self, options: &TranscribeOptions) -> Result<(), TranscribeError> {
        let d = &options.decoding;
        super::decoding::verify_options(d).map_err(TranscribeError::Options)?;
        if options.temperatures.is_empty() {
            return Err(TranscribeError::Options(
                "give at least one temperature".into(),
            ));
        }
        if let Some(language) = &d.language {
            let code = language_code(language).ok_or_else(|| {
                TranscribeError::Options(format!(
                    "unknown language {language:?}: give a code or an English name, such as \
                     en, fr or German"
                ))
            })?;
            if !self.tokenizer.is_multilingual() {
                if code != "en" {
                    return Err(TranscribeError::Options(format!(
                        "this model is English-only and cannot transcribe {}: choose a \
                         multilingual model (tiny, base, small, medium, large-v3) for --language \
                         {code}",
                        language_name(code)
                    )));
                }
            } else if self.tokenizer.language_token(code).is_none() {
                return Err(TranscribeError::Options(format!(
                    "this model does not know {} ({code})",
                    language_name(code)
                )));
            }
        }
        if d.task == Task::Translate && !self.tokenizer.is_multilingual() {
            return Err(TranscribeError::Options(
                "this model is English-only: it cannot translate; choose a multilingual model"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Transcribes `input`; `progress` hears of each segment as it is decoded.
    pub fn transcribe(
        &self,
        input: &Input,
        options: &TranscribeOptions,
        progress: &mut dyn Progress,
    ) -> Result<Transcript, TranscribeError> {
        self.check_options(options)?;
        let started = Instant::now();
        let dims = *self.encoder.dims();
        let mut stream = AudioStream::open(input)?;
        let mel = LogMel::new(dims.n_mels);
        let mut spool = MelSpool::build(&mut stream, &mel, &mut |s| progress.audio_read(s))?;
        let mut timings = Timings {
            load: self.load_time.as_secs_f64(),
            mel: started.elapsed().as_secs_f64(),
            ..Timings::default()
        };
        let content_frames = spool.content_frames();
        let duration = spool.seconds();
        let mut window = vec![0.0f32; dims.n_mels * N_FRAMES];
        let mut decoder_time = Duration::ZERO;
        // Waits for the decoder's loading (once), counted apart from its runs.
        let wait_decoder = |timings: &mut Timings| -> Result<(), TranscribeError> {
            let t = Instant::now();
            self.decoder()?;
            timings.decoder_wait += t.elapsed().as_secs_f64();
            Ok(())
        };

        // The language: given, English for English-only models, else detected on the first
        // 30 s.
        let mut language_probs = None;
        let mut first_window: Option<(Vec<f32>, Vec<f32>)> = None;
        let language = match options.decoding.language.as_deref() {
            Some(l) => language_code(l).expect("checked").to_string(),
            None if !self.tokenizer.is_multilingual() => "en".to_string(),
            None => {
                spool.detection_window(&mut window)?;
                let t = Instant::now();
                let features = self.encoder.encode(&window)?;
                timings.encoder.push(t.elapsed().as_secs_f64());
                wait_decoder(&mut timings)?;
                let t = Instant::now();
                let probs = self.detect_language(&features)?;
                decoder_time += t.elapsed();
                timings.decoder_forwards += 1;
                first_window = Some((window.clone(), features));
                let (code, p) = probs[0].clone();
                progress.language(&code, p);
                language_probs = Some(probs);
                code
            }
        };

        let tokenizer = &self.tokenizer;
        let special = *tokenizer.special();
        let input_stride = N_FRAMES / dims.n_audio_ctx;
        let time_precision = (input_stride * HOP_LENGTH) as f64 / SAMPLE_RATE as f64;
        let mut all_tokens: Vec<u32> = Vec::new();
        let mut segments: Vec<Segment> = Vec::new();
        let mut prompt_reset_since = 0;
        let mut remaining_prompt_length = self.n_text_ctx / 2 - 1;
        let initial_prompt_tokens = match &options.initial_prompt {
            Some(p) => tokenizer.encode(&format!(" {}", p.trim())),
            None => Vec::new(),
        };
        all_tokens.extend_from_slice(&initial_prompt_tokens);
        remaining_prompt_length =
            remaining_prompt_length.saturating_sub(initial_prompt_tokens.len());
        let mut rng = Rng::new(options.seed);

        let mut seek = 0usize;
        while seek < content_frames {
            let time_offset = (seek * HOP_LENGTH) as f64 / SAMPLE_RATE as f64;
            let segment_size = N_FRAMES.min(content_frames - seek);
            let segment_duration = (segment_size * HOP_LENGTH) as f64 / SAMPLE_RATE as f64;
            spool.window(seek, segment_size, &mut window)?;
            let t = Instant::now();
            let features = match first_window.take() {
                Some((mel, features)) if mel == window => features,
                _ => self.encoder.encode(&window)?,
            };
            timings.encoder.push(t.elapsed().as_secs_f64());
            for note in self.encoder.take_notes() {
                progress.note(&note);
            }

            let prompt = if options.carry_initial_prompt {
                let ignored = initial_prompt_tokens.len().max(prompt_reset_since);
                let rest = &all_tokens[ignored.min(all_tokens.len())..];
                let rest = &rest[rest.len().saturating_sub(remaining_prompt_length)..];
                [initial_prompt_tokens.as_slice(), rest].concat()
            } else {
                all_tokens[prompt_reset_since..].to_vec()
            };
            wait_decoder(&mut timings)?;
            let t = Instant::now();
            let (result, forwards) = self
                .decode_with_fallback(&features, &language, prompt, options, &mut rng, progress)?;
            timings.decoder_forwards += forwards;
            decoder_time += t.elapsed();

            if let Some(threshold) = options.no_speech_threshold {
                let mut skip = result.no_speech_prob > threshold;
                if options
                    .logprob_threshold
                    .is_some_and(|l| result.avg_logprob > l)
                {
                    skip = false;
                }
                if skip {
                    seek += segment_size;
                    progress.position(seek.min(content_frames), content_frames);
                    continue;
                }
            }

            let previous_seek = seek;
            let tokens = &result.tokens;
            let is_ts: Vec<bool> = tokens
                .iter()
                .map(|&t| t >= special.timestamp_begin)
                .collect();
            let n = tokens.len();
            let single_timestamp_ending = n >= 2 && !is_ts[n - 2] && is_ts[n - 1];
            let consecutive: Vec<usize> = (1..n).filter(|&i| is_ts[i - 1] && is_ts[i]).collect();
            let ts_pos = |t: u32| (t - special.timestamp_begin) as f64;
            let mut current: Vec<Segment> = Vec::new();
            let new_segment = |start: f64, end: f64, tokens: &[u32]| {
                let text_tokens: Vec<u32> = tokens
                    .iter()
                    .copied()
                    .filter(|&t| t < special.eot)
                    .collect();
                Segment {
                    id: 0,
                    seek: previous_seek,
                    start,
                    end,
                    text: tokenizer.decode(&text_tokens),
                    tokens: tokens.to_vec(),
                    temperature: result.temperature,
                    avg_logprob: result.avg_logprob,
                    compression_ratio: result.compression_ratio,
                    no_speech_prob: result.no_speech_prob,
                }
            };
            if !consecutive.is_empty() {
                let mut slices = consecutive.clone();
                if single_timestamp_ending {
                    slices.push(n);
                }
                let mut last_slice = 0;
                for &current_slice in &slices {
                    let sliced = &tokens[last_slice..current_slice];
                    let start = time_offset + ts_pos(sliced[0]) * time_precision;
                    let end = time_offset + ts_pos(sliced[sliced.len() - 1]) * time_precision;
                    current.push(new_segment(start, end, sliced));
                    last_slice = current_slice;
                }
                if single_timestamp_ending {
                    seek += segment_size;
                } else {
                    let last_timestamp_pos = tokens[last_slice - 1] - special.timestamp_begin;
                    seek += last_timestamp_pos as usize * input_stride;
                }
            } else {
                let mut duration = segment_duration;
                if let Some(&last) = tokens.iter().rev().find(|&&t| t >= special.timestamp_begin)
                    && last != special.timestamp_begin
                {
                    duration = ts_pos(last) * time_precision;
                }
                current.push(new_segment(time_offset, time_offset + duration, tokens));
                seek += segment_size;
            }

            if seek == previous_seek {
                // The only complete segment ends at 0.00: OpenAI's loop would decode this
                // window again forever; move on by the window instead.
                seek += segment_size;
            }
            for segment in current.iter_mut() {
                if segment.start == segment.end || segment.text.trim().is_empty() {
                    segment.text.clear();
                    segment.tokens.clear();
                }
            }
            for mut segment in current {
                segment.id = segments.len();
                all_tokens.extend_from_slice(&segment.tokens);
                progress.segment(&segment);
                segments.push(segment);
            }
            if !options.condition_on_previous_text || result.temperature > 0.5 {
                prompt_reset_since = all_tokens.len();
            }
            progress.position(seek.min(content_frames), content_frames);
        }
        timings.decoder = decoder_time.as_secs_f64();
        timings.total = started.elapsed().as_secs_f64();
        timings.realtime_factor = duration / timings.total.max(1e-9);
        Ok(Transcript {
            text: tokenizer.decode(&all_tokens[initial_prompt_tokens.len()..]),
            segments,
            language,
            language_probs,
            duration,
            timings,
        })
    }

    /// Decodes one window's log-mel spectrogram (`[n_mels, 3000]`, as [`crate::audio::LogMel`]
    /// computes it) as openai-whisper's `decode()` does: the encoder, then one decoding with
    /// `options` (language detected when it is `None` on a multilingual model). No fallback,
    /// no seek: that is [`transcribe`](Transcriber::transcribe).
    pub fn decode(
        &self,
        mel: &[f32],
        options: &DecodingOptions,
    ) -> Result<DecodingResult, TranscribeError> {
        let check = TranscribeOptions {
            decoding: options.clone(),
            ..TranscribeOptions::default()
        };
        self.check_options(&check)?;
        let features = self.encoder.encode(mel)?;
        let language = match options.language.as_deref() {
            Some(l) => language_code(l).expect("checked").to_string(),
            None if !self.tokenizer.is_multilingual() => "en".to_string(),
            None => self.detect_language(&features)?[0].0.clone(),
        };
        let mut options = options.clone();
        options.language = Some(language);
        let task = DecodingTask::new(
            &self.tokenizer,
            options,
            self.n_text_ctx,
            self.encoder.dims().n_audio_ctx,
        )
        .map_err(TranscribeError::Options)?;
        let mut session = self.decoder()?.session(&features)?;
        task.run(&mut session, &mut Rng::new(0))
    }

    /// OpenAI's `detect_language`: the logits after `<|startoftranscript|>` over the language
    /// tokens only; their probabilities, best first.
    fn detect_language(&self, features: &[f32]) -> Result<Vec<(String, f64)>, TranscribeError> {
        let mut session = self.decoder()?.session(features)?;
        let logits = session.forward(&[vec![self.tokenizer.special().sot]])?;
        let languages = self.tokenizer.languages();
        let max = languages
            .iter()
            .map(|&(_, t)| logits[t as usize] as f64)
            .fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = languages
            .iter()
            .map(|&(_, t)| (logits[t as usize] as f64 - max).exp())
            .sum();
        let mut probs: Vec<(String, f64)> = languages
            .iter()
            .map(|&(code, t)| {
                (
                    code.to_string(),
                    (logits[t as usize] as f64 - max).exp() / sum,
                )
            })
            .collect();
        // Stable: ties keep token order, as argmax takes the first.
        probs.sort_by(|a, b| b.1.total_cmp(&a.1));
        Ok(probs)
    }

    /// OpenAI's `decode_with_fallback`: decodes at each temperature in turn until the result is
    /// neither too repetitive nor too improbable (or improbable but likely silence). Also
    /// returns the decoder's forward passes.
    fn decode_with_fallback(
        &self,
        features: &[f32],
        language: &str,
        prompt: Vec<u32>,
        options: &TranscribeOptions,
        rng: &mut Rng,
        progress: &mut dyn Progress,
    ) -> Result<(DecodingResult, usize), TranscribeError> {
        let mut session = self.decoder()?.session(features)?;
        let mut first = true;
        let result = with_fallback(options, progress, |decoding| {
            let mut decoding = decoding;
            decoding.language = Some(language.to_string());
            decoding.prompt = prompt.clone();
            if !first {
                session.reset();
            }
            first = false;
            let task = DecodingTask::new(
                &self.tokenizer,
                decoding,
                self.n_text_ctx,
                self.encoder.dims().n_audio_ctx,
            )
            .map_err(TranscribeError::Options)?;
            task.run(&mut session, rng)
        })?;
        Ok((result, session.forwards()))
    }
}

/// OpenAI's temperature fallback: `decode` runs with each of `options.temperatures` in turn
/// (beam search only at 0, best-of only above) until its result is neither too repetitive
/// (compression ratio above the threshold) nor too improbable (average log probability below
/// it) -- or is improbable but likely silence (no-speech probability above its threshold),
/// which the caller then skips. The last result is returned when every temperature fails.
fn with_fallback(
    options: &TranscribeOptions,
    progress: &mut dyn Progress,
    mut decode: impl FnMut(DecodingOptions) -> Result<DecodingResult, TranscribeError>,
) -> Result<DecodingResult, TranscribeError> {
    let mut result: Option<DecodingResult> = None;
    for (i, &t) in options.temperatures.iter().enumerate() {
        let mut decoding = options.decoding.clone();
        decoding.temperature = t;
        if t > 0.0 {
            decoding.beam_size = None;
            decoding.patience = None;
        } else {
            decoding.best_of = None;
        }
        let r = decode(decoding)?;
        let too_repetitive = options
            .compression_ratio_threshold
            .is_some_and(|c| r.compression_ratio > c);
        let improbable = options.logprob_threshold.is_some_and(|l| r.avg_logprob < l);
        let silence = improbable
            && options
                .no_speech_threshold
                .is_some_and(|n| r.no_speech_prob > n);
        let needs_fallback = (too_repetitive || improbable) && !silence;
        if needs_fallback && i + 1 < options.temperatures.len() {
            progress.note(&format!(
                "decoding at temperature {t} failed (compression ratio {:.2}, average log \
                 probability {:.2}); trying {}",
                r.compression_ratio,
                r.avg_logprob,
                options.temperatures[i + 1]
            ));
        }
        result = Some(r);
        if !needs_fallback {
            break;
        }
    }
    Ok(result.expect("at least one temperature (checked)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(
        t: f32,
        compression_ratio: f64,
        avg_logprob: f64,
        no_speech_prob: f64,
    ) -> DecodingResult {
        DecodingResult {
            language: "en".into(),
            tokens: vec![],
            text: String::new(),
            avg_logprob,
            no_speech_prob,
            temperature: t,
            compression_ratio,
        }
    }

    /// Runs the fallback over `outcomes` (compression ratio, average log probability and
    /// no-speech probability at each temperature); returns the temperatures tried and whether
    /// beam search was on at each.
    fn fallback(outcomes: &[(f64, f64, f64)]) -> (Vec<f32>, Vec<bool>, f32) {
        let mut options = TranscribeOptions::default();
        options.decoding.beam_size = Some(5);
        let (mut tried, mut beams) = (Vec::new(), Vec::new());
        let r = with_fallback(&options, &mut Quiet, |d| {
            let (cr, lp, ns) = outcomes[tried.len()];
            tried.push(d.temperature);
            beams.push(d.beam_size.is_some());
            Ok(result(d.temperature, cr, lp, ns))
        })
        .unwrap();
        (tried, beams, r.temperature)
    }

    #[test]
    fn fallback_follows_openai() {
        // Good at once.
        assert_eq!(fallback(&[(1.5, -0.3, 0.1)]), (vec![0.0], vec![true], 0.0));
        // Repetitive, then improbable, then good: beam search only at 0.
        let (tried, beams, t) = fallback(&[(3.0, -0.3, 0.1), (1.5, -1.5, 0.1), (1.4, -0.5, 0.1)]);
        assert_eq!((tried, t), (vec![0.0, 0.2, 0.4], 0.4));
        assert_eq!(beams, [true, false, false]);
        // Improbable but likely silence: no fallback.
        assert_eq!(fallback(&[(1.5, -1.5, 0.9)]).0, [0.0]);
        // Repetitive silence still falls back.
        assert_eq!(
            fallback(&[(3.0, -0.5, 0.9), (1.0, -0.5, 0.9)]).0,
            [0.0, 0.2]
        );
        // Every temperature fails: the last result.
        let bad = [(3.0, -2.0, 0.1); 6];
        let (tried, _, t) = fallback(&bad);
        assert_eq!((tried.len(), t), (6, 1.0));
    }
}
