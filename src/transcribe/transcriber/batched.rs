//! Batched transcription, as faster-whisper 1.2.1's `BatchedInferencePipeline` does it: the
//! speech that VAD finds (in chunks of at most 30 s, split at pauses of 160 ms unless the
//! options say otherwise), joined into windows of up to 30 s (`collect_chunks`), each window
//! encoded on its own, and the windows decoded `batch_size` at a time, every forward pass of
//! the decoder running the windows of a batch together.
//!
//! How its output differs from the sequential rules: a window is decoded once, at the first
//! temperature (no fallback), greedily; no window is prompted by the text before it (only by
//! the initial prompt, every window), and a window's text ends where its speech ends (no seek
//! into the next window). Segments take their times from the window's place in the speech,
//! and from its timestamps within it unless `without_timestamps`; the times are then mapped
//! back to the input, as `--vad` maps them.
//!
//! Transcriptions running at the same time on one [`Transcriber`] decode in the same batches
//! ([`batch_queue`](super::batch_queue)): a window joins the batch of any other window with
//! the same decoding options (language, task, prompt), up to `batch_size`. Sampling (a
//! temperature above 0) decodes alone, so that a seed gives the same draws.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::batch_queue::Batchable;

use super::{Segment, SpeechBlocks, Timings, TranscribeError, Transcriber, Transcript};
use crate::audio::{AudioStream, CHUNK_LENGTH, FloatSpool, Input, LogMel, MelSpool, N_FRAMES};
use crate::transcribe::decoding::{DecodingOptions, DecodingResult, DecodingTask, Rng};
use crate::transcribe::languages::language_code;
use crate::transcribe::segments::{WindowSpan, cut_window};
use crate::transcribe::{Progress, TranscribeOptions};
use crate::vad::{ChunkGroup, TimestampsMap, VadOptions, collect_chunks};

/// The VAD options of a batched transcription: the caller's, else faster-whisper's for its
/// batched pipeline (pauses of 160 ms end speech), with speech cut at 30 s in both cases.
fn batch_vad_options(given: Option<&VadOptions>) -> VadOptions {
    let mut options = given.cloned().unwrap_or(VadOptions {
        min_silence_duration_ms: 160,
        ..VadOptions::default()
    });
    options.max_speech_duration_s = CHUNK_LENGTH as f64;
    options
}

/// A window waiting for the decoder's batch.
pub(super) struct Window {
    /// The transcription it is part of.
    owner: u64,
    options: Arc<DecodingOptions>,
    features: Arc<Vec<f32>>,
    batch_size: usize,
}

impl Batchable for Window {
    fn same_batch(&self, other: &Self) -> bool {
        self.options == other.options
    }
    fn limit(&self) -> usize {
        self.batch_size
    }
}

/// A window decoded.
pub(super) struct Decoded {
    result: DecodingResult,
    /// Its batch, numbered.
    batch: u64,
    /// The forward passes of its batch.
    forwards: usize,
    /// The windows of other transcriptions in its batch.
    others: usize,
}

/// Numbers transcriptions, for [`Window::owner`], and batches.
static OWNERS: AtomicU64 = AtomicU64::new(0);
static BATCHES: AtomicU64 = AtomicU64::new(0);

impl Transcriber {
    /// Decodes a batch of windows (of any transcriptions) that share their options.
    fn decode_batch(&self, batch: Vec<Window>) -> Vec<Result<Decoded, String>> {
        let n = batch.len();
        let run = || -> Result<(Vec<DecodingResult>, usize), TranscribeError> {
            let decoder = self.decoder()?;
            let task = DecodingTask::new(
                &self.tokenizer,
                (*batch[0].options).clone(),
                self.n_text_ctx,
                self.encoder.dims().n_audio_ctx,
            )
            .map_err(TranscribeError::Options)?;
            let refs: Vec<&[f32]> = batch.iter().map(|w| w.features.as_slice()).collect();
            let mut session = decoder.batch_session(&refs)?;
            // Greedy (the queue takes temperature 0 only): no draws.
            let results = task.run_batch(&mut session, n, &mut Rng::new(0))?;
            Ok((results, session.forwards()))
        };
        let id = BATCHES.fetch_add(1, Ordering::Relaxed);
        match run() {
            Ok((results, forwards)) => results
                .into_iter()
                .zip(&batch)
                .map(|(result, window)| {
                    let others = batch.iter().filter(|w| w.owner != window.owner).count();
                    Ok(Decoded {
                        result,
                        batch: id,
                        forwards,
                        others,
                    })
                })
                .collect(),
            Err(e) => (0..n).map(|_| Err(e.to_string())).collect(),
        }
    }

