#![warn(missing_docs)]
//! amanuensis: Whisper encoders on AMD Ryzen AI NPUs through tract.
//!
//! This crate holds the audio frontend (decode, mix, resample, Whisper's log-mel
//! spectrogram) and the pieces the `amanuensis` command line is built from.

pub mod atomic;
pub mod audio;
pub mod backend;
#[doc(hidden)]
// The command line's model of whisper-xdna's published windows (`inspect --published`), public
// for it and its tests; not part of the library's API.
pub mod calibration;
pub mod model;
pub mod npy;
pub mod placement;
pub mod precision;
pub mod rewrite;
pub mod transcribe;
pub mod vad;
