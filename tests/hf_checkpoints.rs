//! `models convert --from-hf`: Hugging Face Whisper checkpoints (safetensors, one file or
//! shards, float32, float16 or bfloat16) converted without Python, against PyTorch's outputs on the same
//! weights (tests/data/hf, made by make.py there with transformers).

mod common;

use std::path::Path;
use std::process::Command;

use amanuensis::backend::Backend;
use amanuensis::model::hf::convert_hf;
use amanuensis::model::{DecoderFiles, DecoderHints, DecoderModel, Encoder, EncoderOptions};
use common::*;

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/hf")
        .join(name)
}

/// Converts the fixture `name`, runs the encoder on jfk's log-mel and the decoder on six
/// tokens, and compares both with PyTorch's. float32 through two layers each (float16
/// weights widened exactly on both sides): measured max abs 7.2e-7 (encoder, outputs of order
/// 1) and 1.8e-7 (logits); the bounds are 2e-6 and 4e-7.
fn matches_pytorch(name: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("onnx");
    let converted = convert_hf(&fixture(name), &out).unwrap();
    assert_eq!(
        (
            converted.dims.d_model,
            converted.dims.n_heads,
            converted.dims.n_layers
        ),
        (64, 2, 2)
    );
    let (_, mel) = read_npy(&reference("jfk.mel80_openai.npy"));
    let encoder = Encoder::load(
        &out,
        &EncoderOptions {
            backend: Backend::Cpu,
            threads: 1,
            ..EncoderOptions::default()
        },
    )
    .unwrap();
    let features = encoder.encode(&mel).unwrap();
    let (shape, expected) = read_npy(&fixture(name).join("expected_encoder.npy"));
    let positions = shape[0];
    assert_close(
        &format!("{name}: encoder vs PyTorch"),
        &features[..positions * 64],
        &expected,
        2e-6,
        0.999_999_9,
    );
    let files = DecoderFiles::locate(&out).unwrap();
    let hints = DecoderHints {
        d_model: 64,
        n_audio_ctx: 1500,
        n_heads: None,
    };
    let decoder = DecoderModel::load(files, hints, 1).unwrap();
    let mut session = decoder.session(&features).unwrap();
    let mut logits = session.forward(&[vec![5, 17, 300]]).unwrap();
    for t in [42u32, 599, 0] {
        logits.extend(session.forward(&[vec![t]]).unwrap());
    }
    let (_, expected) = read_npy(&fixture(name).join("expected_logits.npy"));
    assert_close(
        &format!("{name}: decoder logits vs PyTorch"),
        &logits,
        &expected,
        4e-7,
        0.999_999_9,
    );
}

#[test]
fn a_single_file_float32_checkpoint_matches_pytorch() {
    matches_pytorch("tiny");
}

#[test]
fn a_sharded_float16_checkpoint_matches_pytorch() {
    matches_pytorch("sharded");
}

#[test]
fn a_bfloat16_checkpoint_matches_pytorch() {
    matches_pytorch("bf16");
}

/// The command line: `models convert --from-hf`; a directory without weights is refused in
/// one line naming what is missing, and nothing is left behind.
#[test]
fn the_command_converts_and_refuses_what_is_not_a_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |from: &Path, out: &Path| {
        Command::new(env!("CARGO_BIN_EXE_amanuensis"))
            .args(["models", "convert", "--from-hf"])
            .arg(from)
            .arg("-o")
            .arg(out)
            .output()
            .unwrap()
    };
    let out = tmp.path().join("converted");
    let result = run(&fixture("tiny"), &out);
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    assert!(out.join("encoder_model.onnx").is_file());

    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    std::fs::copy(
        fixture("tiny").join("config.json"),
        empty.join("config.json"),
    )
    .unwrap();
    let refused = tmp.path().join("refused");
    let result = run(&empty, &refused);
    let err = String::from_utf8_lossy(&result.stderr);
    assert!(!result.status.success());
    assert!(
        err.contains("model.safetensors") && err.lines().count() == 1,
        "{err}"
    );
    assert!(!refused.exists());
}
