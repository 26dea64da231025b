//! Whisper models: the encoder in tract, the dimensions of a model, checkpoints and their
//! conversion to ONNX.

pub mod catalog;
pub mod convert;
pub mod ct2;
mod decoder;
mod encoder;
pub mod export;
pub(crate) mod fetch;
pub mod hf;
mod layout;

pub use decoder::{
    CrossScores, DecoderError, DecoderFiles, DecoderHints, DecoderModel, DecoderSession,
    DecoderShape, SessionBytes, WeightPrecision,
};
pub use encoder::{Encoder, EncoderError, EncoderOptions, OpTime, Profile};
pub use fetch::{FetchError, ct2_checkpoint, fetch, resolve_model};
pub use layout::{ModelFiles, locate};

/// The dimensions of a Whisper model (the names follow OpenAI's `ModelDimensions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WhisperDims {
    /// Mel bins of the input: 80, or 128 for large-v3.
    pub n_mels: usize,
    /// Encoder positions: 1500 (30 s at 50 Hz after the stride-2 convolution).
    pub n_audio_ctx: usize,
    /// Width of the residual stream.
    pub d_model: usize,
    /// Attention heads (head width 64 in every Whisper size).
    pub n_heads: usize,
    /// Encoder layers.
    pub n_layers: usize,
    /// Width of the feed-forward layers (4 × `d_model`).
    pub n_ffn: usize,
}

impl WhisperDims {
    /// The family of checkpoints these dimensions belong to, for messages.
    pub fn family(&self) -> &'static str {
        match (self.d_model, self.n_mels, self.n_layers) {
            (384, 80, _) => "tiny",
            (512, 80, _) => "base",
            (768, 80, _) => "small",
            (1024, 80, _) => "medium",
            (1280, 80, _) => "large-v1/v2",
            (1280, 128, _) => "large-v3",
            _ => "unknown size",
        }
    }
}
