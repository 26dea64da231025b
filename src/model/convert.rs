//! `models convert --from-ct2`: a CTranslate2 Whisper checkpoint to an optimum-layout ONNX
//! model directory.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::WhisperDims;
use super::ct2::{Ct2Error, Ct2Model};
use super::export::{build_cross_kv, build_decoder, build_encoder};
use crate::transcribe::{SpecialTokens, TokenizerError, WhisperTokenizer};

/// Decoder dimensions, needed for `config.json` (and by the decoder export).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecoderDims {
    /// Vocabulary size.
    pub n_vocab: usize,
    /// Decoder positions (448).
    pub n_text_ctx: usize,
    /// Decoder layers.
    pub n_layers: usize,
    /// Decoder attention heads.
    pub n_heads: usize,
    /// Width of the decoder's residual stream (the encoder's).
    pub d_model: usize,
    /// Width of the decoder's feed-forward layers.
    pub n_ffn: usize,
}

/// Layers of the `encoder` or `decoder` stack: how many `layer_i` have a feed-forward block.
fn layer_count(ct2: &Ct2Model, stack: &str) -> usize {
    (0..)
        .take_while(|i| {
            ct2.get(&format!("{stack}/layer_{i}/ffn/linear_0/weight"))
                .is_some()
        })
        .count()
}

/// Attention heads of a stack; every Whisper size has 64-wide heads, and older converters
/// did not store the count.
/// The heads of `stack`'s attention: its `num_heads` scalar, else one per 64 channels as in
/// every Whisper; refused unless they divide `d_model`.
fn head_count(ct2: &Ct2Model, stack: &str, d_model: usize) -> Result<usize, Ct2Error> {
    let name = format!("{stack}/num_heads");
    let (heads, from) = match ct2.scalar(&name) {
        Ok(h) if h.is_finite() && h >= 1.0 && h.fract() == 0.0 => (h as usize, name),
        Ok(h) => {
            return Err(whisper_error(
                ct2,
                format!("{name} is {h}, not a head count"),
            ));
        }
        Err(_) => (d_model / 64, format!("{d_model} channels / 64 (no {name})")),
    };
    if heads == 0 || !d_model.is_multiple_of(heads) {
        return Err(whisper_error(
            ct2,
            format!("{heads} heads ({from}) do not divide the width of {d_model}"),
        ));
    }
    Ok(heads)
}

fn whisper_error(ct2: &Ct2Model, detail: String) -> Ct2Error {
    Ct2Error::Whisper {
        path: ct2.path().to_path_buf(),
        detail,
    }
}

/// The shape of `name`, which must have `rank` dimensions, none of them zero.
fn shape_of_rank<'a>(ct2: &'a Ct2Model, name: &str, rank: usize) -> Result<&'a [usize], Ct2Error> {
    let shape = ct2.shape(name)?;
    if shape.len() != rank || shape.contains(&0) {
        return Err(whisper_error(
            ct2,
            format!("variable {name} has shape {shape:?}, not {rank} non-zero dimensions"),
        ));
    }
    Ok(shape)
}

/// Reads the encoder's dimensions off a Whisper checkpoint's variables.
pub fn ct2_encoder_dims(ct2: &Ct2Model) -> Result<WhisperDims, Ct2Error> {
    if ct2.spec != "WhisperSpec" {
        return Err(Ct2Error::Format {
            path: ct2.path().to_path_buf(),
            detail: format!("a {} checkpoint, not a Whisper one", ct2.spec),
        });
    }
    let conv1 = ct2.shape("encoder/conv1/weight")?.to_vec();
    let [d_model, n_mels, 3] = conv1[..] else {
        return Err(Ct2Error::Shape {
            path: ct2.path().to_path_buf(),
            name: "encoder/conv1/weight".into(),
            got: conv1,
            expected: vec![0, 0, 3],
        });
    };
    if d_model == 0 || n_mels == 0 {
        return Err(whisper_error(
            ct2,
            format!("variable encoder/conv1/weight has shape {conv1:?}"),
        ));
    }
    let n_audio_ctx = shape_of_rank(ct2, "encoder/position_encodings/encodings", 2)?[0];
    let n_layers = layer_count(ct2, "encoder");
    let n_ffn = shape_of_rank(ct2, "encoder/layer_0/ffn/linear_0/weight", 2)?[0];
    let n_heads = head_count(ct2, "encoder", d_model)?;
    Ok(WhisperDims {
        n_mels,
        n_audio_ctx,
        d_model,
        n_heads,
        n_layers,
        n_ffn,
    })
}

