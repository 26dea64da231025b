//! `EinSum` matrix products -> `DeviceMatMul`.
//!
//! After decluttering, tract shows every matrix product of a Whisper encoder as an `EinSum`:
//! the projections (`amk,kn->mn`, `mk,kn->amn`), the output projection that contracts heads
//! and head width together (`mbk,bkn->amn`), and attention's `Q K^T` (`mbk,nbk->bmn`) and
//! `P V` (`bmk,kbn->mbn`). The rule classifies axes (batch, M, K, N) rather than matching
//! strings, so any axis order is taken. A constant operand becomes the op's weights, uploaded
//! to the device in one step once the plan has been checked; a following bias `Add` and GELU
//! move into the GEMM's epilogue, and a following scale by a power of two (attention's
//! `1 / sqrt(64)` on Q) into the weights and the bias.

use amanuensis_kernels::device::Epilogue;
use amanuensis_ops::{DeviceHandle, DeviceMatMul, DeviceWeights, MatMulGeometry, WeightsHandle};
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::change_axes::AxisOp;
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::ops::math::{Add, Mul};

use super::{
    Pass, RewriteContext, Stage, concrete_shape, const_f32, is_gelu, succ_bin_with_const,
    swaps_last_two,
};

inventory::submit! {
    Pass {
        name: "device_matmul",
        stage: Stage::Device,
        order: 10,
        add: |r| r.with_rule_for::<EinSum>("device_matmul", rule),
    }
}

fn swapped(mapping: &AxesMapping) -> TractResult<AxesMapping> {
    let (inputs, outputs) = mapping.to_strs();
    AxesMapping::from_strs(&[&inputs[1], &inputs[0]], &outputs)
}

fn rule(
    ctx: &RewriteContext,
    model: &TypedModel,
    node: &TypedNode,
    _name: &str,
    op: &EinSum,
) -> TractResult<Option<TypedModelPatch>> {
    let Some(device) = &ctx.device else {
        return Ok(None);
    };
    if op.q_params.is_some() {
        ctx.leave(
            node,
            "a quantised product (int8 operands); the NPU kernels take bf16",
        );
        return Ok(None);
    }
    if node.inputs.len() != 2 {
        ctx.leave(
            node,
            format!("{} operands; the GEMM takes 2", node.inputs.len()),
        );
        return Ok(None);
    }
    let facts = model.node_input_facts(node.id)?;
    if facts.iter().any(|f| f.datum_type != f32::datum_type())
        || op.operating_dt != f32::datum_type()
    {
        ctx.leave(
            node,
            format!(
                "operands of type {:?}, the GEMM takes float32",
                facts[0].datum_type
            ),
        );
        return Ok(None);
    }
    let (Some(sa), Some(sb)) = (
        concrete_shape(model, node.inputs[0]),
        concrete_shape(model, node.inputs[1]),
    ) else {
        ctx.leave(
            node,
            "a symbolic shape; the GEMM's layout is fixed when the plan is built",
        );
        return Ok(None);
    };
    let (a_const, b_const) = (facts[0].konst.is_some(), facts[1].konst.is_some());
    if a_const && b_const {
        return Ok(None);
    }
    // C = W @ X with a constant first operand is the same product with the roles swapped.
    let (mapping, a_in, b_in, sa, sb) = if a_const {
        (swapped(&op.axes)?, node.inputs[1], node.inputs[0], sb, sa)
    } else {
        (op.axes.clone(), node.inputs[0], node.inputs[1], sa, sb)
    };
    let geometry = match MatMulGeometry::new(&mapping, &sa, &sb) {
        Ok(g) => g,
        Err(why) => {
            ctx.leave(node, format!("not a GEMM: {why}"));
            return Ok(None);
        }
    };
    if geometry.m == 0 || geometry.n == 0 || geometry.k == 0 {
        ctx.leave(node, "an empty product");
        return Ok(None);
    }

    let mut patch = TypedModelPatch::default();
    let mut last = node;
    if a_const || b_const {
        if geometry.batch != 1 {
            ctx.leave(
                node,
                "constant operand with batch axes (one weight matrix per batch)",
            );
            return Ok(None);
        }
        let b = const_f32(model, b_in).context("constant operand")?;
        let b = geometry.canonical_b(b.to_plain_array_view::<f32>()?);
        // A bias along N only: `(A @ B) + bias` with bias [.., 1, n].
        let mut bias = None;
        if let [n_axis] = geometry.n_axes_in_output[..]
            && let Some((add, konst)) = succ_bin_with_const::<Add>(model, node)
        {
            let shape = konst.shape();
            let rank = geometry.out_shape.len();
            let along_n = shape.len() <= rank
                && shape.iter().rev().enumerate().all(|(i, &d)| {
                    let axis = rank - 1 - i;
                    d == 1 || (axis == n_axis && d == geometry.n)
                })
                && konst.len() == geometry.n;
            if along_n {
                bias = Some(konst.try_as_plain_ram()?.as_slice::<f32>()?.to_vec());
                last = add;
            }
        }
        let tap = patch.tap_model(model, a_in)?;
        return wire_with_weights(
            device,
            model,
            patch,
            (&node.name, tap),
            geometry,
            (&b, bias.as_deref()),
            last,
            Output::AsIs,
        );
    }
    let taps = [patch.tap_model(model, a_in)?, patch.tap_model(model, b_in)?];
    let wired = patch.wire_node(
        &node.name,
        DeviceMatMul {
            device: device.clone(),
            geometry,
            weights: None,
            epilogue: Epilogue::None,
        },
        &taps,
    )?;
    patch.shunt_outside(model, node.id.into(), wired[0])?;
    Ok(Some(patch))
}

