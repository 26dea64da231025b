use std::io;

/// Why an audio input could not be turned into samples.
///
/// Every message starts with the name of the input (its path, or `<stdin>`) and says what is
/// wrong with it, so that it can be printed to a user as it is.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    /// The file could not be opened or read.
    #[error("{name}: cannot read: {err}")]
    Io {
        /// The input's name.
        name: String,
        /// The operating system's error.
        err: io::Error,
    },
    /// The file has no bytes at all.
    #[error("{name}: the file is empty (0 bytes)")]
    EmptyFile {
        /// The input's name.
        name: String,
    },
    /// No container format recognises the bytes.
    #[error(
        "{name}: not a recognised audio file (supported: wav, flac, mp3, ogg/vorbis, m4a/aac, \
         aiff, caf, mkv/webm)"
    )]
    UnknownFormat {
        /// The input's name.
        name: String,
    },
    /// The container is recognised but its headers are damaged or cut short.
    #[error("{name}: damaged or truncated file: {detail}")]
    Damaged {
        /// The input's name.
        name: String,
        /// What the demuxer found wrong.
        detail: String,
    },
    /// The container holds no audio track.
    #[error("{name}: the file holds no audio track")]
    NoAudioTrack {
        /// The input's name.
        name: String,
    },
    /// The audio track uses a codec that cannot be decoded.
    #[error(
        "{name}: the {codec} codec is not supported; convert the file first, for example \
         `ffmpeg -i INPUT -ac 1 -ar 16000 out.wav`"
    )]
    UnsupportedCodec {
        /// The input's name.
        name: String,
        /// The codec, as named by the container.
        codec: String,
    },
    /// The stream lacks a parameter that decoding needs.
    #[error("{name}: the audio track does not declare its {what}")]
    MissingParameter {
        /// The input's name.
        name: String,
        /// What is missing ("sample rate", "channel layout").
        what: &'static str,
    },
    /// The file decodes to zero samples.
    #[error("{name}: the file contains no audio samples (zero-length audio)")]
    NoSamples {
        /// The input's name.
        name: String,
    },
    /// The file stops before the length its header announces.
    #[error(
        "{name}: the file is truncated: its header announces {expected:.2} s of audio, \
         only {decoded:.2} s could be decoded"
    )]
    Truncated {
        /// The input's name.
        name: String,
        /// Seconds announced by the header.
        expected: f64,
        /// Seconds actually decoded.
        decoded: f64,
    },
    /// The bytes are damaged beyond what the decoder can skip.
    #[error("{name}: damaged audio data at {at:.2} s: {detail}")]
    Corrupt {
        /// The input's name.
        name: String,
        /// Position in seconds where decoding failed.
        at: f64,
        /// The decoder's own description.
        detail: String,
    },
    /// A sample is NaN or infinite.
    #[error("{name}: invalid sample ({what}) at {at:.3} s: the audio data is damaged")]
    NonFinite {
        /// The input's name.
        name: String,
        /// Position in seconds of the first bad sample.
        at: f64,
        /// "NaN" or "infinity".
        what: &'static str,
    },
    /// The resampler refused the stream's sample rate.
    #[error("{name}: cannot resample from {rate} Hz: {detail}")]
    Resample {
        /// The input's name.
        name: String,
        /// The stream's sample rate.
        rate: u32,
        /// rubato's description.
        detail: String,
    },
}
