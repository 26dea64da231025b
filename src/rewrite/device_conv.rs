//! The encoder's front 1-D convolutions -> `CpuIm2Col` + `DeviceMatMul` (bias and GELU in the
//! epilogue).
//!
//! Whisper's two convolutions (kernel 3, padding 1, strides 1 and 2) are about 5% of tiny's
//! FLOPs: left on the CPU they would keep the NPU's share under 99%. Their patches are a
//! cheap copy on the CPU (3 x channels values a position); the product of the patches and
//! the `[channels * 3, d_model]` kernel is a GEMM of the same shape as a projection.
//!
//! The product writes positions as rows (`[1, length, channels]`, NWC), as a GEMM does. The
//! graph's layout is NCW: when the output goes on to a transpose to NWC (Whisper's stem
//! before the layers) that transpose is the product's output as it is; otherwise a transpose
//! to NCW follows, and a convolution whose input is such a transpose reads the NWC tensor
//! before it (Whisper's second convolution reads the first one's output so), so the stem
//! never moves its activations between layouts.

use amanuensis_ops::{CpuIm2Col, MatMulGeometry};
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec};
use tract_onnx::tract_core::ops::nn::DataFormat;

use super::device_matmul::{Output, wire_with_weights};
use super::{Pass, RewriteContext, Stage, concrete_shape, const_f32, swaps_last_two};

inventory::submit! {
    Pass {
        name: "device_conv",
        stage: Stage::Device,
        order: 20,
        add: |r| r.with_rule_for::<Conv>("device_conv", rule),
    }
}

fn rule(
    ctx: &RewriteContext,
    model: &TypedModel,
    node: &TypedNode,
    _name: &str,
    op: &Conv,
) -> TractResult<Option<TypedModelPatch>> {
    let Some(device) = &ctx.device else {
        return Ok(None);
    };
    let spec = &op.pool_spec;
    let plain = op.q_params.is_none()
        && op.group == 1
        && op.kernel_fmt == KernelFormat::OIHW
        && spec.data_format == DataFormat::NCHW
        && spec.kernel_shape.len() == 1
        && spec
            .dilations
            .as_ref()
            .is_none_or(|d| d.iter().all(|&d| d == 1));
    if !plain {
        ctx.leave(
            node,
            "a convolution that is not a plain float 1-D NCW one (grouped, dilated, quantised \
             or another layout)",
        );
        return Ok(None);
    }
    let (Some(x), Some(out)) = (
        concrete_shape(model, node.inputs[0]),
        concrete_shape(model, node.id.into()),
    ) else {
        ctx.leave(node, "a convolution over a symbolic length");
        return Ok(None);
    };
    let (Some(w), Some(bias)) = (
        const_f32(model, node.inputs[1]),
        const_f32(model, node.inputs[2]),
    ) else {
        ctx.leave(
            node,
            "a convolution whose kernel or bias is not a float32 constant",
        );
        return Ok(None);
    };
    let (&[1, c, length], &[1, o, out_len]) = (&x[..], &out[..]) else {
        ctx.leave(node, "a convolution over a batch of more than one");
        return Ok(None);
    };
    let kernel = spec.kernel_shape[0];
    let stride = spec.strides.as_ref().map_or(1, |s| s[0]);
    let pad_before = match &spec.padding {
        PaddingSpec::Valid => 0,
        PaddingSpec::Explicit(before, _) | PaddingSpec::ExplicitOnnxPool(before, _, _) => before[0],
        other => {
            ctx.leave(node, format!("a convolution with {other:?} padding"));
            return Ok(None);
        }
    };
    if w.shape() != [o, c, kernel] {
        ctx.leave(node, format!("a kernel of shape {:?}", w.shape()));
        return Ok(None);
    }
    let bias = match bias.len() {
        0 => None,
        n if n == o => Some(bias.try_as_plain_ram()?.as_slice::<f32>()?.to_vec()),
        _ if bias.len() == 1 => Some(vec![bias.cast_to_scalar::<f32>()?; o]),
        _ => {
            ctx.leave(node, format!("a bias of shape {:?}", bias.shape()));
            return Ok(None);
        }
    };
    // An NCW input that is a transpose of an NWC tensor: the patches read the NWC tensor.
    let nwc = nwc_before(model, node.inputs[0], [length, c]);
    // B = the kernel as the patches' columns are ordered: `[c * kernel, o]` from NCW,
    // `[kernel * c, o]` from NWC.
    let width = c * kernel;
    let w = w.try_as_plain_ram()?.as_slice::<f32>()?;
    let mut b = vec![0f32; width * o];
    for oi in 0..o {
        for ci in 0..c {
            for j in 0..kernel {
                let row = if nwc.is_some() {
                    j * c + ci
                } else {
                    ci * kernel + j
                };
                b[row * o + oi] = w[(oi * c + ci) * kernel + j];
            }
        }
    }
    let mapping: AxesMapping = "mk,kn->amn".parse()?;
    let geometry =
        MatMulGeometry::new(&mapping, &[out_len, width], &[width, o]).map_err(|e| anyhow!(e))?;
    let mut patch = TypedModelPatch::default();
    let tap = patch.tap_model(model, nwc.unwrap_or(node.inputs[0]))?;
    let patches = patch.wire_node(
        format!("{}.im2col", node.name),
        CpuIm2Col {
            channels: c,
            length,
            kernel,
            stride,
            pad_before,
            out_len,
            channels_last: nwc.is_some(),
        },
        &[tap],
    )?;
    wire_with_weights(
        device,
        model,
        patch,
        (&node.name, patches[0]),
        geometry,
        (&b, bias.as_deref()),
        node,
        Output::ChannelsLast,
    )
}

/// If `outlet` is a transpose of the last two axes of a `[1, length, channels]` tensor (to
/// `[1, channels, length]`), that tensor.
fn nwc_before(model: &TypedModel, outlet: OutletId, [length, c]: [usize; 2]) -> Option<OutletId> {
    let node = model.node(outlet.node);
    let input = *node.inputs.first()?;
    (swaps_last_two(node) && concrete_shape(model, input)? == [1, length, c]).then_some(input)
}
