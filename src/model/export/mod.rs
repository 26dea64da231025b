//! The project's own exporter: CTranslate2 Whisper checkpoints to ONNX.

mod builder;
mod encoder;

pub use builder::{Attr, Dim, GraphBuilder, OPSET};
pub use encoder::build_encoder;
