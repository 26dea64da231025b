//! Voice activity detection: Silero VAD (v6, MIT licence) as faster-whisper 1.2.1 ships and
//! runs it, in tract, and faster-whisper's rules from its speech probabilities to speech
//! chunks ([`speech_timestamps`]).
//!
//! The model is the ONNX file in faster-whisper's wheel (`faster_whisper/assets/
//! silero_vad_v6.onnx`): fetched from PyPI at a pinned version, checked by sha256 and cached
//! like a Whisper model ([`model_path`]). It reads frames of 512 samples at 16 kHz, each
//! preceded by the last 64 samples of the frame before, and carries an LSTM state from frame
//! to frame; one probability of speech a frame (32 ms).

mod timestamps;

use std::path::{Path, PathBuf};

use tract_onnx::prelude::*;

pub(crate) use timestamps::round2;
pub use timestamps::{ChunkGroup, SpeechChunk, TimestampsMap, collect_chunks, speech_timestamps};

/// Samples a second.
pub const SAMPLE_RATE: usize = 16_000;
/// Samples of one frame: one speech probability.
pub const FRAME_SAMPLES: usize = 512;
/// Samples of the frame before that precede each frame.
const CONTEXT_SAMPLES: usize = 64;
/// Width of the LSTM state.
const STATE: usize = 128;
/// Frames given to the model at a time (33 s).
const BLOCK_FRAMES: usize = 1024;

/// The wheel that carries the model, its sha256, the model's path in it and its sha256.
const WHEEL: &str = "faster-whisper==1.2.1";
const WHEEL_SHA256: &str = "79a66ad50688c0b794dd501dc340a736992a6342f7f95e5811be60b5224a26a7";
const MEMBER: &str = "faster_whisper/assets/silero_vad_v6.onnx";
const MODEL_SHA256: &str = "4cbf549b8326f60f80f2536d9eefeb450a9abe83365a098031c89719f1be17d2";
/// The model's file name in the cache.
const FILE_NAME: &str = "silero_vad_v6.onnx";

/// How speech is found (faster-whisper's `VadOptions`, with its defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct VadOptions {
    /// A frame whose speech probability reaches this starts speech.
    pub threshold: f32,
    /// Speech ends where the probability stays below this (default: `threshold - 0.15`, at
    /// least 0.01).
    pub neg_threshold: Option<f32>,
    /// Speech not longer than this is dropped.
    pub min_speech_duration_ms: u32,
    /// Speech longer than this is cut, at its last silence of more than 98 ms if it has one.
    pub max_speech_duration_s: f64,
    /// Silence shorter than this does not end speech.
    pub min_silence_duration_ms: u32,
    /// Audio kept on each side of speech.
    pub speech_pad_ms: u32,
}

impl Default for VadOptions {
    fn default() -> Self {
        VadOptions {
            threshold: 0.5,
            neg_threshold: None,
            min_speech_duration_ms: 0,
            max_speech_duration_s: f64::INFINITY,
            min_silence_duration_ms: 2000,
            speech_pad_ms: 400,
        }
    }
}

impl VadOptions {
    /// Checks the options: thresholds in (0, 1), durations positive.
    pub fn verify(&self) -> Result<(), String> {
        let in_unit = |t: f32| t > 0.0 && t < 1.0;
        if !in_unit(self.threshold) {
            return Err(format!(
                "the VAD threshold is a probability between 0 and 1, not {}",
                self.threshold
            ));
        }
        if let Some(t) = self.neg_threshold
            && !(in_unit(t) && t <= self.threshold)
        {
            return Err(format!(
                "the VAD's silence threshold is a probability between 0 and the speech \
                 threshold ({}), not {t}",
                self.threshold
            ));
        }
        if self.max_speech_duration_s.is_nan() || self.max_speech_duration_s <= 0.0 {
            return Err(format!(
                "the VAD's longest speech is a number of seconds above 0, not {}",
                self.max_speech_duration_s
            ));
        }
        Ok(())
    }
}

