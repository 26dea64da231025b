//! `CpuLayerNorm` against tract's own LayerNorm (the decomposed form decluttering makes of
//! ONNX `LayerNormalization` and of the opset-14 chain), on random and real activations.

mod common;

use amanuensis::rewrite::{RewriteContext, Stage, rewrite};
use common::*;
use tract_onnx::prelude::*;

fn run(model: TypedModel, x: &[f32], rows: usize, d: usize) -> Vec<f32> {
    let plan = model.into_optimized().unwrap().into_runnable().unwrap();
    let input = Tensor::from_shape(&[rows, d], x).unwrap();
    let out = plan.run(tvec!(input.into_tvalue())).unwrap();
    out[0]
        .to_plain_array_view::<f32>()
        .unwrap()
        .iter()
        .copied()
        .collect()
}

/// Both ONNX forms, widths of tiny, base and large, rows of random values with an offset and
/// a spread (mean 3, scale 4), the same with two outlier channels 150 and 300 times larger (as
/// Whisper's residual stream has), and tiny.en's real encoder features (PyTorch's, from
/// tests/data/reference): the rewrite finds the pattern and the fused op stays within 1e-5 of
/// tract's decomposed form, relative to the value where it is above 1 (float32 accumulation
/// there, float64 here: some 100 float32 ulps of the value; the outlier channels normalise to
/// values of some tens, where tract's float32 rounding, which differs between CPUs, reaches
/// 3.4e-5 absolute, 1e-6 relative).
#[test]
fn fused_layer_norm_matches_tracts() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, real) = read_npy(&reference("tiny.en/jfk.enc_torch_openai.npy"));
    for spelled_out in [false, true] {
        for (d, source) in [
            (384, "real"),
            (384, "random"),
            (512, "random"),
            (512, "outliers"),
            (1280, "random"),
        ] {
            let rows = 1500;
            let mut x: Vec<f32> = match source {
                "real" => real.clone(),
                _ => Rng(d as u64)
                    .vec(rows * d, 4.0)
                    .iter()
                    .map(|v| v + 3.0)
                    .collect(),
            };
            if source == "outliers" {
                // Whisper's residual stream has a few channels hundreds of times larger.
                for row in x.chunks_mut(d) {
                    row[7] *= 300.0;
                    row[d - 3] *= -150.0;
                }
            }
            let path = tmp
                .path()
                .join(format!("ln-{d}-{source}-{spelled_out}.onnx"));
            write_layer_norm_onnx(&path, rows, d, spelled_out);
            let model = decluttered(&path);
            let expected = run(model.clone(), &x, rows, d);
            let mut fused = model;
            let ctx = RewriteContext::new(None);
            rewrite(&mut fused, &ctx, &[Stage::Cpu]).unwrap();
            let names: Vec<String> = fused
                .nodes()
                .iter()
                .map(|n| n.op.name().to_string())
                .collect();
            assert!(
                names.contains(&"CpuLayerNorm".to_string())
                    && !names.iter().any(|n| n == "RmsNorm"),
                "d {d}, spelled out {spelled_out}: not fused: {names:?}, declined: {:?}",
                ctx.left()
            );
            let ours = run(fused, &x, rows, d);
            let label = format!("d {d} {source}, spelled out {spelled_out}");
            let relative = ours
                .iter()
                .zip(&expected)
                .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
                .fold(0.0f32, f32::max);
            eprintln!("{label}: largest difference {relative:e} of max(1, |value|)");
            assert!(relative <= 1e-5, "{label}: {relative:e}");
            assert!(cosine(&ours, &expected) >= 0.999_999_9, "{label}");
        }
    }
}
