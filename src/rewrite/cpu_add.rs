//! The sum of two float32 tensors of one shape (a residual connection, or the positional
//! embedding added to the stem's output) -> `CpuAdd`, which spreads it over the pool (tract's
//! addition runs on one thread). Last of the device passes, so that no rule that anchors on
//! an addition (a bias, a mask) finds a `CpuAdd` in its place; decoders keep tract's.

use amanuensis_ops::CpuAdd;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::math::Add;

use super::{Pass, RewriteContext, Stage, concrete_shape};

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
    let facts = model.node_input_facts(node.id)?;
    if facts.iter().any(|f| f.datum_type != f32::datum_type()) {
        return Ok(None);
    }
    let (Some(a), Some(b), Some(out)) = (
        concrete_shape(model, node.inputs[0]),
        concrete_shape(model, node.inputs[1]),
        concrete_shape(model, node.id.into()),
    ) else {
        return Ok(None);
    };
    let core = |s: &[usize]| {
        s.iter()
            .skip_while(|&&d| d == 1)
            .copied()
            .collect::<Vec<_>>()
    };
    // Same values on both sides (no broadcasting), and the output shaped as the first input.
    if core(&a) != core(&b) || a != out {
        return Ok(None);
    }
    Ok(Some(TypedModelPatch::replace_single_op(
        model,
        node,
        &node.inputs,
        CpuAdd,
    )?))
}
