//! Where the files of a model are: a single `.onnx` file, or a directory in the Hugging Face /
//! optimum layout.

use std::path::{Path, PathBuf};

use super::EncoderError;

/// The files of one model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFiles {
    /// The encoder graph.
    pub encoder: PathBuf,
    /// The decoder graph, when the directory has one.
    pub decoder: Option<PathBuf>,
    /// Hugging Face `config.json`, when present.
    pub config: Option<PathBuf>,
    /// `preprocessor_config.json`, when present.
    pub preprocessor: Option<PathBuf>,
    /// `tokenizer.json`, when present.
    pub tokenizer: Option<PathBuf>,
}

/// Encoder file names, in order of preference: optimum's float32 export first.
const ENCODER_NAMES: [&str; 3] = [
    "encoder_model.onnx",
    "encoder_model_fp16.onnx",
    "encoder.onnx",
];
const DECODER_NAMES: [&str; 3] = [
    "decoder_model_merged.onnx",
    "decoder_model.onnx",
    "decoder_with_past_model.onnx",
];

fn first_existing(dirs: &[PathBuf], names: &[&str]) -> Option<PathBuf> {
    names
        .iter()
        .flat_map(|n| dirs.iter().map(move |d| d.join(n)))
        .find(|p| p.is_file())
}

/// Finds the files of the model at `path`: an `.onnx` file (its directory is searched for the
/// JSON files), or a directory holding `encoder_model.onnx` directly or under `onnx/`.
pub fn locate(path: &Path) -> Result<ModelFiles, EncoderError> {
    let (encoder, root) = if path.is_dir() {
        let dirs = [path.to_path_buf(), path.join("onnx")];
        let encoder = first_existing(&dirs, &ENCODER_NAMES).ok_or_else(|| {
            EncoderError::NoEncoderInDirectory {
                dir: path.to_path_buf(),
            }
        })?;
        (encoder, path.to_path_buf())
    } else if path.is_file() {
        let root = path.parent().map(Path::to_path_buf).unwrap_or_default();
        // A file in an `onnx/` subdirectory keeps its JSON files one level up.
        let root = if root.file_name().is_some_and(|n| n == "onnx") {
            root.parent().map(Path::to_path_buf).unwrap_or(root)
        } else {
            root
        };
        (path.to_path_buf(), root)
    } else {
        return Err(EncoderError::NotFound {
            path: path.to_path_buf(),
        });
    };
    let dirs = [root.clone(), root.join("onnx")];
    let json = |name: &str| Some(root.join(name)).filter(|p| p.is_file());
    Ok(ModelFiles {
        decoder: first_existing(&dirs, &DECODER_NAMES),
        config: json("config.json"),
        preprocessor: json("preprocessor_config.json"),
        tokenizer: json("tokenizer.json"),
        encoder,
    })
}
