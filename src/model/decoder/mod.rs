//! A Whisper decoder in tract, on the CPU: the graphs of one model, planned once, and a
//! session per window that holds the cross-attention keys and values and the self-attention
//! cache of each row.
//!
//! Three layouts of graphs are read ([`DecoderFiles`]), told apart by their files and inputs;
//! each runs as one kind of decoder, in a file of its own:
//! - `cross_kv`: this project's export (`models convert`): `cross_kv_model.onnx` (encoder
//!   features to every layer's cross-attention keys and values, once per window) and
//!   `decoder_with_past_model.onnx`, which also takes an empty cache for the first tokens;
//! - `split`: optimum's split export, `decoder_model.onnx` (no cache in, the cross-attention
//!   keys and values out) for the first tokens, then `decoder_with_past_model.onnx`; and its
//!   merged export, `decoder_model_merged.onnx`, one `If` on `use_cache_branch` whose two
//!   branches are those two graphs (taken apart when the file is read, in `merged`). When the
//!   with-past graph takes a prompt, the decoder runs as a `cross_kv` one and holds each
//!   weight once;
//! - `no_cache`: `decoder_model.onnx` alone (exported without `-with-past`), each step
//!   recomputing the whole sequence.
//!
//! Every graph is read, typed with symbolic batch, sequence and cache lengths and planned once
//! (`load`, `optimize`, `graph`); the graphs of one decoder hold their common constants once
//! (`constants`). Caches are named by [`CacheName`](cache_name::CacheName) and held per
//! attention in a `KvCache` (`cache`).

mod alignment;
mod cache;
mod cache_name;
mod constants;
mod cross_kv;
mod files;
mod graph;
mod kind;
mod load;
mod merged;
mod no_cache;
mod optimize;
mod session;
mod split;
mod state;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use amanuensis_kernels::low_precision::WeightPrecision;
use tract_linalg::multithread::Executor;
use tract_onnx::prelude::*;

pub use alignment::CrossScores;
pub use files::DecoderFiles;
pub use session::{DecoderSession, SessionBytes};

use alignment::AlignmentGraph;
use cross_kv::CrossKv;
use kind::DecoderKind;
use load::{prepare, read_proto};
use no_cache::NoCache;

/// Why a decoder cannot be loaded or run. Messages name the file and, when there is one, the
/// fix.
#[derive(Debug, thiserror::Error)]
pub enum DecoderError {
    /// The model directory has no decoder graph.
    #[error(
        "{dir}: no decoder found (looked for decoder_with_past_model.onnx with cross_kv_model.onnx \
         or decoder_model.onnx, and decoder_model_merged.onnx, also under onnx/): transcription \
         needs the decoder; export it with `optimum-cli export onnx --model openai/whisper-... \
         --task automatic-speech-recognition-with-past DIR`, or convert a CTranslate2 checkpoint \
         with `amanuensis models convert`"
    )]
    NotFound {
        /// The directory searched.
        dir: PathBuf,
    },
    /// A graph does not have the inputs or outputs of a Whisper decoder.
    #[error("{path}: not a Whisper decoder: {detail}")]
    NotADecoder {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The file is not ONNX, or tract failed on it.
    #[error("{path}: {stage}: {detail}")]
    Tract {
        /// The file.
        path: PathBuf,
        /// What was being done.
        stage: &'static str,
        /// tract's error chain.
        detail: String,
    },
}

/// The shapes of a decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct DecoderShape {
    /// Logits per position: the vocabulary with its special and timestamp tokens.
    pub n_vocab: usize,
    /// Decoder layers.
    pub n_layers: usize,
    /// Attention heads.
    pub n_heads: usize,
    /// Width of the residual stream.
    pub d_model: usize,
    /// Encoder positions the cross-attention reads (1500).
    pub n_audio_ctx: usize,
}

/// What the caller knows of the model before its decoder is read.
#[derive(Debug, Clone, Copy)]
pub struct DecoderHints {
    /// Width of the encoder's features.
    pub d_model: usize,
    /// Encoder positions (1500).
    pub n_audio_ctx: usize,
    /// Decoder attention heads, when `config.json` says.
    pub n_heads: Option<usize>,
}

/// A Whisper decoder ready to run.
pub struct DecoderModel {
    files: DecoderFiles,
    shape: DecoderShape,
    kind: Box<dyn DecoderKind>,
    executor: Executor,
    /// The graph of word timestamps' alignment pass, planned when first asked for.
    alignment: std::sync::Mutex<Option<std::sync::Arc<AlignmentGraph>>>,
}

impl std::fmt::Debug for DecoderModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecoderModel")
            .field("files", &self.files)
            .field("shape", &self.shape)
            .finish_non_exhaustive()
    }
}

