//! Where a model directory keeps its decoder graphs, and which layout they are in.

use std::path::{Path, PathBuf};

use super::DecoderError;

/// Where the decoder graphs of a model directory are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecoderFiles {
    /// This project's export: cross-attention graph and the cached decoder.
    CrossKv {
        /// `cross_kv_model.onnx`.
        cross: PathBuf,
        /// `decoder_with_past_model.onnx`.
        step: PathBuf,
    },
    /// optimum's two graphs.
    Split {
        /// `decoder_model.onnx`: the first tokens, without a cache.
        first: PathBuf,
        /// `decoder_with_past_model.onnx`.
        step: PathBuf,
    },
    /// optimum's merged graph.
    Merged(PathBuf),
    /// A decoder without a cache (`decoder_model.onnx` alone).
    NoCache(PathBuf),
}

impl DecoderFiles {
    /// Finds the decoder graphs in `dir` or `dir/onnx`, float32 files first.
    pub fn locate(dir: &Path) -> Result<DecoderFiles, DecoderError> {
        let dirs = [dir.to_path_buf(), dir.join("onnx")];
        let find = |names: &[&str]| {
            names
                .iter()
                .flat_map(|n| dirs.iter().map(move |d| d.join(n)))
                .find(|p| p.is_file())
        };
        let step = find(&[
            "decoder_with_past_model.onnx",
            "decoder_with_past_model_fp16.onnx",
        ]);
        let first = find(&["decoder_model.onnx", "decoder_model_fp16.onnx"]);
        let cross = find(&["cross_kv_model.onnx"]);
        let merged = find(&[
            "decoder_model_merged.onnx",
            "decoder_model_merged_fp16.onnx",
        ]);
        Ok(match (step, cross, first, merged) {
            (Some(step), Some(cross), _, _) => DecoderFiles::CrossKv { cross, step },
            (Some(step), None, Some(first), _) => DecoderFiles::Split { first, step },
            (_, _, _, Some(merged)) => DecoderFiles::Merged(merged),
            (None, _, Some(first), None) => DecoderFiles::NoCache(first),
            _ => {
                return Err(DecoderError::NotFound {
                    dir: dir.to_path_buf(),
                });
            }
        })
    }

    /// The file named in messages about the decoder.
    pub fn main_file(&self) -> &Path {
        match self {
            DecoderFiles::CrossKv { step, .. } | DecoderFiles::Split { step, .. } => step,
            DecoderFiles::Merged(p) | DecoderFiles::NoCache(p) => p,
        }
    }
}