/// Why voice activity detection failed.
#[derive(Debug, thiserror::Error)]
pub enum VadError {
    /// The model cannot be loaded.
    #[error("{path}: not a Silero VAD model as faster-whisper ships it ({detail})")]
    Load {
        /// The file.
        path: PathBuf,
        /// What failed.
        detail: String,
    },
    /// The model failed on the audio.
    #[error("the VAD model failed: {0}")]
    Run(String),
    /// The model cannot be fetched.
    #[error("cannot fetch the VAD model ({WHEEL} from PyPI): {0}")]
    Fetch(String),
}

/// The Silero VAD model, ready to run.
#[derive(Debug, Clone)]
pub struct SileroVad {
    plan: Arc<TypedRunnableModel>,
}

impl SileroVad {
    /// Loads the model at `path` (faster-whisper's `silero_vad_v6.onnx`: inputs `input`
    /// `[frames, 576]`, `h` and `c` `[1, 1, 128]`; outputs the probabilities and the state).
    pub fn load(path: &Path) -> Result<SileroVad, VadError> {
        let error = |detail: String| VadError::Load {
            path: path.to_path_buf(),
            detail,
        };
        let model = tract_onnx::onnx()
            .model_for_path(path)
            .map_err(|e| error(format!("{e:#}")))?;
        let inputs: Vec<String> = model
            .input_outlets()
            .map_err(|e| error(e.to_string()))?
            .iter()
            .map(|o| model.node(o.node).name.clone())
            .collect();
        if inputs != ["input", "h", "c"] || model.output_outlets().map_or(0, |o| o.len()) != 3 {
            return Err(error(format!(
                "inputs {inputs:?}, where input, h and c and three outputs are expected"
            )));
        }
        let plan = model
            .with_input_fact(
                0,
                f32::fact([BLOCK_FRAMES, FRAME_SAMPLES + CONTEXT_SAMPLES]).into(),
            )
            .and_then(|m| m.with_input_fact(1, f32::fact([1, 1, STATE]).into()))
            .and_then(|m| m.with_input_fact(2, f32::fact([1, 1, STATE]).into()))
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .map_err(|e| error(format!("{e:#}")))?;
        Ok(SileroVad { plan })
    }

    /// Loads the cached model, fetching it first if it is missing ([`model_path`]).
    pub fn fetch(log: &mut dyn FnMut(&str)) -> Result<SileroVad, VadError> {
        SileroVad::load(&model_path(log)?)
    }

    /// The speech probabilities of a stream fed bit by bit.
    pub fn stream(&self) -> VadStream<'_> {
        VadStream {
            vad: self,
            pending: Vec::with_capacity(FRAME_SAMPLES),
            context: [0.0; CONTEXT_SAMPLES],
            rows: Vec::with_capacity(BLOCK_FRAMES * (FRAME_SAMPLES + CONTEXT_SAMPLES)),
            h: Tensor::zero::<f32>(&[1, 1, STATE]).expect("a small tensor"),
            c: Tensor::zero::<f32>(&[1, 1, STATE]).expect("a small tensor"),
            probs: Vec::new(),
            samples: 0,
        }
    }

    /// The speech probability of each frame of `audio` (16 kHz), as faster-whisper computes
    /// them: the audio is padded with zeros to a whole number of frames plus up to one more
    /// (`512 - len % 512` zeros), so there are `len / 512 + 1` frames, and the last frame's
    /// last 64 samples are zeroed.
    pub fn speech_probs(&self, audio: &[f32]) -> Result<Vec<f32>, VadError> {
        let mut stream = self.stream();
        stream.push(audio)?;
        Ok(stream.finish()?.0)
    }
}

/// Speech probabilities of audio fed in pieces ([`SileroVad::stream`]): memory holds one
/// block of frames, whatever the audio's length.
pub struct VadStream<'a> {
    vad: &'a SileroVad,
    /// Samples of the frame being filled.
    pending: Vec<f32>,
    /// The last samples of the frame before.
    context: [f32; CONTEXT_SAMPLES],
    /// Frames (with their context) waiting for the model.
    rows: Vec<f32>,
    h: Tensor,
    c: Tensor,
    probs: Vec<f32>,
    samples: usize,
}

