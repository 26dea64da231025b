//! The project's own exporter: CTranslate2 Whisper checkpoints to ONNX.

mod builder;
mod decoder;
mod encoder;

pub use builder::{Attr, Dim, GraphBuilder, OPSET};
pub use decoder::{build_cross_kv, build_decoder};
pub use encoder::build_encoder;
