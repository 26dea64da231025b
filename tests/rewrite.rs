//! The rewrite passes on small graphs: each offloaded op against tract's own op within bounds
//! derived from bf16, and the graphs the rewrite must not offload (other types, symbolic
//! shapes, batched weights, other softmax axes) left on the CPU with a reason and still
//! running.

mod common;

use amanuensis::backend::{Backend, Kernels, resolve};
use amanuensis::rewrite::{RewriteContext, Stage, passes, rewrite};
use common::Rng;
use proptest::prelude::*;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::ElementWiseMiniOp;
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_core::ops::nn::{GeluApproximate, GeluExact, Softmax, SoftmaxKind};

fn emu_context() -> RewriteContext {
    RewriteContext::new(
        resolve(Backend::Emu, false, Kernels::default())
            .unwrap()
            .device,
    )
}

/// Rewrites `model` for the emulator; returns the op names after the rewrite and the reasons
/// given for what stayed.
fn offload(model: &mut TypedModel) -> (Vec<String>, Vec<String>) {
    let ctx = emu_context();
    rewrite(model, &ctx, &[Stage::Cpu, Stage::Device]).unwrap();
    amanuensis_ops::upload_weights(model).unwrap();
    let ops = model
        .nodes()
        .iter()
        .map(|n| n.op.name().to_string())
        .collect();
    (ops, ctx.left().into_values().collect())
}

fn run(model: TypedModel, inputs: Vec<Tensor>) -> Vec<f32> {
    let plan = model.into_optimized().unwrap().into_runnable().unwrap();
    let out = plan
        .run(inputs.into_iter().map(|t| t.into_tvalue()).collect())
        .unwrap();
    out[0]
        .cast_to::<f32>()
        .unwrap()
        .to_plain_array_view::<f32>()
        .unwrap()
        .iter()
        .copied()
        .collect()
}

fn tensor(shape: &[usize], values: &[f32]) -> Tensor {
    Tensor::from_shape(shape, values).unwrap()
}

/// A one-EinSum model: `a` a source, `b` a source or (with `b_const`) a constant.
fn einsum_model(expr: &str, sa: &[usize], sb: &[usize], b: Option<&[f32]>) -> TypedModel {
    let mut m = TypedModel::default();
    let a = m.add_source("a", f32::fact(sa)).unwrap();
    let b = match b {
        Some(v) => m.add_const("b", tensor(sb, v)).unwrap(),
        None => m.add_source("b", f32::fact(sb)).unwrap(),
    };
    let op = EinSum::new(expr.parse().unwrap(), f32::datum_type());
    let out = m.wire_node("product", op, &[a, b]).unwrap();
    m.select_output_outlets(&out).unwrap();
    m
}

