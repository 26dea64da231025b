//! The log-mel spectrogram of a whole input, as openai-whisper's `transcribe()` computes it,
//! kept out of memory: one pass over the audio, then windows read at any frame.

use std::ops::ControlFlow;

use super::float_spool::FloatSpool;
use super::{AudioError, AudioStream, HOP_LENGTH, LogMel, N_FFT, N_FRAMES, N_SAMPLES};

/// Frames kept in memory before the spectrogram moves to a temporary file: 5 minutes.
const MEMORY_FRAMES: usize = 30_000;

/// Frames computed at a time.
const BLOCK_FRAMES: usize = 1_000;

/// The log-mel spectrogram of a whole input as `whisper.log_mel_spectrogram(audio,
/// padding=N_SAMPLES)` computes it for `transcribe()`: the STFT runs over the whole signal
/// followed by 30 s of zeros (reflect-padded at its start), and the floor `max - 8` takes the
/// maximum over the whole input, so a window's values do not depend on where it starts.
///
/// The frames (`log10` of the mel power, before the floor) are computed in one pass over the
/// stream and stored frame by frame, in memory up to 5 minutes of audio and in an anonymous
/// temporary file beyond; [`window`](MelSpool::window) reads any 30 s window from them.
/// Memory stays bounded by one window whatever the input's length.
pub struct MelSpool {
    n_mels: usize,
    content_frames: usize,
    samples: u64,
    max: f32,
    /// `log10` of a silent frame.
    silence: f32,
    frames: FloatSpool,
}

impl std::fmt::Debug for MelSpool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MelSpool")
            .field("n_mels", &self.n_mels)
            .field("content_frames", &self.content_frames)
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

/// The padded signal as it streams in: `padded[i]` is the signal (audio then zeros) at
/// `i - N_FFT / 2`, reflected at the start.
struct Padder {
    /// Samples of the padded signal from index `start`.
    buf: Vec<f32>,
    start: usize,
    /// Audio received before the reflection at the start could be written.
    head: Vec<f32>,
    headed: bool,
}

impl Padder {
    fn push(&mut self, audio: &[f32]) {
        if self.headed {
            self.buf.extend_from_slice(audio);
            return;
        }
        self.head.extend_from_slice(audio);
        if self.head.len() > N_FFT / 2 {
            self.write_head();
        }
    }

    /// `padded[i] = x[N_FFT / 2 - i]` for the first `N_FFT / 2` samples (reflection without
    /// the edge), then the signal.
    fn write_head(&mut self) {
        let half = N_FFT / 2;
        if self.head.len() <= half {
            // Only at the end of a very short input: the signal goes on with zeros.
            self.head.resize(half + 1, 0.0);
        }
        self.buf.extend((1..=half).rev().map(|i| self.head[i]));
        self.buf.append(&mut self.head);
        self.headed = true;
    }

    /// Frames whose samples have all arrived, from frame `next`.
    fn ready(&self, next: usize) -> usize {
        let end = self.start + self.buf.len();
        let needed = next * HOP_LENGTH + N_FFT;
        if end < needed {
            0
        } else {
            (end - needed) / HOP_LENGTH + 1
        }
    }

    /// The samples of frames `next ..`.
    fn frames_from(&self, next: usize) -> &[f32] {
        &self.buf[next * HOP_LENGTH - self.start..]
    }

    /// Drops the samples before frame `next`.
    fn consume(&mut self, next: usize) {
        let drop = next * HOP_LENGTH - self.start;
        self.buf.drain(..drop);
        self.start += drop;
    }
}

impl MelSpool {
    /// Reads `stream` to its end and computes its spectrogram with `mel`'s filter bank;
    /// `progress` receives the seconds of audio read so far.
    pub fn build(
        stream: &mut AudioStream,
        mel: &LogMel,
        progress: &mut dyn FnMut(f64),
    ) -> Result<MelSpool, AudioError> {
        let spool = MelSpool::build_until(stream, mel, &mut |seconds| {
            progress(seconds);
            ControlFlow::Continue(())
        })?;
        Ok(spool.expect("never stopped"))
    }

    /// [`build`](MelSpool::build), which stops, returning `None`, as soon as `progress`
    /// (called after each block of audio with the seconds read so far) breaks.
    pub fn build_until(
        stream: &mut AudioStream,
        mel: &LogMel,
        progress: &mut dyn FnMut(f64) -> ControlFlow<()>,
    ) -> Result<Option<MelSpool>, AudioError> {
        MelSpool::from_blocks(stream.map(|w| w.map(|w| w.samples)), mel, progress)
    }