impl VadStream<'_> {
    /// Feeds the next samples of the audio.
    pub fn push(&mut self, mut audio: &[f32]) -> Result<(), VadError> {
        self.samples += audio.len();
        while !audio.is_empty() {
            let take = (FRAME_SAMPLES - self.pending.len()).min(audio.len());
            self.pending.extend_from_slice(&audio[..take]);
            audio = &audio[take..];
            if self.pending.len() == FRAME_SAMPLES {
                self.end_frame()?;
            }
        }
        Ok(())
    }

    /// Samples fed so far.
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// Ends the audio: the probabilities of every frame, and the number of samples fed.
    pub fn finish(mut self) -> Result<(Vec<f32>, usize), VadError> {
        // As faster-whisper pads: a last frame of what is left and zeros, always. Its
        // `SileroVADModel` also zeroes the last frame's last 64 samples, in place (they are
        // the context it shifts out: `context[-1] = 0` on a view of the audio).
        self.pending.resize(FRAME_SAMPLES, 0.0);
        self.pending[FRAME_SAMPLES - CONTEXT_SAMPLES..].fill(0.0);
        self.end_frame()?;
        self.run()?;
        Ok((self.probs, self.samples))
    }

    fn end_frame(&mut self) -> Result<(), VadError> {
        self.rows.extend_from_slice(&self.context);
        self.rows.extend_from_slice(&self.pending);
        self.context
            .copy_from_slice(&self.pending[FRAME_SAMPLES - CONTEXT_SAMPLES..]);
        self.pending.clear();
        if self.rows.len() == BLOCK_FRAMES * (FRAME_SAMPLES + CONTEXT_SAMPLES) {
            self.run()?;
        }
        Ok(())
    }

    /// Runs the model over the frames waiting (a short block is completed with zero frames
    /// after them: the model reads frames in order, so they change none before).
    fn run(&mut self) -> Result<(), VadError> {
        let width = FRAME_SAMPLES + CONTEXT_SAMPLES;
        let frames = self.rows.len() / width;
        if frames == 0 {
            return Ok(());
        }
        self.rows.resize(BLOCK_FRAMES * width, 0.0);
        let input = Tensor::from_shape(&[BLOCK_FRAMES, width], &self.rows)
            .map_err(|e| VadError::Run(e.to_string()))?;
        self.rows.clear();
        let outputs = self
            .vad
            .plan
            .run(tvec![
                input.into_tvalue(),
                self.h.clone().into_tvalue(),
                self.c.clone().into_tvalue()
            ])
            .map_err(|e| VadError::Run(format!("{e:#}")))?;
        let probs = outputs[0]
            .to_plain_array_view::<f32>()
            .map_err(|e| VadError::Run(e.to_string()))?;
        self.probs.extend(probs.iter().take(frames));
        // The state after a completed block is that after its last zero frame: only the
        // audio's last block is completed, and no frame follows it.
        self.h = outputs[1].clone().into_tensor();
        self.c = outputs[2].clone().into_tensor();
        Ok(())
    }
}

/// The cached VAD model's path, fetched first if missing: faster-whisper 1.2.1's wheel from
/// PyPI (with the Python that fetches Whisper models), checked by sha256, and its
/// `silero_vad_v6.onnx` checked by sha256 too.
pub fn model_path(log: &mut dyn FnMut(&str)) -> Result<PathBuf, VadError> {
    let dir = crate::model::catalog::cache_dir().join("vad");
    let path = dir.join(FILE_NAME);
    if path.is_file() {
        return Ok(path);
    }
    log(&format!(
        "fetching the VAD model (Silero VAD v6 from {WHEEL} on PyPI) into {}",
        dir.display()
    ));
    let fetch = || -> anyhow::Result<()> {
        use sha2::Digest;
        std::fs::create_dir_all(&dir)?;
        let work = tempfile::Builder::new()
            .prefix(".fetch-vad-")
            .tempdir_in(&dir)?;
        let wheel = crate::model::fetch::pip_download(WHEEL, WHEEL_SHA256, work.path())?;
        let mut bytes = Vec::new();
        crate::model::fetch::extract(&[wheel], MEMBER, &mut bytes)?;
        let got = crate::model::fetch::hex(&sha2::Sha256::digest(&bytes));
        anyhow::ensure!(
            got == MODEL_SHA256,
            "{MEMBER} has sha256 {got}, not {MODEL_SHA256}"
        );
        crate::atomic::write_file(&path, |out| out.write_all(&bytes))?;
        Ok(())
    };
    fetch().map_err(|e| VadError::Fetch(format!("{e:#}")))?;
    Ok(path)
}
