//! Where bfloat16 changes what the model decides: the error each op's precision contributes,
//! measured on speech with the emulator (`amanuensis inspect --sensitivity`).
//!
//! Every window of every file is encoded by the `cpu` plan (float32, the reference) and
//! decoded greedily, as openai-whisper's first temperature does. An encoder under study (a
//! [`PrecisionPlan`] on `emu`) encodes the same windows; then:
//! - its features' error against the reference's (relative RMS and largest difference);
//! - the decoder, fed the reference's tokens, gives each position's log-probabilities: the
//!   largest and mean change of the reference token's log-probability, and the positions where
//!   the most likely token is no longer the reference's most likely one (`flips`);
//! - the window decoded greedily from its features: whether its tokens are the reference's.
//!
//! Plans that keep everything in float32 on the host but one group of ops in bfloat16 show the
//! error that group contributes alone ([`isolating`]).

use std::path::Path;

use super::{Layers, OpKind, OpPrecision, PrecisionPlan};
use crate::audio::{Input, LogMel, N_FRAMES, N_SAMPLES, load_audio};
use crate::backend::{Backend, DeviceFamily};
use crate::model::{Encoder, EncoderOptions};
use crate::transcribe::{DecodingOptions, Task, TranscribeError, Transcriber};

/// One 30 s window of a file, with what the float32 plan makes of it.
#[derive(Debug, Clone)]
pub struct StudyWindow {
    /// The file's name and the window's start (`jfk.flac@0`).
    pub name: String,
    mel: Vec<f32>,
    language: String,
    features: Vec<f32>,
    /// The greedy decoding's tokens (timestamps included, `<|endoftext|>` last).
    tokens: Vec<u32>,
    /// At each position of `tokens`: the reference's log-probability of that token, and its
    /// most likely token.
    scored: Vec<(f64, u32)>,
}

/// The reference: the `cpu` plan's transcriber and its windows.
pub struct Study {
    transcriber: Transcriber,
    /// The windows, in file order.
    pub windows: Vec<StudyWindow>,
}

/// How far one window strays from the reference under a plan.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct WindowError {
    /// `|f - f_ref| / |f_ref|` over the window's features (2-norms).
    pub features_rel: f64,
    /// The largest `|f - f_ref|`.
    pub features_max: f64,
    /// The largest change of a reference token's log-probability.
    pub logprob_max: f64,
    /// The mean change of the reference tokens' log-probabilities.
    pub logprob_mean: f64,
    /// Positions whose most likely token changed.
    pub flips: usize,
    /// Positions scored.
    pub positions: usize,
    /// Whether greedy decoding gives the reference's tokens.
    pub same_tokens: bool,
}

/// The greedy options the reference decodes with (openai-whisper's first temperature).
fn greedy(language: &str) -> DecodingOptions {
    DecodingOptions {
        language: Some(language.to_string()),
        temperature: 0.0,
        ..Default::default()
    }
}

impl Study {
    /// Loads `model_dir` on the `cpu` plan and decodes every 30 s window of `files` (the last
    /// one padded with silence, as a window past the audio's end is).
    pub fn prepare(
        model_dir: &Path,
        files: &[&Path],
        threads: usize,
    ) -> Result<Study, TranscribeError> {
        let options = EncoderOptions {
            backend: Backend::Cpu,
            threads,
            ..Default::default()
        };
        let transcriber = Transcriber::load(model_dir, &options)?;
        let mel = LogMel::new(transcriber.encoder().dims().n_mels);
        let mut windows = Vec::new();
        for file in files {
            let (samples, _) = load_audio(&Input::Path(file.to_path_buf()))?;
            let name = file
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string();
            for (i, start) in (0..samples.len().max(1)).step_by(N_SAMPLES).enumerate() {
                let mut chunk = samples[start..(start + N_SAMPLES).min(samples.len())].to_vec();
                chunk.resize(N_SAMPLES, 0.0);
                let mel = mel.compute(&chunk);
                debug_assert_eq!(mel.len(), mel.len() / N_FRAMES * N_FRAMES);
                let features = transcriber.encoder().encode(&mel)?;
                let language = transcriber
                    .detect_language(&Input::samples(chunk.clone()), Default::default())?
                    .first()
                    .map(|(code, _)| code.clone())
                    .unwrap_or_else(|| "en".into());
                let decoded = transcriber.decode_features(&features, &greedy(&language))?;
                let mut tokens = decoded.tokens;
                tokens.push(transcriber.tokenizer().special().eot);
                let mut window = StudyWindow {
                    name: format!("{name}@{}", i * 30),
                    mel,
                    language,
                    features,
                    tokens,
                    scored: Vec::new(),
                };
                window.scored = score(&transcriber, &window, &window.features)?;
                windows.push(window);
            }
        }
        Ok(Study {
            transcriber,
            windows,
        })
    }

