//! The CPU encoder against OpenAI's PyTorch encoder (../shared/reference/tiny.en, made with
//! openai-whisper 20250625 on torch 2.15 from the same weights).

mod common;

use amanuensis::model::{Encoder, EncoderOptions};
use common::*;

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        ab += *x as f64 * *y as f64;
        aa += *x as f64 * *x as f64;
        bb += *y as f64 * *y as f64;
    }
    ab / (aa * bb).sqrt()
}

/// optimum's export of tiny.en in tract, on each of OpenAI's three reference mels.
/// onnxruntime on the same file reaches about 4e-5 against PyTorch; the bar is 2e-3 and a
/// cosine of 0.99999.
#[test]
fn optimum_tiny_en_matches_pytorch() {
    let encoder = Encoder::load(&reference("tiny.en"), &EncoderOptions::default()).unwrap();
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
        let (max, cos) = (max_abs_diff(&ours, &expected), cosine(&ours, &expected));
        eprintln!("{name}: max abs {max:e}, cosine {cos:.8}");
        assert!(
            max <= 2e-3 && cos >= 0.99999,
            "{name}: max abs {max:e}, cosine {cos}"
        );
    }
}
