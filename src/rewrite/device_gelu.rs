//! GELU (tract's `GeluExact` and `GeluApproximate`, which decluttering makes of ONNX `Gelu`
//! nodes and of the spelled-out `x * 0.5 * (1 + erf(x / sqrt 2))` and tanh forms) ->
//! `DeviceGelu`. GELUs that follow a product were already fused into its epilogue.

use amanuensis_ops::DeviceGelu;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;

use super::{Pass, RewriteContext, Stage, is_gelu};

inventory::submit! {
    Pass {
        name: "device_gelu",
        stage: Stage::Device,
        order: 40,
        add: |r| r.with_rule_for::<ElementWiseOp>("device_gelu", rule),
    }
}

fn rule(
    ctx: &RewriteContext,
    model: &TypedModel,
    node: &TypedNode,
    _name: &str,
    _op: &ElementWiseOp,
) -> TractResult<Option<TypedModelPatch>> {
    let Some(device) = &ctx.device else {
        return Ok(None);
    };
    if !is_gelu(device, node) {
        return Ok(None);
    }
    let fact = model.node_input_facts(node.id)?[0];
    if fact.datum_type != f32::datum_type() {
        ctx.leave(
            node,
            format!("a {:?} GELU; the kernel takes float32 in", fact.datum_type),
        );
        return Ok(None);
    }
    Ok(Some(TypedModelPatch::replace_single_op(
        model,
        node,
        &node.inputs,
        DeviceGelu {
            device: device.clone(),
        },
    )?))
}
