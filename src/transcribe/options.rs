//! The options of a transcription (openai-whisper's `transcribe()` arguments) and the
//! temperature fallback that reads them (`decode_with_fallback` in whisper/transcribe.py,
//! release 20250625).

use super::decoding::{DecodingOptions, DecodingResult, verify_options};
use super::transcriber::{Progress, TranscribeError};
use crate::vad::VadOptions;

/// How to transcribe (the options of OpenAI's `transcribe()`).
#[derive(Debug, Clone)]
pub struct TranscribeOptions {
    /// How each window is decoded; its `temperature` and `prompt` are set per window, and of
    /// `beam_size` (with `patience`) and `best_of` each temperature keeps the one that applies
    /// to it (see [`decoding_at`](TranscribeOptions::decoding_at)).
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
    /// What a multilingual model's language is detected on when it is not given.
    pub language_detection: LanguageDetection,
    /// Transcribe only the speech that voice activity detection finds, as faster-whisper's
    /// `vad_filter`: the audio without the rest is transcribed, and times are mapped back.
    pub vad: Option<VadOptions>,
    /// Transcribe as faster-whisper's `BatchedInferencePipeline`: the speech VAD finds, in
    /// windows of up to 30 s decoded this many at a time (see
    /// [`Transcriber::transcribe`](super::Transcriber::transcribe)).
    pub batch_size: Option<usize>,
    /// Word timestamps (openai-whisper's `word_timestamps=True`), and the options that need
    /// them.
    pub word_timestamps: Option<WordOptions>,
    /// The parts of the input to transcribe, in seconds: `start, end, start, end, ...`, the
    /// last end the input's end when missing (openai-whisper's `clip_timestamps`); empty: all
    /// of it.
    pub clip_timestamps: Vec<f64>,
}

/// The options of word timestamps (openai-whisper's `transcribe()` arguments that need
/// `word_timestamps=True`).
#[derive(Debug, Clone, PartialEq)]
pub struct WordOptions {
    /// Punctuation merged into the word that follows it.
    pub prepend_punctuations: String,
    /// Punctuation merged into the word before it.
    pub append_punctuations: String,
    /// Skip silences longer than this (in seconds) before a segment whose words look like a
    /// hallucination (improbable, very short or very long words), and after the last word
    /// of a window when the silence to its end is longer (openai-whisper's
    /// `hallucination_silence_threshold`).
    pub hallucination_silence_threshold: Option<f64>,
}

impl Default for WordOptions {
    fn default() -> Self {
        WordOptions {
            prepend_punctuations: super::timing::PREPEND_PUNCTUATIONS.into(),
            append_punctuations: super::timing::APPEND_PUNCTUATIONS.into(),
            hallucination_silence_threshold: None,
        }
    }
}

/// What the language of a multilingual model is detected on, when it is not given: the
/// logits after `<|startoftranscript|>` over the language tokens, on the encoding of one of
/// two 30 s spectrograms. They are the same for inputs of 30 s and more; a shorter input's
/// first window ends in zeros of the spectrogram, where openai-whisper's detection sees the
/// spectrogram of zeros of audio (log-mel floor values), and its probabilities differ a little
/// (base on tests/data/transcribe/fr.flac: P(br) 0.088 against 0.098).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LanguageDetection {
    /// The first window as it is transcribed (faster-whisper's detection features), whose
    /// encoding the transcription then uses: one encoder run a window.
    #[default]
    Window,
    /// openai-whisper's `detect_language` in `transcribe()`: the first 30 s of the
    /// spectrogram of the audio followed by 30 s of zeros. An input under 30 s is encoded
    /// once more.
    Openai,
}

amanuensis_kernels::named_variants!(LanguageDetection { Window => "window", Openai => "openai" });

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
            language_detection: LanguageDetection::default(),
            vad: None,
            batch_size: None,
            word_timestamps: None,
            clip_timestamps: Vec::new(),
        }
    }
}