/// Reads the decoder's dimensions off a Whisper checkpoint's variables.
pub fn ct2_decoder_dims(ct2: &Ct2Model) -> Result<DecoderDims, Ct2Error> {
    let emb = shape_of_rank(ct2, "decoder/embeddings/weight", 2)?;
    let n_vocab = emb[0];
    let d_model = emb[1];
    let n_text_ctx = shape_of_rank(ct2, "decoder/position_encodings/encodings", 2)?[0];
    let n_layers = layer_count(ct2, "decoder");
    // Every Whisper has as many heads in its decoder as in its encoder.
    let n_heads = match ct2.scalar("decoder/num_heads") {
        Ok(_) => head_count(ct2, "decoder", d_model)?,
        Err(_) => head_count(ct2, "encoder", d_model)?,
    };
    Ok(DecoderDims {
        n_vocab,
        n_text_ctx,
        n_layers,
        n_heads,
        d_model,
        n_ffn: shape_of_rank(ct2, "decoder/layer_0/ffn/linear_0/weight", 2)?[0],
    })
}

/// Why a conversion failed. Nothing is left at the output directory when it does.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// The output directory exists: a conversion never writes into or over one.
    #[error("{0} already exists: remove it or choose another output directory")]
    OutputExists(PathBuf),
    /// The checkpoint's weights are missing, malformed, or describe no Whisper model.
    #[error(transparent)]
    Checkpoint(#[from] Ct2Error),
    /// A file of the checkpoint (configuration, weights) cannot be read or is not what it
    /// should be.
    #[error("{path}: {detail}")]
    Input {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong, and what to do.
        detail: String,
    },
    /// The tokenizer of the checkpoint cannot be read.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// Writing the converted model failed (the disk, permissions).
    #[error("cannot write {path}: {detail}")]
    Output {
        /// What was being written.
        path: PathBuf,
        /// The system's message.
        detail: String,
    },
}

impl ConvertError {
    pub(crate) fn input(path: &Path, detail: impl Into<String>) -> ConvertError {
        ConvertError::Input {
            path: path.to_path_buf(),
            detail: detail.into(),
        }
    }

    fn output(path: &Path, err: impl std::fmt::Display) -> ConvertError {
        ConvertError::Output {
            path: path.to_path_buf(),
            detail: err.to_string(),
        }
    }
}

/// What a conversion produced.
#[derive(Debug, Clone)]
pub struct Converted {
    /// The output directory.
    pub dir: PathBuf,
    /// The encoder's dimensions.
    pub dims: WhisperDims,
}

/// Converts the CTranslate2 checkpoint in `src` (a directory with `model.bin`, `config.json`
/// and `tokenizer.json`, as faster-whisper ships them) into an optimum-layout directory `out`
/// holding `encoder_model.onnx`, the decoder as `cross_kv_model.onnx` and
/// `decoder_with_past_model.onnx` (see [`build_decoder`]), `config.json`,
/// `preprocessor_config.json`, and with the tokenizer `tokenizer.json` and
/// `generation_config.json`.
///
/// The work happens in a temporary directory beside `out`, renamed to `out` only once every
/// file is written: an interrupted conversion leaves nothing that looks complete.
pub fn convert_ct2(src: &Path, out: &Path) -> Result<Converted, ConvertError> {
    if out.exists() {
        return Err(ConvertError::OutputExists(out.to_path_buf()));
    }
    let ct2 = Ct2Model::open(src)?;
    let src_dir = if src.is_dir() {
        src.to_path_buf()
    } else {
        src.parent().unwrap_or(Path::new(".")).to_path_buf()
    };
    // CTranslate2's own config.json (suppression lists, alignment heads, language ids):
    // optional, but when present it must be read, not guessed around.
    let ct2_config_path = src_dir.join("config.json");
    let ct2_config: serde_json::Value = if ct2_config_path.is_file() {
        let bytes = std::fs::read(&ct2_config_path)
            .map_err(|e| ConvertError::input(&ct2_config_path, format!("cannot read: {e}")))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            ConvertError::input(
                &ct2_config_path,
                format!(
                    "not valid JSON ({e}); fix or remove it (without it the conversion uses \
                     Whisper's defaults)"
                ),
            )
        })?
    } else {
        json!({})
    };
    let source = format!("CTranslate2 {} revision {}", ct2.spec, ct2.revision);
    convert_model(&ct2, &src_dir, &ct2_config, out, source)
}