/// The einsum forms tract shows for a Whisper encoder after decluttering, with the axis sizes
/// of (m, k, n, heads) and whether B is a constant weight.
fn forms(
    m: usize,
    k: usize,
    n: usize,
    h: usize,
) -> Vec<(&'static str, Vec<usize>, Vec<usize>, bool)> {
    vec![
        ("amk,kn->mn", vec![1, m, k], vec![k, n], true),
        ("mk,kn->amn", vec![m, k], vec![k, n], true),
        ("mbk,bkn->amn", vec![m, h, k], vec![h, k, n], true),
        ("mbk,nbk->bmn", vec![m, h, k], vec![n, h, k], false),
        ("bmk,kbn->mbn", vec![h, m, k], vec![k, h, n], false),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]
    /// Every Whisper einsum form, at shapes that are no multiple of any tile, becomes one
    /// EmuMatMul whose output stays within the bf16 bound of tract's float32 product: bf16
    /// has 8 significant bits, so rounding an operand to nearest moves it by at most 2^-8 of
    /// its magnitude and a product of two rounded operands by 2^-7 + 2^-16 of its own; each
    /// side's float32 accumulation adds at most k 2^-24 of the sum of magnitudes. So
    /// |ours - tract| <= sum|a||b| (2^-7 + 2^-16 + 2 k 2^-24), the sum of magnitudes being
    /// tract's product of |a| and |b|.
    #[test]
    fn products_match_tract_within_bf16(
        m in 1usize..40, k in 1usize..150, n in 1usize..40, h in 1usize..4, seed in any::<u64>(),
    ) {
        for (expr, sa, sb, b_const) in forms(m, k, n, h) {
            let mut rng = Rng(seed | 1);
            let a: Vec<f32> = rng.vec(sa.iter().product(), 2.0);
            let b: Vec<f32> = rng.vec(sb.iter().product(), 2.0);
            let abs = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<Vec<_>>();
            let inputs = |a: &[f32], b: &[f32]| {
                let mut t = vec![tensor(&sa, a)];
                if !b_const {
                    t.push(tensor(&sb, b));
                }
                t
            };
            let model = |b: &[f32]| einsum_model(expr, &sa, &sb, b_const.then_some(b));
            let expected = run(model(&b), inputs(&a, &b));
            let magnitude = run(model(&abs(&b)), inputs(&abs(&a), &abs(&b)));
            let mut rewritten = model(&b);
            let (ops, left) = offload(&mut rewritten);
            prop_assert!(ops.contains(&"EmuMatMul".to_string()), "{expr}: {ops:?} {left:?}");
            prop_assert!(!ops.contains(&"EinSum".to_string()), "{expr}: {ops:?}");
            let ours = run(rewritten, inputs(&a, &b));
            let kk = if expr.starts_with("mbk,bkn") { k * h } else { k } as f32;
            let factor = 2f32.powi(-7) + 2f32.powi(-16) + 2.0 * kk * 2f32.powi(-24);
            for i in 0..ours.len() {
                let bound = magnitude[i] * factor + 1e-30;
                prop_assert!(
                    (ours[i] - expected[i]).abs() <= bound,
                    "{expr} [{m}x{k}x{n}, {h} heads] element {i}: {} vs {} (bound {bound})",
                    ours[i], expected[i]
                );
            }
        }
    }
}

/// Softmax over the last axis becomes EmuSoftmax. Against tract's float32 softmax, for
/// inputs in [-4, 4]: rounding x to bf16 (8 significant bits) moves x - max(x) by at most
/// 2^-8 (4 + 4) = 2^-5, so each exp by a factor within e^(±2^-5) and the quotient by twice
/// that; the kernel adds 3 * 2^-8 (NUMERICS.md):
/// |ours - tract| <= tract * (2 (e^(2^-5) - 1) + 3 * 2^-8) + 1e-7.
#[test]
fn softmax_matches_tract_within_bf16() {
    let (rows, cols) = (37, 301);
    let x = Rng(5).vec(rows * cols, 4.0);
    let model = || {
        let mut m = TypedModel::default();
        let a = m.add_source("x", f32::fact([rows, cols])).unwrap();
        let op = Softmax::new(tvec![1], None, SoftmaxKind::Softmax);
        let out = m.wire_node("softmax", op, &[a]).unwrap();
        m.select_output_outlets(&out).unwrap();
        m
    };
    let expected = run(model(), vec![tensor(&[rows, cols], &x)]);
    let mut rewritten = model();
    let (ops, _) = offload(&mut rewritten);
    assert!(ops.contains(&"EmuSoftmax".to_string()), "{ops:?}");
    let ours = run(rewritten, vec![tensor(&[rows, cols], &x)]);
    let rel = 2.0 * (2f32.powi(-5).exp() - 1.0) + 3.0 * 2f32.powi(-8);
    for (i, (o, e)) in ours.iter().zip(&expected).enumerate() {
        assert!((o - e).abs() <= e * rel + 1e-7, "element {i}: {o} vs {e}");
    }
}