    /// Transformer layers of the model's encoder.
    pub fn n_layers(&self) -> usize {
        self.transcriber.encoder().dims().n_layers
    }

    /// The encoder of this model under `plan` on `emu` (XDNA1's layout; the numerics do not
    /// depend on the family).
    pub fn encoder(
        &self,
        plan: &PrecisionPlan,
        threads: usize,
    ) -> Result<Encoder, TranscribeError> {
        self.encoder_for(plan, DeviceFamily::Xdna1, threads)
    }

    /// [`encoder`](Study::encoder) laid out for `family` (for its placement's prediction).
    pub fn encoder_for(
        &self,
        plan: &PrecisionPlan,
        family: DeviceFamily,
        threads: usize,
    ) -> Result<Encoder, TranscribeError> {
        let options = EncoderOptions {
            backend: Backend::Emu,
            threads,
            precision_plan: Some(plan.clone()),
            family: Some(family),
            ..Default::default()
        };
        Ok(Encoder::load_files(
            self.transcriber.encoder().files().clone(),
            &options,
        )?)
    }

    /// Each window's error under `encoder`.
    pub fn measure(&self, encoder: &Encoder) -> Result<Vec<WindowError>, TranscribeError> {
        self.windows
            .iter()
            .map(|w| {
                let features = encoder.encode(&w.mel)?;
                let (mut sq, mut ref_sq, mut max) = (0.0f64, 0.0f64, 0.0f64);
                for (&a, &b) in features.iter().zip(&w.features) {
                    let d = (a - b) as f64;
                    sq += d * d;
                    ref_sq += (b as f64) * (b as f64);
                    max = max.max(d.abs());
                }
                let scored = score(&self.transcriber, w, &features)?;
                let deltas: Vec<f64> = scored
                    .iter()
                    .zip(&w.scored)
                    .map(|(a, b)| (a.0 - b.0).abs())
                    .collect();
                let flips = scored
                    .iter()
                    .zip(&w.scored)
                    .filter(|(a, b)| a.1 != b.1)
                    .count();
                let decoded = self
                    .transcriber
                    .decode_features(&features, &greedy(&w.language))?;
                Ok(WindowError {
                    features_rel: (sq / ref_sq.max(f64::MIN_POSITIVE)).sqrt(),
                    features_max: max,
                    logprob_max: deltas.iter().copied().fold(0.0, f64::max),
                    logprob_mean: deltas.iter().sum::<f64>() / deltas.len().max(1) as f64,
                    flips,
                    positions: deltas.len(),
                    same_tokens: decoded.tokens[..] == w.tokens[..w.tokens.len() - 1],
                })
            })
            .collect()
    }
}

/// The decoder over `features`, fed the window's reference tokens after its prompt: at each
/// position, the log-probability of the reference token there and the most likely token.
fn score(
    transcriber: &Transcriber,
    window: &StudyWindow,
    features: &[f32],
) -> Result<Vec<(f64, u32)>, TranscribeError> {
    let mut session = transcriber.decoder()?.session(features)?;
    let prompt = transcriber
        .tokenizer()
        .sot_sequence(Some(&window.language), Task::Transcribe);
    let mut logits = session.forward(&[prompt])?;
    let mut scored = Vec::with_capacity(window.tokens.len());
    for (i, &token) in window.tokens.iter().enumerate() {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
        let best = logits
            .iter()
            .enumerate()
            .fold(
                (0, f32::NEG_INFINITY),
                |b, (j, &l)| if l > b.1 { (j, l) } else { b },
            )
            .0 as u32;
        scored.push((logits[token as usize] as f64 - max - sum.ln(), best));
        if i + 1 < window.tokens.len() {
            logits = session.forward(&[vec![token]])?;
        }
    }
    Ok(scored)
}

/// Groups of ops to study alone: each kind over every layer, then each layer's ops.
pub fn groups(n_layers: usize) -> Vec<(String, Option<OpKind>, Layers)> {
    let mut groups: Vec<(String, Option<OpKind>, Layers)> = OpKind::ALL
        .iter()
        .map(|&k| (k.to_string(), Some(k), Layers::All))
        .collect();
    for l in 0..n_layers {
        groups.push((format!("layer {l}"), None, Layers::Index(l)));
    }
    groups
}

/// A plan that computes `kind` in `layers` in `precision` and everything else in float32 on
/// the host: the error that group contributes alone. A layer group leaves the stem in
/// float32.
pub fn isolating(kind: Option<OpKind>, layers: Layers, precision: OpPrecision) -> PrecisionPlan {
    let plan = PrecisionPlan::uniform(OpPrecision::F32);
    match (kind, layers) {
        (None, Layers::All) => PrecisionPlan::uniform(precision),
        (None, layers) => OpKind::ALL
            .iter()
            .filter(|k| k.in_layer())
            .fold(plan, |p, &k| p.with(Some(k), layers, precision)),
        (kind, layers) => plan.with(kind, layers, precision),
    }
}
