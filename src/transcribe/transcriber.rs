//! A whole input to a transcript: openai-whisper's `transcribe()` (whisper/transcribe.py,
//! release 20250625) over this project's encoder and decoder.
//!
//! The spectrogram of the whole input is computed first ([`MelSpool`]); then the seek loop:
//! 30 s from `seek` go through the encoder, the window is decoded with the temperature
//! fallback ([`with_fallback`]), skipped as silence when `<|nospeech|>` is likely and the text
//! improbable ([`TranscribeOptions::is_silence`]), cut into segments at pairs of timestamps
//! ([`cut_window`], which also says where the next window starts), and the text so far prompts
//! the next window ([`PromptContext`]). Each step is a function of its own; this file holds
//! the loop that strings them together over one input.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use std::ops::ControlFlow;

mod batch_queue;
mod batched;
mod word_times;

use word_times::{HeadsSource, WindowSeek, map_segment, seek_clips, word_pass, words_end};

use super::context::PromptContext;
use super::decoding::{DecodingOptions, DecodingResult, DecodingTask, Rng};
use super::languages::{language_code, language_name};
use super::options::{LanguageDetection, TranscribeOptions, with_fallback};
use super::segments::{WindowCuts, WindowSpan, cut_window};
use super::tokenizer::{Task, WhisperTokenizer};
use crate::audio::{
    AudioError, AudioStream, FloatSpool, Input, LogMel, MelSpool, N_FRAMES, SAMPLE_RATE,
};
use crate::model::{
    DecoderFiles, DecoderHints, DecoderModel, DecoderSession, Encoder, EncoderOptions, ModelFiles,
    locate,
};
use crate::vad::{SileroVad, SpeechChunk, TimestampsMap, VadOptions, speech_timestamps};

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
    /// With word timestamps, its words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub words: Option<Vec<super::timing::Word>>,
}

/// Where the time went.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    /// Loading the encoder and the tokenizer, in seconds (the decoder loads meanwhile on a
    /// thread of its own, see `decoder_wait`).
    pub load: f64,
    /// Decoding the audio and computing its spectrogram (and, with VAD, finding the speech).
    pub mel: f64,
    /// Of `mel`, the VAD model's runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vad: Option<f64>,
    /// Each encoder run, in order.
    pub encoder: Vec<f64>,
    /// Waiting for the decoder's loading, which runs beside the spectrogram and the first
    /// encoder run (0 once it is loaded).
    pub decoder_wait: f64,
    /// The decoder, language detection included.
    pub decoder: f64,
    /// With word timestamps, their alignment passes and the rules that read them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub words: Option<f64>,
    /// The decoder's forward passes (the prompt's and one for each later token, of all beams
    /// or candidates together), for its time per token.
    pub decoder_forwards: usize,
    /// Batched transcription: the windows of other transcriptions (running at the same time
    /// on the same [`Transcriber`]) that shared the decoder's batches with this one's.
    #[serde(skip_serializing_if = "is_zero")]
    pub shared_batch_windows: usize,
    /// From the start of [`Transcriber::transcribe`] to the transcript.
    pub total: f64,
    /// Seconds of audio per second of `total`.
    pub realtime_factor: f64,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
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
    /// With VAD, the speech transcribed, in the original audio (other audio was skipped).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speech: Option<Vec<SpeechChunk>>,
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
    /// Asked before each window (and each 30 s read while VAD reads the audio): `false`
    /// stops the transcription with [`TranscribeError::Cancelled`] (its reader has gone).
    fn keep_going(&mut self) -> bool {
        true
    }
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
    /// Voice activity detection failed, or its model cannot be had.
    #[error(transparent)]
    Vad(#[from] crate::vad::VadError),
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
    /// [`Progress::keep_going`] said to stop.
    #[error("the transcription was cancelled")]
    Cancelled,
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
    /// The VAD model, loaded (fetched if need be) when first asked for.
    vad: std::sync::OnceLock<SileroVad>,
    /// The alignment heads of word timestamps the model's files give.
    alignment_heads: Option<(word_times::AlignmentHeads, HeadsSource)>,
    /// A turn that encoder runs take, shared with other transcribers of the same device.
    encoder_turn: std::sync::OnceLock<EncoderTurn>,
    /// The windows of concurrent batched transcriptions, decoded in shared batches.
    batches: batch_queue::BatchQueue<batched::Window, batched::Decoded>,
}