    /// [`transcribe`](Transcriber::transcribe) with `options.batch_size` set: see the module's
    /// documentation.
    pub(super) fn transcribe_batched(
        &self,
        input: &Input,
        options: &TranscribeOptions,
        batch_size: usize,
        progress: &mut dyn Progress,
    ) -> Result<Transcript, TranscribeError> {
        let started = Instant::now();
        let dims = *self.encoder.dims();
        let mel = LogMel::new(dims.n_mels);
        let mut stream = AudioStream::open(input)?;
        let vad = self.vad(progress)?;
        let vad_options = batch_vad_options(options.vad.as_ref());
        let t = Instant::now();
        let (mut samples, chunks) = self.find_speech(&mut stream, vad, &vad_options, progress)?;
        let vad_time = t.elapsed().as_secs_f64();
        let duration = samples.len() as f64 / crate::audio::SAMPLE_RATE as f64;
        let groups: Vec<ChunkGroup> = collect_chunks(&chunks, CHUNK_LENGTH as f64)
            .into_iter()
            .filter(|g| g.duration > 0.0)
            .collect();
        let to_original = TimestampsMap::new(&chunks);
        let mut timings = Timings {
            load: self.load_time.as_secs_f64(),
            mel: started.elapsed().as_secs_f64(),
            vad: Some(vad_time),
            ..Timings::default()
        };
        let total_frames: usize = groups.iter().map(|g| frames(g.duration)).sum();
        let mut window = vec![0.0f32; dims.n_mels * N_FRAMES];

        // The language: given, English for an English-only model, else detected on the first
        // window, whose encoding the first batch then uses.
        let tokenizer = &self.tokenizer;
        let mut first_features = None;
        let mut language_probs = None;
        let language = match options.decoding.language.as_deref() {
            Some(l) => language_code(l).expect("checked").to_string(),
            None if !tokenizer.is_multilingual() => "en".to_string(),
            None => match groups.first() {
                None => "en".to_string(),
                Some(group) => {
                    group_window(&mut samples, group, &mel, &mut window)?;
                    let (probs, features) = self.detect_timed(&window, &mut timings, progress)?;
                    let code = probs[0].0.clone();
                    language_probs = Some(probs);
                    first_features = Some(features);
                    code
                }
            },
        };

        let mut decoding = options.decoding_at(options.temperatures[0]);
        decoding.language = Some(language.clone());
        decoding.prompt = self.initial_prompt(options);
        let task = DecodingTask::new(
            tokenizer,
            decoding.clone(),
            self.n_text_ctx,
            dims.n_audio_ctx,
        )
        .map_err(TranscribeError::Options)?;
        let decoding = Arc::new(decoding);
        let owner = OWNERS.fetch_add(1, Ordering::Relaxed);
        let special = *tokenizer.special();
        let input_stride = N_FRAMES / dims.n_audio_ctx;
        let mut rng = Rng::new(options.seed);
        let mut segments: Vec<Segment> = Vec::new();
        let mut text_tokens: Vec<u32> = Vec::new();
        let mut done_frames = 0;
        let heads = match options.word_timestamps {
            Some(_) => Some(self.alignment_heads(progress)?),
            None => None,
        };
        let pass = super::word_pass(options, heads.as_deref(), &language);
        let mut last_speech = 0.0;
        for batch in groups.chunks(batch_size) {
            if !progress.keep_going() {
                return Err(TranscribeError::Cancelled);
            }
            let mut features = Vec::with_capacity(batch.len());
            for group in batch {
                if let Some(f) = first_features.take() {
                    features.push(Arc::new(f));
                    continue;
                }
                group_window(&mut samples, group, &mel, &mut window)?;
                features.push(Arc::new(self.encode_timed(
                    &window,
                    &mut timings,
                    progress,
                )?));
            }
            let decoder = self.decoder_timed(&mut timings)?;
            let t = Instant::now();
            let results = if decoding.temperature > 0.0 {
                // Draws: alone, from this transcription's generator.
                let refs: Vec<&[f32]> = features.iter().map(|f| f.as_slice()).collect();
                let mut session = decoder.batch_session(&refs)?;
                let results = task.run_batch(&mut session, batch.len(), &mut rng)?;
                timings.decoder_forwards += session.forwards();
                results
            } else {
                let windows = features
                    .iter()
                    .map(|f| Window {
                        owner,
                        options: decoding.clone(),
                        features: f.clone(),
                        batch_size,
                    })
                    .collect();
                let mut results = Vec::with_capacity(batch.len());
                let mut batches = std::collections::HashSet::new();
                for decoded in self.batches.submit(windows, &mut |b| self.decode_batch(b)) {
                    let decoded = decoded.map_err(TranscribeError::Model)?;
                    // Each batch's passes once (its windows report the same count).
                    if batches.insert(decoded.batch) {
                        timings.decoder_forwards += decoded.forwards;
                        timings.shared_batch_windows += decoded.others;
                    }
                    results.push(decoded.result);
                }
                results
            };
            timings.decoder += t.elapsed().as_secs_f64();
            for ((group, result), features) in batch.iter().zip(&results).zip(&features) {
                let span = WindowSpan {
                    seek: frames(group.offset),
                    size: frames(group.duration).min(N_FRAMES),
                };
                let cut = cut_window(&result.tokens, special.timestamp_begin, span, input_stride);
                let mut current = self.window_segments(result, span, &cut, segments.len());
                if let Some(pass) = &pass {
                    // The window alone: its own alignment pass.
                    let t = Instant::now();
                    let mut session = decoder.session(features.as_slice())?;
                    self.add_words(&mut session, pass, &mut current, span, last_speech)?;
                    if let Some(end) = super::words_end(&current) {
                        last_speech = end;
                    }
                    timings.decoder_forwards += session.forwards();
                    *timings.words.get_or_insert(0.0) += t.elapsed().as_secs_f64();
                }
                for segment in self.finish_segments(current, Some(&to_original)) {
                    text_tokens.extend(segment.tokens.iter().filter(|&&t| t < special.eot));
                    progress.segment(&segment);
                    segments.push(segment);
                }
                done_frames += frames(group.duration);
                progress.position(done_frames, total_frames);
            }
        }
        timings.total = started.elapsed().as_secs_f64();
        timings.realtime_factor = duration / timings.total.max(1e-9);
        Ok(Transcript {
            text: tokenizer.decode(&text_tokens),
            segments,
            language,
            language_probs,
            duration,
            speech: Some(chunks),
            timings,
        })
    }
}

/// Mel frames (100 a second) of `seconds`.
fn frames(seconds: f64) -> usize {
    (seconds * 100.0).round() as usize
}

/// The encoder's input for the speech of `group`: its own spectrogram (the floor from its own
/// loudest frame, as faster-whisper computes each window's features), zeros after it.
fn group_window(
    samples: &mut FloatSpool,
    group: &ChunkGroup,
    mel: &LogMel,
    window: &mut [f32],
) -> Result<(), TranscribeError> {
    let spool = MelSpool::from_blocks(SpeechBlocks::new(samples, &group.chunks), mel, &mut |_| {
        std::ops::ControlFlow::Continue(())
    })?;
    let mut spool = spool.expect("never stopped");
    spool.window(0, N_FRAMES.min(spool.content_frames()), window)?;
    Ok(())
}
