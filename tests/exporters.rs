//! Encoders from every common exporter load in tract and compute what PyTorch computes.
//!
//! The fixtures in tests/data/exporters are one small random Whisper encoder (d_model 64,
//! 2 heads, 2 layers, 80 mels, 1500 positions) exported by torch.onnx (TorchScript at opsets
//! 17 and 20, and the dynamo exporter) from openai-whisper's AudioEncoder, and by optimum at
//! opsets 14, 17 and 18 from transformers' Whisper; `*.expected.npy` are the PyTorch modules'
//! own outputs on tests/data/reference/jfk.mel80_openai.npy. tests/data/exporters/make.py made
//! them all.

mod common;

use std::path::{Path, PathBuf};

use amanuensis::model::{Encoder, EncoderOptions};
use common::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/exporters")
        .join(name)
}

/// Loads `file`, checks its dimensions, encodes OpenAI's jfk log-mel and compares with
/// PyTorch's output in `expected`.
fn check_within(file: &str, expected: &str, max_abs: f32, min_cosine: f64) {
    let encoder = Encoder::load(
        &fixture(file),
        &EncoderOptions {
            threads: 1,
            ..EncoderOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("{file} does not load: {e}"));
    let dims = encoder.dims();
    assert_eq!(
        (dims.n_mels, dims.d_model, dims.n_audio_ctx, dims.n_layers),
        (80, 64, 1500, 2),
        "{file}"
    );
    let (_, mel) = read_npy(&reference("jfk.mel80_openai.npy"));
    let ours = encoder.encode(&mel).unwrap();
    let (_, torch) = read_npy(&fixture(expected));
    assert_close(file, &ours, &torch, max_abs, min_cosine);
}

/// float32 against float32 PyTorch through two layers: a few 1e-6 on values of order 1.
fn check(file: &str, expected: &str) {
    check_within(file, expected, 1e-4, 0.999_999);
}

#[test]
fn torchscript_export_at_opset_17() {
    check("openai-torchscript-opset17.onnx", "openai.expected.npy");
}

#[test]
fn torchscript_export_at_opset_20_with_a_gelu_node() {
    check("openai-torchscript-opset20.onnx", "openai.expected.npy");
}

#[test]
fn dynamo_export() {
    check("openai-dynamo.onnx", "openai.expected.npy");
}

#[test]
fn optimum_export_at_opset_14_with_decomposed_layer_norm() {
    check("optimum-opset14.onnx", "optimum.expected.npy");
}

#[test]
fn optimum_export_at_opset_17() {
    check("optimum-opset17.onnx", "optimum.expected.npy");
}

#[test]
fn optimum_export_at_opset_18() {
    check("optimum-opset18.onnx", "optimum.expected.npy");
}

/// Float16 weights are rounded to 11 significant bits (relative error up to 2^-12 each), and
/// tract computes in float32 after converting them: through two layers and a final LayerNorm
/// that leaves errors of some 1e-4 on outputs of order 1 (measured 5.1e-4); the bound is 10x.
fn check_f16(file: &str) {
    check_within(file, "optimum.expected.npy", 5e-3, 0.99999);
}

#[test]
fn float16_export_with_float16_inputs() {
    check_f16("optimum-fp16.onnx");
}

#[test]
fn float16_export_with_float32_inputs() {
    check_f16("optimum-fp16-io32.onnx");
}

/// A model directory whose `config.json` is not JSON is refused, naming the file and the
/// parser's complaint, not loaded on guessed dimensions.
#[test]
fn a_malformed_config_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("optimum-opset17.onnx"),
        tmp.path().join("encoder_model.onnx"),
    )
    .unwrap();
    std::fs::write(tmp.path().join("config.json"), b"{\"d_model\": 64,").unwrap();
    let Err(err) = Encoder::load(tmp.path(), &EncoderOptions::default()) else {
        panic!("a malformed config.json is refused");
    };
    let err = err.to_string();
    assert!(
        err.contains("config.json") && err.contains("not valid JSON"),
        "{err}"
    );
    // The same directory with a well-formed config loads.
    std::fs::write(
        tmp.path().join("config.json"),
        b"{\"model_type\": \"whisper\", \"d_model\": 64}",
    )
    .unwrap();
    Encoder::load(tmp.path(), &EncoderOptions::default()).unwrap();
}