/// Converts `ct2` (variables named as CTranslate2's Whisper specification names them), with
/// the generation settings of `ct2_config` (CTranslate2's `config.json` fields) and the
/// tokenizer files of `src_dir`, into the optimum-layout directory `out`; `source` is written
/// into the graphs' metadata.
pub(crate) fn convert_model(
    ct2: &Ct2Model,
    src_dir: &Path,
    ct2_config: &serde_json::Value,
    out: &Path,
    source: String,
) -> Result<Converted, ConvertError> {
    if out.exists() {
        return Err(ConvertError::OutputExists(out.to_path_buf()));
    }
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| ConvertError::output(&parent, e))?;
    let dims = ct2_encoder_dims(ct2)?;
    let decoder = ct2_decoder_dims(ct2)?;
    let tmp = tempfile::Builder::new()
        .prefix(".amanuensis-convert-")
        .tempdir_in(&parent)
        .map_err(|e| ConvertError::output(&parent, e))?;
    let json = |value: &serde_json::Value| {
        serde_json::to_vec_pretty(value).expect("a JSON value serialises")
    };
    let metadata = [
        ("source", source),
        (
            "dims",
            serde_json::to_string(&dims).expect("dimensions serialise"),
        ),
    ];
    let graphs = [
        ("encoder_model.onnx", build_encoder(ct2, &dims)?),
        (
            "cross_kv_model.onnx",
            build_cross_kv(ct2, &decoder, dims.n_audio_ctx)?,
        ),
        (
            "decoder_with_past_model.onnx",
            build_decoder(ct2, &decoder, dims.n_audio_ctx)?,
        ),
    ];
    for (name, graph) in graphs {
        let path = tmp.path().join(name);
        graph
            .write(&path, "amanuensis", &metadata)
            .map_err(|e| ConvertError::output(&path, e))?;
    }
    let tokenizer_path = src_dir.join("tokenizer.json");
    let special = if tokenizer_path.is_file() {
        Some(*WhisperTokenizer::load(&tokenizer_path, None, decoder.n_vocab)?.special())
    } else {
        None
    };

    let config = hf_config(&dims, &decoder, ct2_config, special.as_ref());
    let write = |name: &str, bytes: Vec<u8>| {
        let path = tmp.path().join(name);
        std::fs::write(&path, bytes).map_err(|e| ConvertError::output(&path, e))
    };
    write("config.json", json(&config))?;
    if let Some(special) = &special {
        write(
            "generation_config.json",
            json(&generation_config(&decoder, special, ct2_config)),
        )?;
    }
    let preprocessor = json!({
        "chunk_length": 30,
        "feature_extractor_type": "WhisperFeatureExtractor",
        "feature_size": dims.n_mels,
        "hop_length": crate::audio::HOP_LENGTH,
        "n_fft": crate::audio::N_FFT,
        "n_samples": crate::audio::N_SAMPLES,
        "nb_max_frames": crate::audio::N_FRAMES,
        "padding_side": "right",
        "padding_value": 0.0,
        "processor_class": "WhisperProcessor",
        "return_attention_mask": false,
        "sampling_rate": crate::audio::SAMPLE_RATE,
    });
    write("preprocessor_config.json", json(&preprocessor))?;
    for name in ["tokenizer.json", "vocabulary.txt", "vocabulary.json"] {
        let from = src_dir.join(name);
        if from.is_file() {
            let to = tmp.path().join(name);
            std::fs::copy(&from, &to).map_err(|e| ConvertError::output(&to, e))?;
        }
    }
    let tmp = tmp.keep();
    std::fs::rename(&tmp, out).map_err(|e| {
        let _ = std::fs::remove_dir_all(&tmp);
        ConvertError::output(out, e)
    })?;
    Ok(Converted {
        dir: out.to_path_buf(),
        dims,
    })
}

