//! Decoders as optimum exports them load in tract and compute what PyTorch computes.
//!
//! The fixtures in tests/data/exporters/decoders are one small random Whisper decoder
//! (vocabulary 1000, d_model 64, 2 heads, 2 layers) exported by optimum with a KV cache: split
//! (`decoder_model.onnx` + `decoder_with_past_model.onnx`) at opsets 14 and 18, and merged
//! (`decoder_model_merged.onnx`, an `If` on `use_cache_branch`). `decoder.expected.npy` holds
//! transformers' own logits for a 5-token prompt (one forward) and 3 more tokens (one at a
//! time, with the cache), over the encoder states `optimum.expected.npy`.
//! tests/data/exporters/make.py made them all.

mod common;

use std::path::{Path, PathBuf};

use amanuensis::model::{DecoderFiles, DecoderHints, DecoderModel};
use amanuensis::transcribe::Session;
use common::*;

/// The token ids of make.py's DECODER_PROMPT and DECODER_STEPS.
const PROMPT: [u32; 5] = [998, 3, 17, 256, 999];
const STEPS: [u32; 3] = [42, 7, 512];
const VOCAB: usize = 1000;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/exporters")
        .join(name)
}

fn hints() -> DecoderHints {
    DecoderHints {
        d_model: 64,
        n_audio_ctx: 1500,
        n_heads: None,
    }
}

fn load(dir: &Path) -> DecoderModel {
    let files = DecoderFiles::locate(dir).unwrap_or_else(|e| panic!("{e}"));
    DecoderModel::load(files, hints(), 1).unwrap_or_else(|e| panic!("{e}"))
}

fn features() -> Vec<f32> {
    read_npy(&fixture("optimum.expected.npy")).1
}

fn expected() -> Vec<f32> {
    let (shape, data) = read_npy(&fixture("decoders/decoder.expected.npy"));
    assert_eq!(shape, [8, VOCAB]);
    data
}

/// float32 against float32 PyTorch through two layers: logits of order 1 agree to a few 1e-7
/// (measured 9.5e-7 here, onnxruntime on the same files 7.5e-7); the bound is twice that.
const MAX_ABS: f32 = 2e-6;

/// The prompt in one forward, then one token at a time: the logits of the last prompt
/// position and of every step against PyTorch's.
fn check_prompt_then_steps(model: &DecoderModel, name: &str) {
    let expected = expected();
    let features = features();
    let mut session = model.session(&features).unwrap();
    let mut got = session.forward(&[PROMPT.to_vec()]).unwrap();
    for &t in &STEPS {
        got.extend(session.forward(&[vec![t]]).unwrap());
    }
    assert_close(
        &format!("{name}, prompt then steps"),
        &got,
        &expected[4 * VOCAB..],
        MAX_ABS,
        0.999_999,
    );
}

#[test]
fn optimum_split_exports_compute_pytorchs_logits() {
    for dir in ["optimum-split-opset14", "optimum-split-opset18"] {
        let model = load(&fixture(&format!("decoders/{dir}")));
        assert!(matches!(model.files(), DecoderFiles::Split { .. }), "{dir}");
        let shape = model.shape();
        assert_eq!(
            (shape.n_vocab, shape.n_layers, shape.n_heads),
            (VOCAB, 2, 2),
            "{dir}"
        );
        check_prompt_then_steps(&model, dir);
    }
}

#[test]
fn optimum_merged_export_is_split_at_load_and_computes_pytorchs_logits() {
    let model = load(&fixture("decoders/optimum-merged-opset18"));
    assert!(matches!(model.files(), DecoderFiles::Merged(_)));
    check_prompt_then_steps(&model, "merged");
}

/// One token at a time from the start: every position's logits, the first through the
/// graph without a cache and the others through the cache.
#[test]
fn every_position_token_by_token() {
    let model = load(&fixture("decoders/optimum-split-opset18"));
    let expected = expected();
    let mut session = model.session(&features()).unwrap();
    let mut got = Vec::new();
    for &t in PROMPT.iter().chain(&STEPS) {
        got.extend(session.forward(&[vec![t]]).unwrap());
    }
    assert_close("token by token", &got, &expected, MAX_ABS, 0.999_999);
}

/// Files under onnx/, as Hugging Face repositories keep them, and a decoder exported without
/// a cache (`decoder_model.onnx` alone, which recomputes the sequence at every step).
#[test]
fn onnx_subfolder_and_a_decoder_without_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let onnx = tmp.path().join("onnx");
    std::fs::create_dir(&onnx).unwrap();
    for name in ["decoder_model.onnx", "decoder_with_past_model.onnx"] {
        std::fs::copy(
            fixture("decoders/optimum-split-opset18").join(name),
            onnx.join(name),
        )
        .unwrap();
    }
    let model = load(tmp.path());
    assert!(matches!(model.files(), DecoderFiles::Split { .. }));
    check_prompt_then_steps(&model, "onnx/ layout");

    std::fs::remove_file(onnx.join("decoder_with_past_model.onnx")).unwrap();
    let model = load(tmp.path());
    assert!(matches!(model.files(), DecoderFiles::NoCache(_)));
    check_prompt_then_steps(&model, "without cache");
}