    /// [`build_until`](MelSpool::build_until) over 16 kHz audio given in blocks of any size.
    pub fn from_blocks(
        blocks: impl Iterator<Item = Result<Vec<f32>, AudioError>>,
        mel: &LogMel,
        progress: &mut dyn FnMut(f64) -> ControlFlow<()>,
    ) -> Result<Option<MelSpool>, AudioError> {
        let n_mels = mel.n_mels();
        let mut spool = MelSpool {
            n_mels,
            content_frames: 0,
            samples: 0,
            max: f32::NEG_INFINITY,
            silence: mel.log10_floor(),
            frames: FloatSpool::new(MEMORY_FRAMES * n_mels),
        };
        let mut padder = Padder {
            buf: Vec::new(),
            start: 0,
            head: Vec::new(),
            headed: false,
        };
        let mut next = 0;
        let mut block = Vec::new();
        for samples in blocks {
            let samples = samples?;
            spool.samples += samples.len() as u64;
            padder.push(&samples);
            next = spool.drain(mel, &mut padder, next, usize::MAX, &mut block)?;
            if progress(spool.seconds()).is_break() {
                return Ok(None);
            }
        }
        // 30 s of zeros after the audio, as `padding=N_SAMPLES`; frames after the ones that
        // reach into the audio see only zeros and are the floor value, counted in the maximum.
        let n = spool.samples as usize;
        spool.content_frames = n / HOP_LENGTH;
        let touching = (n + N_FFT / 2).div_ceil(HOP_LENGTH) + 1;
        let total = (n + N_SAMPLES) / HOP_LENGTH;
        let last = touching.min(total);
        padder.push(&vec![0.0; (last * HOP_LENGTH + N_FFT).saturating_sub(n)]);
        if !padder.headed {
            padder.write_head();
        }
        spool.drain(mel, &mut padder, next, last, &mut block)?;
        if last < total {
            spool.max = spool.max.max(mel.log10_floor());
        }
        Ok(Some(spool))
    }

    /// Computes the ready frames (up to frame `limit`) from `next`, stores those inside the
    /// audio, and returns the next frame to compute.
    fn drain(
        &mut self,
        mel: &LogMel,
        padder: &mut Padder,
        mut next: usize,
        limit: usize,
        block: &mut Vec<f32>,
    ) -> Result<usize, AudioError> {
        loop {
            let count = padder
                .ready(next)
                .min(limit.saturating_sub(next))
                .min(BLOCK_FRAMES);
            if count == 0 {
                return Ok(next);
            }
            block.resize(self.n_mels * count, 0.0);
            mel.log10_frames(padder.frames_from(next), count, block);
            self.max = block.iter().copied().fold(self.max, f32::max);
            let frame_major: Vec<f32> = (0..count)
                .flat_map(|t| (0..self.n_mels).map(move |m| (m, t)))
                .map(|(m, t)| block[m * count + t])
                .collect();
            self.store(&frame_major)?;
            next += count;
            padder.consume(next);
        }
    }

    fn store(&mut self, frames: &[f32]) -> Result<(), AudioError> {
        self.frames.push(frames).map_err(spool_error)
    }

    /// Whether the frames are held in memory (else in a temporary file: inputs longer than
    /// five minutes).
    pub fn in_memory(&self) -> bool {
        self.frames.in_memory()
    }

    /// Mel bins.
    pub fn n_mels(&self) -> usize {
        self.n_mels
    }

    /// Frames of the audio itself (`samples / HOP_LENGTH`): the `content_frames` of
    /// `transcribe()`.
    pub fn content_frames(&self) -> usize {
        self.content_frames
    }

    /// Samples of 16 kHz audio read.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// Seconds of audio read.
    pub fn seconds(&self) -> f64 {
        self.samples as f64 / super::SAMPLE_RATE as f64
    }

    /// The first 30 s as OpenAI's language detection sees them (`pad_or_trim` of the whole
    /// spectrogram): past the audio, the frames of the zeros that follow it.
    pub fn detection_window(&mut self, out: &mut [f32]) -> Result<(), AudioError> {
        let stored = self.stored_frames();
        self.read(0, stored.min(N_FRAMES), out)?;
        let floor = ((self.silence.max(self.max - 8.0)) + 4.0) / 4.0;
        for m in 0..self.n_mels {
            out[m * N_FRAMES + stored.min(N_FRAMES)..(m + 1) * N_FRAMES].fill(floor);
        }
        Ok(())
    }

    fn stored_frames(&self) -> usize {
        self.frames.len() / self.n_mels
    }

    /// The encoder's input for `size` frames from `seek` (`size <= N_FRAMES`, within the
    /// audio): `[n_mels, N_FRAMES]`, floored at the whole input's maximum minus 8, scaled, and
    /// zero after `size` frames (`pad_or_trim` of the sliced spectrogram).
    pub fn window(&mut self, seek: usize, size: usize, out: &mut [f32]) -> Result<(), AudioError> {
        let size = size
            .min(N_FRAMES)
            .min(self.content_frames.saturating_sub(seek));
        self.read(seek, size, out)
    }

    /// Frames `seek .. seek + size` (stored), floored and scaled, then zeros.
    fn read(&mut self, seek: usize, size: usize, out: &mut [f32]) -> Result<(), AudioError> {
        assert_eq!(out.len(), self.n_mels * N_FRAMES);
        let n_mels = self.n_mels;
        let mut frames = vec![0.0f32; size * n_mels];
        self.frames
            .read(seek * n_mels, &mut frames)
            .map_err(spool_error)?;
        let floor = self.max - 8.0;
        out.fill(0.0);
        for t in 0..size {
            for m in 0..n_mels {
                let v = frames[t * n_mels + m];
                out[m * N_FRAMES + t] = ((if v > floor { v } else { floor }) + 4.0) / 4.0;
            }
        }
        Ok(())
    }
}

fn spool_error(err: std::io::Error) -> AudioError {
    AudioError::Io {
        name: "the temporary spectrogram file".into(),
        err,
    }
}