impl TranscribeOptions {
    /// The decoding options at temperature `t`, as OpenAI's fallback sets them: beam search
    /// (and its patience) only at 0, best-of only above.
    pub fn decoding_at(&self, t: f32) -> DecodingOptions {
        let mut decoding = self.decoding.clone();
        decoding.temperature = t;
        if t > 0.0 {
            decoding.beam_size = None;
            decoding.patience = None;
        } else {
            decoding.best_of = None;
        }
        decoding
    }

    /// Checks the options as the fallback will use them: at least one temperature, none
    /// negative, and the decoding options of each temperature valid together (so `best_of`
    /// with temperatures 0, 0.2, ... applies from 0.2 on, as in openai-whisper).
    pub fn verify(&self) -> Result<(), String> {
        if self.temperatures.is_empty() {
            return Err("give at least one temperature".into());
        }
        if let Some(t) = self.temperatures.iter().find(|t| t.is_nan() || **t < 0.0) {
            return Err(format!("temperatures must be numbers from 0, not {t}"));
        }
        for &t in &self.temperatures {
            verify_options(&self.decoding_at(t))?;
        }
        if self.decoding.best_of.is_some() && self.temperatures.iter().all(|&t| t == 0.0) {
            return Err(
                "best-of ranks draws at temperatures above 0, and every temperature is 0: \
                 give --temperature above 0 or a fallback step"
                    .into(),
            );
        }
        if self.decoding.patience.is_some() && self.decoding.beam_size.is_none() {
            return Err("patience needs a beam size".into());
        }
        if let Some(vad) = &self.vad {
            vad.verify()?;
        }
        if let Some(t) = self
            .clip_timestamps
            .iter()
            .find(|t| !t.is_finite() || **t < 0.0)
        {
            return Err(format!(
                "clip timestamps are seconds from 0 (start,end,start,end,...), not {t}"
            ));
        }
        if !self.clip_timestamps.is_empty() && (self.vad.is_some() || self.batch_size.is_some()) {
            return Err(
                "clip timestamps choose the audio to transcribe, as VAD does: give \
                        --clip-timestamps without --vad and --batch-size"
                    .into(),
            );
        }
        if let Some(w) = &self.word_timestamps
            && let Some(t) = w.hallucination_silence_threshold
        {
            if !(t.is_finite() && t >= 0.0) {
                return Err(format!(
                    "the hallucination silence threshold is seconds from 0, not {t}"
                ));
            }
            if self.batch_size.is_some() {
                return Err(
                    "the hallucination silence threshold moves where the next window \
                            starts, and batched windows are fixed by VAD: drop one of \
                            --hallucination-silence-threshold and --batch-size"
                        .into(),
                );
            }
        }
        if let Some(n) = self.batch_size {
            if n == 0 {
                return Err("the batch size is a number of windows from 1".into());
            }
            if self.decoding.beam_size.is_some() || self.decoding.best_of.is_some() {
                return Err(
                    "batched decoding is greedy (one sequence a window): drop --beam-size and \
                     --best-of, or --batch-size"
                        .into(),
                );
            }
        }
        Ok(())
    }

    /// Whether a window decoded as `result` is skipped as silence: its `<|nospeech|>`
    /// probability is above the threshold and its text improbable (or no log probability
    /// threshold is set).
    pub fn is_silence(&self, result: &DecodingResult) -> bool {
        let Some(threshold) = self.no_speech_threshold else {
            return false;
        };
        result.no_speech_prob > threshold
            && !self
                .logprob_threshold
                .is_some_and(|l| result.avg_logprob > l)
    }
}

