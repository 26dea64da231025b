//! The audio frontend: any common audio file to Whisper's log-mel spectrogram.
//!
//! ```text
//! file ──symphonia──> PCM ──mix to mono──> f32 ──rubato──> 16 kHz ──30 s windows──> log-mel
//! ```
//!
//! Decoding and resampling run as a stream ([`AudioStream`]): memory stays bounded by one
//! window whatever the length of the file.

mod decode;
mod error;
mod filters;
mod float_spool;
mod mel;
mod mp4_edit;
mod resample;
mod spool;
mod stream;

pub use decode::{AudioInfo, Decoder, Input, Samples};
pub use error::AudioError;
pub use filters::MelFilters;
pub(crate) use float_spool::FloatSpool;
pub use mel::LogMel;
pub use resample::StreamResampler;
pub use spool::MelSpool;
pub use stream::{AudioStream, Window, load_audio};

// The constants below keep the names of OpenAI Whisper's `whisper/audio.py`.

/// Sample rate every Whisper model expects, in Hz.
pub const SAMPLE_RATE: u32 = 16_000;
/// FFT size of the short-time Fourier transform (25 ms at 16 kHz).
pub const N_FFT: usize = 400;
/// Hop between two STFT frames (10 ms at 16 kHz).
pub const HOP_LENGTH: usize = 160;
/// Length of one encoder window, in seconds.
pub const CHUNK_LENGTH: usize = 30;
/// Samples in one encoder window: 480 000.
pub const N_SAMPLES: usize = CHUNK_LENGTH * SAMPLE_RATE as usize;
/// Mel frames in one encoder window: 3 000.
pub const N_FRAMES: usize = N_SAMPLES / HOP_LENGTH;
/// Frequency bins of one real FFT of `N_FFT` samples: 201.
pub const N_FREQS: usize = N_FFT / 2 + 1;