/// The turn of a device that serves one encoder run at a time: transcriptions that share it
/// run their encoders one after another and everything else (decoding) side by side.
pub type EncoderTurn = std::sync::Arc<std::sync::Mutex<()>>;

/// A decoder being loaded on a thread of its own.
type DecoderLoad = std::thread::JoinHandle<Result<DecoderModel, crate::model::DecoderError>>;

/// Waits for the decoder loaded by `handle` and checks it against `encoder`.
fn join_decoder(
    handle: Option<DecoderLoad>,
    encoder: &Encoder,
    dir: &Path,
) -> Result<DecoderModel, String> {
    let decoder = handle
        .ok_or("the decoder's loading thread is gone")?
        .join()
        .map_err(|_| "the decoder's loading thread panicked".to_string())?
        .map_err(|e| e.to_string())?;
    let dims = *encoder.dims();
    let shape = decoder.shape();
    if (dims.d_model, dims.n_audio_ctx) != (shape.d_model, shape.n_audio_ctx) {
        return Err(format!(
            "{}: config.json gives d_model {} and {} positions, the encoder has {} and {}",
            dir.display(),
            shape.d_model,
            shape.n_audio_ctx,
            dims.d_model,
            dims.n_audio_ctx
        ));
    }
    Ok(decoder)
}

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
            let (files, threads, weights) = (
                decoder_files.clone(),
                options.threads,
                options.decoder_weights,
            );
            std::thread::spawn(move || DecoderModel::load_with(files, hints, threads, weights))
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
        // The tokenizer needs the decoder's vocabulary size: config.json says it, else the
        // decoder, once loaded.
        let decoder = std::sync::OnceLock::new();
        let mut loading = Some(loading);
        let n_vocab = match config.vocab_size {
            Some(n) => n,
            None => {
                let loaded = join_decoder(loading.take(), &encoder, &root)
                    .map_err(TranscribeError::Model)?;
                let n = loaded.shape().n_vocab;
                let _ = decoder.set(Ok(loaded));
                n
            }
        };
        let generation = Some(root.join("generation_config.json")).filter(|p| p.is_file());
        let tokenizer = WhisperTokenizer::load(&tokenizer_path, generation.as_deref(), n_vocab)?;
        let alignment_heads = word_times::configured_heads(&root)?;
        Ok(Transcriber {
            alignment_heads,
            dir: root,
            encoder,
            decoder,
            loading: std::sync::Mutex::new(loading),
            tokenizer,
            n_text_ctx: config.max_target_positions.unwrap_or(448),
            load_time: started.elapsed(),
            vad: std::sync::OnceLock::new(),
            encoder_turn: std::sync::OnceLock::new(),
            batches: Default::default(),
        })
    }

    /// The encoder.
    pub fn encoder(&self) -> &Encoder {
        &self.encoder
    }

    /// The decoder (loaded on a thread of its own: this waits for it the first time).
    pub fn decoder(&self) -> Result<&DecoderModel, TranscribeError> {
        let decoder = self.decoder.get_or_init(|| {
            let handle = self
                .loading
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            let decoder = join_decoder(handle, &self.encoder, &self.dir)?;
            if decoder.shape().n_vocab != self.tokenizer.n_vocab() {
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

    /// Whether the decoder has failed to load, asked without waiting for it: false while it
    /// is still loading.
    fn decoder_failed(&self) -> bool {
        let finished = self.decoder.get().is_some()
            || self
                .loading
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .is_some_and(|h| h.is_finished());
        finished && self.decoder().is_err()
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

    /// Makes `vad` the VAD model of transcriptions with [`TranscribeOptions::vad`] (else the
    /// cached Silero VAD, fetched the first time: [`crate::vad::model_path`]).
    pub fn set_vad(&self, vad: SileroVad) -> Result<(), TranscribeError> {
        self.vad.set(vad).map_err(|_| {
            TranscribeError::Options("the VAD model is already set for this model".into())
        })
    }

    /// Makes the encoder runs of this transcriber's transcriptions take `turn` (shared with the
    /// other users of the same device), so that concurrent transcriptions encode one window at
    /// a time and decode side by side. Set once.
    pub fn share_encoder(&self, turn: EncoderTurn) -> Result<(), TranscribeError> {
        self.encoder_turn.set(turn).map_err(|_| {
            TranscribeError::Options("the encoder's turn is already set for this model".into())
        })
    }

    /// The VAD model, fetched and loaded the first time.
    fn vad(&self, progress: &mut dyn Progress) -> Result<&SileroVad, TranscribeError> {
        if let Some(vad) = self.vad.get() {
            return Ok(vad);
        }
        let vad = SileroVad::fetch(&mut |m| progress.note(m))?;
        Ok(self.vad.get_or_init(|| vad))
    }

    /// Checks `options` against the model: the language it knows, the task it can do.
    pub fn check_options(&self, options: &TranscribeOptions) -> Result<(), TranscribeError> {
        options.verify().map_err(TranscribeError::Options)?;
        self.check_decoding(&options.decoding)
    }

    /// Checks the language and the task of `d` against the model.
    fn check_decoding(&self, d: &DecodingOptions) -> Result<(), TranscribeError> {
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
    ///
    /// The language, when a multilingual model is not told it, is detected on the first
    /// window as `options.language_detection` says ([`LanguageDetection`]); the first window
    /// reuses that encoding when it is the same (always for [`LanguageDetection::Window`],
    /// for inputs of 30 s and more with [`LanguageDetection::Openai`]), so the encoder runs
    /// once a window.
    pub fn transcribe(
        &self,
        input: &Input,
        options: &TranscribeOptions,
        progress: &mut dyn Progress,
    ) -> Result<Transcript, TranscribeError> {
        self.check_options(options)?;
        if self.decoder_failed() {
            self.decoder()?;
        }
        if let Some(batch_size) = options.batch_size {
            return self.transcribe_batched(input, options, batch_size, progress);
        }
        let started = Instant::now();
        let dims = *self.encoder.dims();
        let mut stream = AudioStream::open(input)?;
        let mel = LogMel::new(dims.n_mels);
        // The spectrogram is computed while the decoder loads; a decoder that fails stops it.
        let decoder_failed = || {
            if self.decoder_failed() {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        };
        let mut vad_time = None;
        let (spool, speech, duration) = match &options.vad {
            Some(vad_options) => {
                let vad = self.vad(progress)?;
                let t = Instant::now();
                let (mut samples, chunks) =
                    self.find_speech(&mut stream, vad, vad_options, progress)?;
                let n = samples.len();
                vad_time = Some(t.elapsed().as_secs_f64());
                let spool = MelSpool::from_blocks(
                    SpeechBlocks::new(&mut samples, &chunks),
                    &mel,
                    &mut |_| decoder_failed(),
                )?;
                (spool, Some(chunks), n as f64 / SAMPLE_RATE as f64)
            }
            None => {
                let spool = MelSpool::build_until(&mut stream, &mel, &mut |seconds| {
                    progress.audio_read(seconds);
                    decoder_failed()
                })?;
                let duration = spool.as_ref().map_or(0.0, |s| s.seconds());
                (spool, None, duration)
            }
        };
        let Some(mut spool) = spool else {
            self.decoder()?;
            unreachable!("the spectrogram stops only when the decoder has failed")
        };
        let to_original = speech.as_deref().map(TimestampsMap::new);
        let mut timings = Timings {
            load: self.load_time.as_secs_f64(),
            mel: started.elapsed().as_secs_f64(),
            vad: vad_time,
            ..Timings::default()
        };
        let content_frames = spool.content_frames();
        let mut window = vec![0.0f32; dims.n_mels * N_FRAMES];
        let input_stride = N_FRAMES / dims.n_audio_ctx;
        let tokenizer = &self.tokenizer;
        let special = *tokenizer.special();
        let mut context = PromptContext::new(
            self.initial_prompt(options),
            self.n_text_ctx,
            options.carry_initial_prompt,
        );
        let mut rng = Rng::new(options.seed);
        let mut language = options
            .decoding
            .language
            .as_deref()
            .map(|l| language_code(l).expect("checked").to_string())
            .or_else(|| (!tokenizer.is_multilingual()).then(|| "en".to_string()));
        let mut language_probs = None;
        let mut detected: Option<(Vec<f32>, Vec<f32>)> = None;
        if language.is_none() {
            detection_window(&mut spool, options.language_detection, &mut window)?;
            let (probs, features) = self.detect_timed(&window, &mut timings, progress)?;
            language = Some(probs[0].0.clone());
            language_probs = Some(probs);
            detected = Some((window.clone(), features));
        }
        let language = language.expect("given, English-only, or detected");
        let mut segments: Vec<Segment> = Vec::new();

        let clips = seek_clips(&options.clip_timestamps, content_frames);
        let mut clip = 0;
        let mut seek = clips.first().map_or(content_frames, |c| c.0);
        let mut last_speech = 0.0;
        let heads = match options.word_timestamps {
            Some(_) => Some(self.alignment_heads(progress)?),
            None => None,
        };
        let pass = word_pass(options, heads.as_deref(), &language);
        while clip < clips.len() {
            if !progress.keep_going() {
                return Err(TranscribeError::Cancelled);
            }
            let (clip_start, clip_end) = clips[clip];
            seek = seek.max(clip_start);
            if seek >= clip_end {
                clip += 1;
                if let Some(c) = clips.get(clip) {
                    seek = c.0;
                }
                continue;
            }
            let span = WindowSpan {
                seek,
                size: N_FRAMES.min(clip_end - seek),
            };
            spool.window(span.seek, span.size, &mut window)?;
            let features = match detected.take() {
                Some((mel, features)) if mel == window => features,
                _ => self.encode_timed(&window, &mut timings, progress)?,
            };
            let decoder = self.decoder_timed(&mut timings)?;
            let t = Instant::now();
            let mut session = decoder.session(&features)?;
            let result = self.decode_with_fallback(
                &mut session,
                &language,
                context.prompt(),
                options,
                &mut rng,
                progress,
            )?;
            timings.decoder_forwards += session.forwards();
            timings.decoder += t.elapsed().as_secs_f64();

            if options.is_silence(&result) {
                seek += span.size;
                progress.position(seek.min(content_frames), content_frames);
                continue;
            }
            let cut = cut_window(&result.tokens, special.timestamp_begin, span, input_stride);
            let mut current = self.window_segments(&result, span, &cut, segments.len());
            seek = cut.next_seek;
            if let Some(pass) = &pass {
                let word_options = pass.options;
                let t = Instant::now();
                self.add_words(&mut session, pass, &mut current, span, last_speech)?;
                *timings.words.get_or_insert(0.0) += t.elapsed().as_secs_f64();
                let window_seek = WindowSeek {
                    span,
                    single_timestamp_ending: cut.single_timestamp_ending,
                    content_frames,
                    last_speech,
                };
                match window_seek.after_words(&mut current, seek, word_options) {
                    ControlFlow::Continue(next) => seek = next,
                    ControlFlow::Break(next) => {
                        // The window's words look like a hallucination after a long
                        // silence: decoded again from the end of the silence.
                        seek = next.max(span.seek + 1);
                        progress.position(seek.min(content_frames), content_frames);
                        continue;
                    }
                }
                if let Some(end) = words_end(&current) {
                    last_speech = end;
                }
            }
            for segment in self.finish_segments(current, to_original.as_ref()) {
                context.push(&segment.tokens);
                progress.segment(&segment);
                segments.push(segment);
            }
            context.end_window(options.condition_on_previous_text, result.temperature);
            progress.position(seek.min(content_frames), content_frames);
        }
        timings.total = started.elapsed().as_secs_f64();
        timings.realtime_factor = duration / timings.total.max(1e-9);
        Ok(Transcript {
            text: tokenizer.decode(context.transcribed()),
            segments,
            language,
            language_probs,
            duration,
            speech,
            timings,
        })
    }

    /// The segments of a window decoded as `result` and cut as `cut`, numbered from `id`, as
    /// openai-whisper's `new_segment` makes them (then kept as `finish_segments` keeps them).
    fn window_segments(
        &self,
        result: &DecodingResult,
        span: WindowSpan,
        cut: &WindowCuts,
        id: usize,
    ) -> Vec<Segment> {
        let eot = self.tokenizer.special().eot;
        cut.cuts
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let tokens = &result.tokens[c.tokens.clone()];
                let text_tokens: Vec<u32> = tokens.iter().copied().filter(|&t| t < eot).collect();
                Segment {
                    id: id + i,
                    seek: span.seek,
                    start: c.start,
                    end: c.end,
                    text: self.tokenizer.decode(&text_tokens),
                    tokens: tokens.to_vec(),
                    temperature: result.temperature,
                    avg_logprob: result.avg_logprob,
                    compression_ratio: result.compression_ratio,
                    no_speech_prob: result.no_speech_prob,
                    words: None,
                }
            })
            .collect()
    }

    /// A window's segments as they are kept: an instant or textless one keeps its place but
    /// says nothing (no tokens, no words); with `to_original`, their times (and their words')
    /// mapped from the speech to the input.
    fn finish_segments(
        &self,
        mut segments: Vec<Segment>,
        to_original: Option<&TimestampsMap>,
    ) -> Vec<Segment> {
        for segment in &mut segments {
            if segment.start == segment.end || segment.text.trim().is_empty() {
                segment.text.clear();
                segment.tokens.clear();
                if let Some(words) = &mut segment.words {
                    words.clear();
                }
            }
            if let Some(map) = to_original {
                map_segment(segment, map);
            }
        }
        segments
    }

    /// Encodes one window, its time counted in `timings` and the encoder's notes passed on.
    fn encode_timed(
        &self,
        window: &[f32],
        timings: &mut Timings,
        progress: &mut dyn Progress,
    ) -> Result<Vec<f32>, TranscribeError> {
        let t = Instant::now();
        let features = {
            let _turn = self
                .encoder_turn
                .get()
                .map(|turn| turn.lock().unwrap_or_else(|e| e.into_inner()));
            self.encoder.encode(window)?
        };
        timings.encoder.push(t.elapsed().as_secs_f64());
        for note in self.encoder.take_notes() {
            progress.note(&note);
        }
        Ok(features)
    }

    /// Detects the language on `window`, which is encoded: each language's probability (best
    /// first, the best announced to `progress`) and the window's features, the times counted
    /// in `timings`.
    fn detect_timed(
        &self,
        window: &[f32],
        timings: &mut Timings,
        progress: &mut dyn Progress,
    ) -> Result<(LanguageProbs, Vec<f32>), TranscribeError> {
        let features = self.encode_timed(window, timings, progress)?;
        let decoder = self.decoder_timed(timings)?;
        let t = Instant::now();
        let mut session = decoder.session(&features)?;
        let probs = self.language_probs(&mut session)?;
        timings.decoder += t.elapsed().as_secs_f64();
        timings.decoder_forwards += session.forwards();
        let (code, p) = &probs[0];
        progress.language(code, *p);
        Ok((probs, features))
    }

    /// The tokens of `options.initial_prompt` (with the leading space openai-whisper gives it).
    fn initial_prompt(&self, options: &TranscribeOptions) -> Vec<u32> {
        match &options.initial_prompt {
            Some(p) => self.tokenizer.encode(&format!(" {}", p.trim())),
            None => Vec::new(),
        }
    }

    /// The decoder, any wait for its loading counted in `timings`.
    fn decoder_timed(&self, timings: &mut Timings) -> Result<&DecoderModel, TranscribeError> {
        let t = Instant::now();
        let decoder = self.decoder()?;
        timings.decoder_wait += t.elapsed().as_secs_f64();
        Ok(decoder)
    }

    /// Reads `stream` through the VAD model: the audio (kept for a second pass) and its speech
    /// chunks. A decoder that fails to load stops the reading.
    fn find_speech(
        &self,
        stream: &mut AudioStream,
        vad: &SileroVad,
        options: &VadOptions,
        progress: &mut dyn Progress,
    ) -> Result<(FloatSpool, Vec<SpeechChunk>), TranscribeError> {
        let mut samples = FloatSpool::new(SAMPLE_SPOOL);
        let mut probs = vad.stream();
        for window in stream {
            let window = window?;
            if !progress.keep_going() {
                return Err(TranscribeError::Cancelled);
            }
            probs.push(&window.samples)?;
            samples.push(&window.samples).map_err(temporary_audio)?;
            progress.audio_read(samples.len() as f64 / SAMPLE_RATE as f64);
            if self.decoder_failed() {
                self.decoder()?;
            }
        }
        let (probs, n) = probs.finish()?;
        Ok((samples, speech_timestamps(&probs, n, options)))
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
        super::decoding::verify_options(options).map_err(TranscribeError::Options)?;
        self.check_decoding(options)?;
        let features = self.encoder.encode(mel)?;
        self.decode_features(&features, options)
    }

    /// [`decode`](Transcriber::decode) of a window already encoded (`[n_audio_ctx, d_model]`,
    /// by this model's encoder or another plan of it).
    pub fn decode_features(
        &self,
        features: &[f32],
        options: &DecodingOptions,
    ) -> Result<DecodingResult, TranscribeError> {
        super::decoding::verify_options(options).map_err(TranscribeError::Options)?;
        self.check_decoding(options)?;
        let mut session = self.decoder()?.session(features)?;
        let language = match options.language.as_deref() {
            Some(l) => language_code(l).expect("checked").to_string(),
            None if !self.tokenizer.is_multilingual() => "en".to_string(),
            None => {
                let code = self.language_probs(&mut session)?[0].0.clone();
                session.reset();
                code
            }
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
        task.run(&mut session, &mut Rng::new(0))
    }

    /// The language of `input` as [`transcribe`](Transcriber::transcribe) detects it, on the
    /// window `on` says: each language's probability, best first (English with probability 1
    /// for an English-only model).
    pub fn detect_language(
        &self,
        input: &Input,
        on: LanguageDetection,
    ) -> Result<Vec<(String, f64)>, TranscribeError> {
        if !self.tokenizer.is_multilingual() {
            return Ok(vec![("en".to_string(), 1.0)]);
        }
        let mut stream = AudioStream::open(input)?;
        let mel = LogMel::new(self.encoder.dims().n_mels);
        let mut spool = MelSpool::build(&mut stream, &mel, &mut |_| {})?;
        let mut window = vec![0.0f32; mel.n_mels() * N_FRAMES];
        detection_window(&mut spool, on, &mut window)?;
        Ok(self
            .detect_timed(&window, &mut Timings::default(), &mut Quiet)?
            .0)
    }

    /// OpenAI's `detect_language` on a fresh `session` (reset it before decoding on it): the
    /// logits after `<|startoftranscript|>` over the language tokens only; their
    /// probabilities, best first.
    fn language_probs(
        &self,
        session: &mut DecoderSession<'_>,
    ) -> Result<Vec<(String, f64)>, TranscribeError> {
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

    /// OpenAI's `decode_with_fallback` on a fresh `session` of the window: decodes at each
    /// temperature in turn until the result is neither too repetitive nor too improbable (or
    /// improbable but likely silence).
    fn decode_with_fallback(
        &self,
        session: &mut DecoderSession<'_>,
        language: &str,
        prompt: Vec<u32>,
        options: &TranscribeOptions,
        rng: &mut Rng,
        progress: &mut dyn Progress,
    ) -> Result<DecodingResult, TranscribeError> {
        let mut first = true;
        with_fallback(options, progress, |decoding| {
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
            task.run(session, rng)
        })
    }
}

/// Each language's probability, best first.
type LanguageProbs = Vec<(String, f64)>;

/// The spectrogram the language is detected on (see [`LanguageDetection`]).
fn detection_window(
    spool: &mut MelSpool,
    on: LanguageDetection,
    window: &mut [f32],
) -> Result<(), AudioError> {
    match on {
        LanguageDetection::Window => spool.window(0, N_FRAMES.min(spool.content_frames()), window),
        LanguageDetection::Openai => spool.detection_window(window),
    }
}

/// Samples of audio held in memory while VAD reads it (5 minutes); beyond, in a temporary
/// file.
const SAMPLE_SPOOL: usize = 300 * SAMPLE_RATE as usize;

/// The samples of speech chunks, one after the other, in blocks of at most 30 s: the audio
/// that keeps only the speech.
struct SpeechBlocks<'a> {
    samples: &'a mut FloatSpool,
    chunks: &'a [SpeechChunk],
    /// The chunk being read, and the next sample of it.
    chunk: usize,
    at: usize,
}

impl<'a> SpeechBlocks<'a> {
    fn new(samples: &'a mut FloatSpool, chunks: &'a [SpeechChunk]) -> SpeechBlocks<'a> {
        SpeechBlocks {
            samples,
            chunks,
            chunk: 0,
            at: chunks.first().map_or(0, |c| c.start),
        }
    }
}

impl Iterator for SpeechBlocks<'_> {
    type Item = Result<Vec<f32>, AudioError>;

    fn next(&mut self) -> Option<Self::Item> {
        let c = *self.chunks.get(self.chunk)?;
        let end = c.end.min(self.samples.len());
        let n = end.saturating_sub(self.at).min(crate::audio::N_SAMPLES);
        let mut block = vec![0.0f32; n];
        let read = self.samples.read(self.at, &mut block);
        self.at += n;
        if self.at >= end {
            self.chunk += 1;
            self.at = self.chunks.get(self.chunk).map_or(0, |c| c.start);
        }
        Some(read.map(|()| block).map_err(temporary_audio))
    }
}

/// An error of the temporary file that holds the audio between VAD's pass and the next.
fn temporary_audio(err: std::io::Error) -> AudioError {
    AudioError::Io {
        name: "the temporary audio file".into(),
        err,
    }
}