/// Rows made from one (beam search's start) and reordered (its survivors) decode as separate
/// sessions would.
#[test]
fn expanded_and_reordered_rows_match_single_sessions() {
    let model = load(&fixture("decoders/optimum-split-opset18"));
    let features = features();
    let single = |tokens: &[u32]| {
        let mut s = model.session(&features).unwrap();
        s.forward(&[PROMPT.to_vec()]).unwrap();
        let mut last = Vec::new();
        for &t in tokens {
            last = s.forward(&[vec![t]]).unwrap();
        }
        last
    };
    let mut s = model.session(&features).unwrap();
    s.forward(&[PROMPT.to_vec()]).unwrap();
    s.reorder(&[0, 0, 0]).unwrap();
    s.forward(&[vec![1], vec![2], vec![3]]).unwrap();
    // Row 0 continues from row 2 (prompt, 3), rows 1 and 2 from row 0 (prompt, 1).
    s.reorder(&[2, 0, 0]).unwrap();
    let got = s.forward(&[vec![10], vec![11], vec![12]]).unwrap();
    for (row, want) in [
        (0, single(&[3, 10])),
        (1, single(&[1, 11])),
        (2, single(&[1, 12])),
    ] {
        assert_close(
            &format!("row {row}"),
            &got[row * VOCAB..(row + 1) * VOCAB],
            &want,
            1e-6,
            0.999_999_9,
        );
    }
}

/// A beam of 5 holds one copy of the window's cross-attention keys and values, whatever the
/// layout: every row reads the same one (the code before this gave each row its own, 2.4 GB
/// for large-v3 at beam 5), and the self-attention cache is one row per beam.
#[test]
fn a_beam_holds_one_copy_of_the_cross_attention() {
    for dir in [
        "optimum-merged-opset18",
        "optimum-split-opset18",
        "optimum-split-opset14",
    ] {
        let model = load(&fixture(&format!("decoders/{dir}")));
        let mut session = model.session(&features()).unwrap();
        session.forward(&[PROMPT[..3].to_vec()]).unwrap();
        let one = session.held_bytes();
        session.expand(5).unwrap();
        session
            .forward(&[vec![4], vec![5], vec![6], vec![7], vec![8]])
            .unwrap();
        let five = session.held_bytes();
        // 2 layers, keys and values, 2 heads of 32, 1500 positions, float32.
        let copy = 2 * 2 * 2 * 1500 * 32 * 4;
        assert_eq!(one.cross_attention, copy, "{dir}");
        assert_eq!(five.cross_attention, copy, "{dir}");
        assert_eq!(five.features, one.features, "{dir}");
        // 5 rows of 4 positions against 1 row of 3.
        assert_eq!(five.self_attention * 3, one.self_attention * 20, "{dir}");
    }
}

/// A batch of two windows (each row its own features and cross-attention) decodes each as a
/// session of its own would, in every layout, also once a row has left the batch.
#[test]
fn a_batch_of_windows_decodes_each_as_alone() {
    let tmp = tempfile::tempdir().unwrap();
    for name in ["decoder_model.onnx", "decoder_with_past_model.onnx"] {
        std::fs::copy(
            fixture("decoders/optimum-split-opset18").join(name),
            tmp.path().join(name),
        )
        .unwrap();
    }
    std::fs::remove_file(tmp.path().join("decoder_with_past_model.onnx")).unwrap();
    let first = features();
    let second: Vec<f32> = first.iter().rev().map(|v| v * 0.5).collect();
    let single = |model: &DecoderModel, features: &[f32], tokens: &[u32]| {
        let mut s = model.session(features).unwrap();
        let mut last = s.forward(&[PROMPT.to_vec()]).unwrap();
        for &t in tokens {
            last = s.forward(&[vec![t]]).unwrap();
        }
        last
    };
    for dir in [
        fixture("decoders/optimum-split-opset14"),
        fixture("decoders/optimum-split-opset18"),
        fixture("decoders/optimum-merged-opset18"),
        tmp.path().to_path_buf(),
    ] {
        let model = load(&dir);
        let label = format!("{:?}", model.files());
        let mut batch = model.batch_session(&[&first, &second]).unwrap();
        let got = batch.forward(&[PROMPT.to_vec(), PROMPT.to_vec()]).unwrap();
        assert_close(
            &label,
            &got[..VOCAB],
            &single(&model, &first, &[]),
            1e-6,
            0.999_999_9,
        );
        assert_close(
            &label,
            &got[VOCAB..],
            &single(&model, &second, &[]),
            1e-6,
            0.999_999_9,
        );
        // The windows differ, so a row reading the other's features would show.
        assert!(max_abs_diff(&got[..VOCAB], &got[VOCAB..]) > 1e-2, "{label}");
        let got = batch.forward(&[vec![42], vec![7]]).unwrap();
        assert_close(
            &label,
            &got[..VOCAB],
            &single(&model, &first, &[42]),
            1e-6,
            0.999_999_9,
        );
        assert_close(
            &label,
            &got[VOCAB..],
            &single(&model, &second, &[7]),
            1e-6,
            0.999_999_9,
        );
        // The first window leaves; the second goes on with its own features.
        batch.reorder(&[1]).unwrap();
        let got = batch.forward(&[vec![512]]).unwrap();
        assert_close(
            &label,
            &got,
            &single(&model, &second, &[7, 512]),
            1e-6,
            0.999_999_9,
        );
    }
}