/// GELU, exact or tanh-approximated, becomes EmuGelu: the tanh form (within 4.8e-4 of erf GELU), its bf16 input rounding
/// (2^-8 |x| at a slope of at most 1.13), its output rounding (2^-8 |y|) and its
/// approximations (2.2e-4 relative, NUMERICS.md):
/// |ours - tract| <= 4.8e-4 + 1.13 * 2^-8 |x| + (2^-8 + 2.2e-4) |y|.
#[test]
fn gelu_matches_tract_within_bf16() {
    let len = 4099;
    let x = Rng(9).vec(len, 8.0);
    // tract's two GELUs: the exact (erf) one, and the tanh approximation that ONNX
    // `Gelu(approximate="tanh")` and the spelled-out tanh form declutter to.
    let ops: [(&str, Box<dyn ElementWiseMiniOp>); 2] = [
        ("GeluExact", Box::new(GeluExact {})),
        (
            "GeluApproximate",
            Box::new(GeluApproximate { fast_impl: false }),
        ),
    ];
    for (name, op) in ops {
        let model = || {
            let mut m = TypedModel::default();
            let a = m.add_source("x", f32::fact([len])).unwrap();
            let op = ElementWiseOp(tract_onnx::tract_core::dyn_clone::clone_box(&*op), None);
            let out = m.wire_node("gelu", op, &[a]).unwrap();
            m.select_output_outlets(&out).unwrap();
            m
        };
        let expected = run(model(), vec![tensor(&[len], &x)]);
        let mut rewritten = model();
        let (names, _) = offload(&mut rewritten);
        assert!(names.contains(&"EmuGelu".to_string()), "{name}: {names:?}");
        let ours = run(rewritten, vec![tensor(&[len], &x)]);
        for i in 0..len {
            let bound = 4.8e-4
                + 1.13 * 2f32.powi(-8) * x[i].abs()
                + (2f32.powi(-8) + 2.2e-4) * expected[i].abs();
            assert!(
                (ours[i] - expected[i]).abs() <= bound,
                "{name}, x = {}: {} vs {}",
                x[i],
                ours[i],
                expected[i]
            );
        }
    }
}

/// What the kernels cannot take stays on the CPU, with a reason, and the graph still runs:
/// float16 operands, a symbolic number of rows, one weight matrix per batch index, a softmax
/// over another axis than the last. A batch of two over constant weights is taken (its rows
/// are just more rows of A).
#[test]
fn what_the_kernels_cannot_take_stays_on_the_cpu() {
    // float16 operands.
    let mut m = TypedModel::default();
    let a = m.add_source("a", f16::fact([8, 16])).unwrap();
    let w = Tensor::from_shape(&[16, 4], &[f16::from_f32(0.5); 64]).unwrap();
    let w = m.add_const("w", w).unwrap();
    let op = EinSum::new("mk,kn->mn".parse().unwrap(), f16::datum_type());
    let out = m.wire_node("half", op, &[a, w]).unwrap();
    m.select_output_outlets(&out).unwrap();
    let (ops, left) = offload(&mut m);
    assert!(!ops.iter().any(|o| o.starts_with("Emu")), "{ops:?}");
    assert!(left.iter().any(|r| r.contains("F16")), "{left:?}");
    let x = Tensor::from_shape(&[8, 16], &[f16::from_f32(1.0); 128]).unwrap();
    assert_eq!(run(m, vec![x]), vec![8.0; 32]);

    // A symbolic number of rows.
    let mut m = TypedModel::default();
    let s = m.symbols.sym("S");
    let a = m
        .add_source("a", f32::fact(&[TDim::from(s), 16.into()]))
        .unwrap();
    let w = m.add_const("w", tensor(&[16, 4], &[0.5; 64])).unwrap();
    let op = EinSum::new("mk,kn->mn".parse().unwrap(), f32::datum_type());
    let out = m.wire_node("dynamic", op, &[a, w]).unwrap();
    m.select_output_outlets(&out).unwrap();
    let (ops, left) = offload(&mut m);
    assert!(!ops.iter().any(|o| o.starts_with("Emu")), "{ops:?}");
    assert!(left.iter().any(|r| r.contains("symbolic")), "{left:?}");
    assert_eq!(run(m, vec![tensor(&[3, 16], &[1.0; 48])]), vec![8.0; 12]);

    // One weight matrix per batch index.
    let mut m = einsum_model("bmk,bkn->bmn", &[2, 8, 16], &[2, 16, 4], Some(&[0.5; 128]));
    let (ops, left) = offload(&mut m);
    assert!(!ops.iter().any(|o| o.starts_with("Emu")), "{ops:?}");
    assert!(left.iter().any(|r| r.contains("batch")), "{left:?}");
    assert_eq!(
        run(m, vec![tensor(&[2, 8, 16], &[1.0; 256])]),
        vec![8.0; 64]
    );

    // A softmax over the first axis.
    let mut m = TypedModel::default();
    let a = m.add_source("x", f32::fact([4, 8])).unwrap();
    let op = Softmax::new(tvec![0], None, SoftmaxKind::Softmax);
    let out = m.wire_node("softmax", op, &[a]).unwrap();
    m.select_output_outlets(&out).unwrap();
    let (ops, left) = offload(&mut m);
    assert!(!ops.iter().any(|o| o.starts_with("Emu")), "{ops:?}");
    assert!(left.iter().any(|r| r.contains("axes")), "{left:?}");
    assert_eq!(run(m, vec![tensor(&[4, 8], &[0.0; 32])]), vec![0.25; 32]);

    // A batch of two over constant weights: offloaded.
    let mut m = einsum_model("bmk,kn->bmn", &[2, 8, 16], &[16, 4], Some(&[0.5; 64]));
    let (ops, _) = offload(&mut m);
    assert!(ops.contains(&"EmuMatMul".to_string()), "{ops:?}");
    assert_eq!(
        run(m, vec![tensor(&[2, 8, 16], &[1.0; 256])]),
        vec![8.0; 64]
    );
}