impl DecoderModel {
    /// Loads the decoder graphs `files` of a model whose encoder gives `[n_audio_ctx, d_model]`
    /// features; tract's matrix products run on `threads` threads.
    pub fn load(
        files: DecoderFiles,
        hints: DecoderHints,
        threads: usize,
    ) -> Result<DecoderModel, DecoderError> {
        DecoderModel::load_with(files, hints, threads, WeightPrecision::F32)
    }

    /// [`load`](DecoderModel::load), the linear layers' weights held as `weights` says
    /// (bfloat16 or int8: [`amanuensis_kernels::low_precision`]).
    pub fn load_with(
        files: DecoderFiles,
        hints: DecoderHints,
        threads: usize,
        weights: WeightPrecision,
    ) -> Result<DecoderModel, DecoderError> {
        let executor = if threads > 1 {
            Executor::multithread(threads)
        } else {
            Executor::SingleThread
        };
        let kind: Box<dyn DecoderKind> = match &files {
            DecoderFiles::CrossKv { cross, step } => {
                let cross = prepare(cross, read_proto(cross)?, &hints, weights)?.plan(&executor)?;
                let step = prepare(step, read_proto(step)?, &hints, weights)?.plan(&executor)?;
                Box::new(CrossKv::new(cross, step, &hints)?)
            }
            DecoderFiles::Split { first, step } => {
                split::load_files(first, step, &hints, weights, &executor)?
            }
            DecoderFiles::Merged(path) => split::load_merged(path, &hints, weights, &executor)?,
            DecoderFiles::NoCache(path) => {
                let graph = prepare(path, read_proto(path)?, &hints, weights)?.plan(&executor)?;
                Box::new(NoCache::new(graph, &hints)?)
            }
        };
        Ok(DecoderModel {
            files,
            shape: kind.shape(),
            kind,
            executor,
            alignment: std::sync::Mutex::new(None),
        })
    }

    /// The alignment pass's graph for `heads` (layer, head), planned the first time (and
    /// again for other heads).
    fn alignment_graph(
        &self,
        heads: &[(usize, usize)],
    ) -> Result<std::sync::Arc<AlignmentGraph>, DecoderError> {
        let mut held = self.alignment.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(graph) = held.as_ref()
            && graph.heads == heads
        {
            return Ok(graph.clone());
        }
        let graph = std::sync::Arc::new(AlignmentGraph::build(
            self.kind.prompt_graph(),
            heads,
            &self.shape,
            &self.executor,
        )?);
        *held = Some(graph.clone());
        Ok(graph)
    }

    /// The files read.
    pub fn files(&self) -> &DecoderFiles {
        &self.files
    }

    /// The decoder's shapes.
    pub fn shape(&self) -> &DecoderShape {
        &self.shape
    }

    /// A session over one window's encoder features (`[n_audio_ctx, d_model]`), with one row
    /// and nothing decoded yet.
    pub fn session(&self, features: &[f32]) -> Result<DecoderSession<'_>, DecoderError> {
        let DecoderShape {
            n_audio_ctx,
            d_model,
            ..
        } = self.shape;
        let hidden = Tensor::from_shape(&[1, n_audio_ctx, d_model], features).map_err(|e| {
            DecoderError::Tract {
                path: self.files.main_file().to_path_buf(),
                stage: "building the input",
                detail: format!("{e:#}; the encoder gives [{n_audio_ctx}, {d_model}] features"),
            }
        })?;
        DecoderSession::start(self, hidden.into_arc_tensor())
    }

    /// A session over a batch of windows, one row each (`features[i]` is window `i`'s
    /// `[n_audio_ctx, d_model]`): every forward pass runs every row's tokens at once, reading
    /// the weights once for all. A [reorder](DecoderSession::reorder) that drops rows drops
    /// their windows.
    pub fn batch_session(&self, features: &[&[f32]]) -> Result<DecoderSession<'_>, DecoderError> {
        let DecoderShape {
            n_audio_ctx,
            d_model,
            ..
        } = self.shape;
        let error = |detail: String| DecoderError::Tract {
            path: self.files.main_file().to_path_buf(),
            stage: "building the input",
            detail,
        };
        if features.is_empty() {
            return Err(error("a batch of no windows".into()));
        }
        let mut all = Vec::with_capacity(features.len() * n_audio_ctx * d_model);
        for f in features {
            all.extend_from_slice(f);
        }
        let hidden =
            Tensor::from_shape(&[features.len(), n_audio_ctx, d_model], &all).map_err(|e| {
                error(format!(
                    "{e:#}; the encoder gives [{n_audio_ctx}, {d_model}] features a window"
                ))
            })?;
        DecoderSession::start_batch(self, hidden.into_arc_tensor())
    }
}