/// The ids of `<|endoftext|>` and `<|startoftranscript|>`: from the tokenizer when there is
/// one, else where OpenAI's vocabularies put them (English-only: 50256 and 50257,
/// multilingual: 50257 and 50258).
fn eot_sot(dec: &DecoderDims, special: Option<&SpecialTokens>) -> (u32, u32) {
    match special {
        Some(s) => (s.eot, s.sot),
        None if dec.n_vocab >= 51865 => (50257, 50258),
        None => (50256, 50257),
    }
}

/// A Hugging Face `generation_config.json`: the special ids from the tokenizer, the
/// suppression lists and alignment heads from CTranslate2's `config.json`.
fn generation_config(
    dec: &DecoderDims,
    special: &SpecialTokens,
    ct2: &serde_json::Value,
) -> serde_json::Value {
    let mut config = json!({
        "bos_token_id": special.eot,
        "eos_token_id": special.eot,
        "pad_token_id": special.eot,
        "decoder_start_token_id": special.sot,
        "no_timestamps_token_id": special.no_timestamps,
        "prev_sot_token_id": special.sot_prev,
        "is_multilingual": dec.n_vocab >= 51865,
        "max_initial_timestamp_index": 50,
        "max_length": dec.n_text_ctx,
        "return_timestamps": false,
    });
    for (from, to) in [
        ("suppress_ids", "suppress_tokens"),
        ("suppress_ids_begin", "begin_suppress_tokens"),
        ("alignment_heads", "alignment_heads"),
    ] {
        if let Some(v) = ct2.get(from) {
            config[to] = v.clone();
        }
    }
    config
}

/// A Hugging Face `config.json` for the converted model, with the generation settings that
/// CTranslate2 keeps in its own `config.json` carried over.
fn hf_config(
    dims: &WhisperDims,
    dec: &DecoderDims,
    ct2: &serde_json::Value,
    special: Option<&SpecialTokens>,
) -> serde_json::Value {
    let english_only = dec.n_vocab < 51865;
    let (eot, sot) = eot_sot(dec, special);
    let mut config = json!({
        "architectures": ["WhisperForConditionalGeneration"],
        "model_type": "whisper",
        "activation_function": "gelu",
        "num_mel_bins": dims.n_mels,
        "d_model": dims.d_model,
        "encoder_layers": dims.n_layers,
        "encoder_attention_heads": dims.n_heads,
        "encoder_ffn_dim": dims.n_ffn,
        "max_source_positions": dims.n_audio_ctx,
        "decoder_layers": dec.n_layers,
        "decoder_attention_heads": dec.n_heads,
        "decoder_ffn_dim": dec.n_ffn,
        "max_target_positions": dec.n_text_ctx,
        "vocab_size": dec.n_vocab,
        "num_hidden_layers": dims.n_layers,
        "scale_embedding": false,
        "bos_token_id": eot,
        "eos_token_id": eot,
        "pad_token_id": eot,
        "decoder_start_token_id": sot,
        "begin_suppress_tokens": ct2.get("suppress_ids_begin").cloned().unwrap_or(json!([220, eot])),
        "is_multilingual": !english_only,
    });
    for (from, to) in [
        ("suppress_ids", "suppress_tokens"),
        ("alignment_heads", "alignment_heads"),
        ("lang_ids", "lang_ids"),
    ] {
        if let Some(v) = ct2.get(from) {
            config[to] = v.clone();
        }
    }
    config
}