/// Every pass registers itself (a pass dropped by the linker would show here).
#[test]
fn every_pass_is_registered() {
    let names: Vec<&str> = passes().iter().map(|p| p.name).collect();
    assert_eq!(
        names,
        [
            "fuse_layer_norm",
            "device_matmul",
            "device_conv",
            "device_softmax",
            "device_gelu",
            "device_attention",
            "cpu_add",
            "cached_attention",
            "cpu_linear"
        ]
    );
}

/// A projection with its bias, scaled after by a constant (Whisper's `q_proj(x) * 0.125`).
fn scaled_projection(w: &[f32], bias: &[f32], scale: Option<f32>) -> TypedModel {
    use tract_onnx::tract_core::ops::math;
    let (m, k, n) = (5, w.len() / bias.len(), bias.len());
    let mut model = TypedModel::default();
    let a = model.add_source("a", f32::fact([m, k])).unwrap();
    let w = model.add_const("w", tensor(&[k, n], w)).unwrap();
    let op = EinSum::new("mk,kn->mn".parse().unwrap(), f32::datum_type());
    let mut out = model.wire_node("product", op, &[a, w]).unwrap();
    let bias = model.add_const("b", tensor(&[1, n], bias)).unwrap();
    out = model
        .wire_node("bias", math::add(), &[out[0], bias])
        .unwrap();
    if let Some(scale) = scale {
        let s = model.add_const("s", tensor(&[1, 1], &[scale])).unwrap();
        out = model.wire_node("scale", math::mul(), &[out[0], s]).unwrap();
    }
    model.select_output_outlets(&out).unwrap();
    model
}

/// A scale by a power of two after a product's bias goes into the weights and the bias, and
/// gives the unscaled product's values times the scale to the bit, on the emulator (bfloat16
/// operands) and on the CPU device (float32); a scale that is not a power of two stays an op.
#[test]
fn power_of_two_scales_fold_into_the_weights_to_the_bit() {
    let mut rng = Rng(7);
    let (k, n) = (70, 24);
    let (w, bias, a) = (rng.vec(k * n, 2.0), rng.vec(n, 1.0), rng.vec(5 * k, 3.0));
    for backend in [Backend::Emu, Backend::Cpu] {
        let ctx =
            || RewriteContext::new(resolve(backend, false, Kernels::default()).unwrap().device);
        let plan = |scale: Option<f32>| {
            let mut model = scaled_projection(&w, &bias, scale);
            let ctx = ctx();
            rewrite(&mut model, &ctx, &[Stage::Cpu, Stage::Device]).unwrap();
            amanuensis_ops::upload_weights(&model).unwrap();
            let ops: Vec<String> = model
                .nodes()
                .iter()
                .map(|n| n.op.name().to_string())
                .collect();
            (ops, run(model, vec![tensor(&[5, k], &a)]))
        };
        let (_, unscaled) = plan(None);
        for scale in [0.125f32, 4.0] {
            let (ops, scaled) = plan(Some(scale));
            assert!(
                !ops.iter()
                    .any(|op| op.contains("Mul") && !op.ends_with("MatMul")),
                "{backend}: the scale by {scale} is folded: {ops:?}"
            );
            for (s, u) in scaled.iter().zip(&unscaled) {
                assert_eq!(
                    s.to_bits(),
                    (u * scale).to_bits(),
                    "{backend}, scale {scale}"
                );
            }
        }
        let (ops, _) = plan(Some(0.3));
        assert!(
            ops.iter()
                .any(|op| op.contains("Mul") && !op.ends_with("MatMul")),
            "{backend}: a scale by 0.3 stays an op: {ops:?}"
        );
    }
}
