//! The CPU encoder against OpenAI's PyTorch encoder (tests/data/reference/tiny.en, made with
//! openai-whisper 20250625 on torch 2.15 from the same weights).

mod common;

use amanuensis::model::{Encoder, EncoderOptions};
use common::*;

/// optimum's export of tiny.en in tract, on each of OpenAI's three reference mels.
/// onnxruntime on the same file reaches about 4e-5 against PyTorch; the bar is 2e-3 and a
/// cosine of 0.99999.
#[test]
fn optimum_tiny_en_matches_pytorch() {
    let encoder = Encoder::load(&catalog_model("tiny.en"), &EncoderOptions::default()).unwrap();
    let dims = encoder.dims();
    assert_eq!(
        (dims.n_mels, dims.d_model, dims.n_layers, dims.n_heads),
        (80, 384, 4, 6)
    );
    for name in ["jfk", "sine1k_5s", "noise_30s"] {
        let (_, mel) = read_npy(&reference(&format!("{name}.mel80_openai.npy")));
        let (shape, expected) =
            read_npy(&reference(&format!("tiny.en/{name}.enc_torch_openai.npy")));
        assert_eq!(shape, [1, 1500, 384]);
        let ours = encoder.encode(&mel).unwrap();
        assert_close(name, &ours, &expected, 2e-3, 0.99999);
    }
}

/// From audio/jfk.flac to encoder output through `amanuensis encode`: our decode, resampler
/// and log-mel, then the encoder, against PyTorch's encoder on OpenAI's own log-mel.
#[test]
fn encode_command_from_flac_matches_pytorch() {
    let tmp = tempfile::tempdir().unwrap();
    let out_path = tmp.path().join("jfk.enc.npy");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_amanuensis"))
        .arg("encode")
        .arg(reference("audio/jfk.flac"))
        .arg("--model")
        .arg(catalog_model("tiny.en"))
        .args(["--threads", "2", "-o"])
        .arg(&out_path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    for needle in ["model:", "backend: cpu", "11.00 s", "realtime"] {
        assert!(
            stderr.contains(needle),
            "the report lacks {needle:?}:\n{stderr}"
        );
    }
    let (shape, ours) = read_npy(&out_path);
    assert_eq!(shape, [1, 1500, 384]);
    let (_, expected) = read_npy(&reference("tiny.en/jfk.enc_torch_openai.npy"));
    let cos = cosine(&ours, &expected);
    eprintln!(
        "encode jfk.flac vs PyTorch: cosine {cos:.7}, max abs {:e}",
        max_abs_diff(&ours, &expected)
    );
    assert!(cos >= 0.9999, "cosine {cos}");
}

#[test]
fn bad_models_are_refused_with_a_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let load = |p: &std::path::Path| {
        Encoder::load(p, &EncoderOptions::default())
            .unwrap_err()
            .to_string()
    };

    std::fs::write(dir.join("notes.onnx"), b"hello, these are not protobufs").unwrap();
    let err = load(&dir.join("notes.onnx"));
    assert!(
        err.contains("notes.onnx") && err.contains("not an ONNX model"),
        "{err}"
    );

    let bytes = std::fs::read(catalog_model("tiny.en").join("encoder_model.onnx")).unwrap();
    std::fs::write(dir.join("cut.onnx"), &bytes[..bytes.len() / 3]).unwrap();
    let err = load(&dir.join("cut.onnx"));
    assert!(
        err.contains("cut.onnx") && err.contains("not an ONNX model"),
        "{err}"
    );

    std::fs::create_dir(dir.join("empty_model")).unwrap();
    let err = load(&dir.join("empty_model"));
    assert!(err.contains("no encoder found"), "{err}");

    let err = load(&dir.join("absent.onnx"));
    assert!(err.contains("no such file"), "{err}");

    let encoder = Encoder::load(
        &catalog_model("tiny.en"),
        &EncoderOptions {
            threads: 1,
            ..EncoderOptions::default()
        },
    )
    .unwrap();
    let err = encoder
        .encode(&vec![0.0; 128 * 3000])
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "this encoder expects 80 mel bins (tiny family), the frontend produced 128"
    );
}

#[test]
fn unknown_catalog_names_list_the_known_ones() {
    // A readable input, so that the model is what fails (the audio is opened first).
    let tmp = tempfile::tempdir().unwrap();
    let wav = tmp.path().join("x.wav");
    write_wav_f32(&wav, 16_000, &[0.0; 1600]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_amanuensis"))
        .arg("encode")
        .arg(&wav)
        .args(["--model", "huge-v9", "-o"])
        .arg(tmp.path().join("never.npy"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("unknown model \"huge-v9\"")
            && stderr.contains("tiny.en")
            && stderr.contains("large-v3"),
        "{stderr}"
    );
}

/// A decoder graph (inputs `input_ids` and `encoder_hidden_states`) is named as such.
#[test]
fn a_decoder_is_not_taken_for_an_encoder() {
    use amanuensis::model::export::{Dim, GraphBuilder};
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("decoder_model.onnx");
    let mut g = GraphBuilder::default();
    let ids = g.input("input_ids", &[Dim::Fixed(1), Dim::Fixed(4)]);
    let states = g.input("encoder_hidden_states", &[Dim::Fixed(1), Dim::Fixed(4)]);
    let sum = g.node("", "Add", &[&ids, &states], &[]);
    g.output(&sum, "logits", &[Dim::Fixed(1), Dim::Fixed(4)]);
    g.write(&path, "test", &[]).unwrap();
    let err = Encoder::load(&path, &EncoderOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("decoder_model.onnx")
            && err.contains("decoder")
            && err.contains("encoder_model.onnx"),
        "{err}"
    );
}
