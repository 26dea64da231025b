//! `Softmax` over the last axis -> `DeviceSoftmax`.

use amanuensis_ops::DeviceSoftmax;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::nn::{Softmax, SoftmaxKind};

use super::{Pass, RewriteContext, Stage};

inventory::submit! {
    Pass {
        name: "device_softmax",
        stage: Stage::Device,
        order: 30,
        add: |r| r.with_rule_for::<Softmax>("device_softmax", rule),
    }
}

fn rule(
    ctx: &RewriteContext,
    model: &TypedModel,
    node: &TypedNode,
    _name: &str,
    op: &Softmax,
) -> TractResult<Option<TypedModelPatch>> {
    let Some(device) = &ctx.device else {
        return Ok(None);
    };
    let fact = model.node_input_facts(node.id)?[0];
    if op.kind != SoftmaxKind::Softmax {
        ctx.leave(node, "a LogSoftmax; the NPU kernel computes Softmax");
        return Ok(None);
    }
    if fact.datum_type != f32::datum_type() {
        ctx.leave(
            node,
            format!(
                "a {:?} softmax; the kernel takes float32 in",
                fact.datum_type
            ),
        );
        return Ok(None);
    }
    if fact.rank() == 0 || op.axes.as_slice() != [fact.rank() - 1] {
        ctx.leave(
            node,
            format!(
                "softmax over axes {:?}; the kernel reduces the last axis",
                op.axes
            ),
        );
        return Ok(None);
    }
    Ok(Some(TypedModelPatch::replace_single_op(
        model,
        node,
        &node.inputs,
        DeviceSoftmax {
            device: device.clone(),
        },
    )?))
}
