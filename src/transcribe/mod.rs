//! Transcription: Whisper's decoding rules over the encoder and the decoder, long audio, and
//! the transcript's formats.

mod context;
mod decoding;
pub mod languages;
mod options;
pub mod output;
pub mod segments;
pub mod timing;
mod tokenizer;
mod transcriber;
mod words;

pub use context::PromptContext;
pub use decoding::{
    DecodingOptions, DecodingResult, DecodingTask, Rng, Session, SuppressTokens, compression_ratio,
    verify_options,
};
pub use options::{LanguageDetection, TranscribeOptions, WordOptions};
pub use timing::Word;
pub use tokenizer::{N_TIMESTAMPS, SpecialTokens, Task, TokenizerError, WhisperTokenizer};
pub use transcriber::{
    EncoderTurn, Progress, Quiet, Segment, Timings, TranscribeError, Transcriber, Transcript,
};
pub use words::{WordComparison, compare_words, words};