/// Wires into `patch` an `DeviceMatMul` named `name` on its input `a`, with the weights `b`
/// (`[k, n]`, row-major) and `bias` prepared on `device`, and a GELU that follows `last` (the
/// product, or the bias `Add` fused into it) moved into its epilogue, and a scale by a power
/// of two after it folded into the weights; the output, as `output` says, replaces the last
/// fused node's.
#[allow(clippy::too_many_arguments)]
pub(super) fn wire_with_weights<'m>(
    device: &DeviceHandle,
    model: &'m TypedModel,
    mut patch: TypedModelPatch,
    (name, a): (&str, OutletId),
    geometry: MatMulGeometry,
    (b, bias): (&[f32], Option<&[f32]>),
    mut last: &'m TypedNode,
    output: Output,
) -> TractResult<Option<TypedModelPatch>> {
    let mut epilogue = Epilogue::None;
    if let Some(gelu) = model.single_succ(last.id)?.filter(|n| is_gelu(device, n)) {
        epilogue = Epilogue::Gelu;
        last = gelu;
    }
    // A product scaled by a power of two after its bias (Whisper scales Q by 1 / sqrt(64)):
    // the scale goes into the weights and the bias. Scaling by 2^e is exact in float32 and
    // in bfloat16 alike (the mantissas are untouched, values stay above 2^-126), so every
    // rounded operand, product and sum is the unscaled one times 2^e: the same values as the
    // product followed by the scale, to the bit, one pass over the output fewer.
    let scaled;
    let (b, bias) = match succ_bin_with_const::<Mul>(model, last)
        .filter(|_| epilogue == Epilogue::None)
        .and_then(|(mul, k)| Some((mul, power_of_two(&k)?)))
    {
        Some((mul, scale)) => {
            last = mul;
            scaled = (
                b.iter().map(|v| v * scale).collect::<Vec<f32>>(),
                bias.map(|bias| bias.iter().map(|v| v * scale).collect::<Vec<f32>>()),
            );
            (&scaled.0[..], scaled.1.as_deref())
        }
        None => (b, bias),
    };
    // A product without a bias gets a bias of zeros: the K projection then runs on the
    // kernel of the Q, V and output projections (one hardware context fewer a layer, which
    // keeps a layer's kernels within XDNA1's budget: `kernels/src/contexts.rs`). The bits are
    // the same: C is never -0 (it starts at +0, NUMERICS.md 2.3), so C + 0 = C.
    let zeros;
    let bias = match bias {
        Some(bias) => bias,
        None => {
            zeros = vec![0f32; geometry.n];
            &zeros
        }
    };
    // Described, not uploaded: the plan is checked against the device's kernels first, then
    // uploaded in one step (`amanuensis_ops::upload_weights`).
    let weights = DeviceWeights::new(b.to_vec(), geometry.k, geometry.n, Some(bias.to_vec()));
    let wired = patch.wire_node(
        name,
        DeviceMatMul {
            device: device.clone(),
            geometry,
            weights: Some(WeightsHandle(Arc::new(weights))),
            epilogue,
        },
        &[a],
    )?;
    let mut out = wired[0];
    if output == Output::ChannelsLast {
        // `[1, m, n]` where the graph has `[1, n, m]`: a transpose after, unless the graph
        // transposes there itself.
        match model.single_succ(last.id)?.filter(|n| swaps_last_two(n)) {
            Some(transpose) => last = transpose,
            None => {
                out = patch.wire_node(format!("{name}.ncw"), AxisOp::Move(2, 1), &[out])?[0];
            }
        }
    }
    patch.shunt_outside(model, last.id.into(), out)?;
    Ok(Some(patch))
}

/// How the product's output stands for the node it replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Output {
    /// As it is: the geometry gives the replaced node's shape.
    AsIs,
    /// `[1, m, n]` for a replaced `[1, n, m]` (a convolution's NCW output).
    ChannelsLast,
}

/// The value of a one-value float32 constant that is a power of two between 2^-64 and 2^64
/// (so that scaling Whisper's weights by it stays far from float32's limits).
fn power_of_two(k: &Tensor) -> Option<f32> {
    if k.len() != 1 {
        return None;
    }
    let v = *k.try_as_plain_ram().ok()?.as_slice::<f32>().ok()?.first()?;
    let exponent = ((v.to_bits() >> 23) & 0xff) as i32 - 127;
    (v > 0.0 && v.to_bits() & 0x7f_ffff == 0 && (-64..=64).contains(&exponent)).then_some(v)
}
