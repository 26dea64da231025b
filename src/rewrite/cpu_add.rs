//! The sum of two float32 tensors of one shape (a residual connection, or the positional
//! embedding added to the stem's output) -> `CpuAdd`, which spreads it over the pool (tract's
//! addition runs on one thread). Last of the device passes, so that no rule that anchors on
//! an addition (a bias, a mask) finds a `CpuAdd` in its place; decoders keep tract's.

use amanuensis_ops::CpuAdd;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::math::Add;

use super::{Pass, RewriteContext, Stage};

inventory::submit! {
    Pass {
        name: "cpu_add",
        stage: Stage::Device,
        order: 90,
        add: |r| r.with_rule_for::<TypedBinOp>("cpu_add", rule),
    }
}

fn rule(
    _ctx: &RewriteContext,
    model: &TypedModel,
    node: &TypedNode,
    _name: &str,
    op: &TypedBinOp,
) -> TractResult<Option<TypedModelPatch>> {
    if !op.0.is::<Add>() || node.inputs.len() != 2 {
        return Ok(None);
    }
    // The op's own check (float32, the same values on both sides, no broadcasting), and the
    // output shaped as the first input.
    let facts = model.node_input_facts(node.id)?;
    let Ok(ours) = CpuAdd.output_facts(&facts) else {
        return Ok(None);
    };
    if ours[0].shape != model.outlet_fact(node.id.into())?.shape {
        return Ok(None);
    }
    Ok(Some(TypedModelPatch::replace_single_op(
        model,
        node,
        &node.inputs,
        CpuAdd,
    )?))
}