/// OpenAI's temperature fallback: `decode` runs with each of `options.temperatures` in turn
/// ([`TranscribeOptions::decoding_at`]) until its result is neither too repetitive
/// (compression ratio above the threshold) nor too improbable (average log probability below
/// it) -- or is improbable but likely silence (no-speech probability above its threshold),
/// which the caller then skips. The last result is returned when every temperature fails.
pub(crate) fn with_fallback(
    options: &TranscribeOptions,
    progress: &mut dyn Progress,
    mut decode: impl FnMut(DecodingOptions) -> Result<DecodingResult, TranscribeError>,
) -> Result<DecodingResult, TranscribeError> {
    let mut result: Option<DecodingResult> = None;
    for (i, &t) in options.temperatures.iter().enumerate() {
        let r = decode(options.decoding_at(t))?;
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
    Ok(result.expect("at least one temperature (verified)"))
}

#[cfg(test)]
mod tests {
    use super::super::transcriber::Quiet;
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

    /// The beam size and best-of a temperature was decoded with.
    type Group = (Option<usize>, Option<usize>);

    /// Runs the fallback over `outcomes` (compression ratio, average log probability and
    /// no-speech probability at each temperature) with `options`; returns the temperatures
    /// tried, the beams and the draws at each, and the temperature kept.
    fn fallback_with(
        options: &TranscribeOptions,
        outcomes: &[(f64, f64, f64)],
    ) -> (Vec<f32>, Vec<Group>, f32) {
        let (mut tried, mut groups) = (Vec::new(), Vec::new());
        let r = with_fallback(options, &mut Quiet, |d| {
            verify_options(&d).map_err(TranscribeError::Options)?;
            let (cr, lp, ns) = outcomes[tried.len()];
            tried.push(d.temperature);
            groups.push((d.beam_size, d.best_of));
            Ok(result(d.temperature, cr, lp, ns))
        })
        .unwrap();
        (tried, groups, r.temperature)
    }

    fn fallback(outcomes: &[(f64, f64, f64)]) -> (Vec<f32>, Vec<bool>, f32) {
        let mut options = TranscribeOptions::default();
        options.decoding.beam_size = Some(5);
        let (tried, groups, t) = fallback_with(&options, outcomes);
        (tried, groups.iter().map(|g| g.0.is_some()).collect(), t)
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

    /// openai-whisper's command line gives beam size 5 and best-of 5 together: beam search at
    /// 0, five draws at each temperature above.
    #[test]
    fn best_of_applies_to_the_temperatures_above_zero() {
        let mut options = TranscribeOptions::default();
        options.decoding.beam_size = Some(5);
        options.decoding.best_of = Some(5);
        options.verify().unwrap();
        let (tried, groups, _) = fallback_with(
            &options,
            &[(3.0, -0.3, 0.1), (3.0, -0.3, 0.1), (1.0, -0.3, 0.1)],
        );
        assert_eq!(tried, [0.0, 0.2, 0.4]);
        assert_eq!(groups, [(Some(5), None), (None, Some(5)), (None, Some(5))]);

        // --temperature 0.2 --best-of 5: draws from the first decoding on.
        let mut options = TranscribeOptions {
            temperatures: vec![0.2, 0.4, 0.6, 0.8, 1.0],
            ..TranscribeOptions::default()
        };
        options.decoding.best_of = Some(5);
        options.verify().unwrap();
        let (tried, groups, _) = fallback_with(&options, &[(1.0, -0.3, 0.1)]);
        assert_eq!((tried, groups), (vec![0.2], vec![(None, Some(5))]));

        // Best-of with no temperature above 0 can never apply: refused, saying why.
        options.temperatures = vec![0.0];
        let err = options.verify().unwrap_err();
        assert!(err.contains("temperature"), "{err}");
    }

    #[test]
    fn silence_needs_the_no_speech_probability_and_an_improbable_text() {
        let options = TranscribeOptions::default();
        assert!(options.is_silence(&result(0.0, 1.0, -1.5, 0.9)));
        assert!(!options.is_silence(&result(0.0, 1.0, -0.5, 0.9)));
        assert!(!options.is_silence(&result(0.0, 1.0, -1.5, 0.5)));
        let no_logprob = TranscribeOptions {
            logprob_threshold: None,
            ..TranscribeOptions::default()
        };
        assert!(no_logprob.is_silence(&result(0.0, 1.0, -0.5, 0.9)));
    }
}
