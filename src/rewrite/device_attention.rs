//! `DeviceMatMul (Q K^T)` -> `DeviceSoftmax` -> `DeviceMatMul (P V)` -> one `DeviceAttention`.
//!
//! The three ops keep their kernels and numerics; fused, they run head by head and the
//! `[heads, 1500, 1500]` scores never become a tensor of the plan (72 MB a layer on base).

use amanuensis_kernels::device::Epilogue;
use amanuensis_ops::{DeviceAttention, DeviceMatMul, DeviceSoftmax};
use tract_onnx::tract_core::internal::*;

use super::{Pass, RewriteContext, Stage};

inventory::submit! {
    Pass {
        name: "device_attention",
        stage: Stage::Device,
        order: 50,
        add: |r| r.with_rule_for::<DeviceSoftmax>("device_attention", rule),
    }
}

fn activation_product(node: &TypedNode) -> Option<&DeviceMatMul> {
    node.op_as::<DeviceMatMul>()
        .filter(|m| m.weights.is_none() && m.epilogue == Epilogue::None)
}

fn rule(
    _ctx: &RewriteContext,
    model: &TypedModel,
    node: &TypedNode,
    _name: &str,
    softmax: &DeviceSoftmax,
) -> TractResult<Option<TypedModelPatch>> {
    let qk_node = model.node(node.inputs[0].node);
    let Some(qk) = activation_product(qk_node) else {
        return Ok(None);
    };
    if model
        .single_succ(qk_node.id)?
        .is_none_or(|s| s.id != node.id)
    {
        return Ok(None);
    }
    let Some(pv_node) = model.single_succ(node.id)? else {
        return Ok(None);
    };
    let Some(pv) = activation_product(pv_node) else {
        return Ok(None);
    };
    if pv_node.inputs[0] != OutletId::new(node.id, 0)
        || pv_node.inputs[1] == OutletId::new(node.id, 0)
        || qk.device != softmax.device
        || pv.device != softmax.device
        || !DeviceAttention::fits(&qk.geometry, &pv.geometry)
    {
        return Ok(None);
    }
    let mut patch = TypedModelPatch::default();
    let taps = patch.taps(
        model,
        &[qk_node.inputs[0], qk_node.inputs[1], pv_node.inputs[1]],
    )?;
    let wired = patch.wire_node(
        format!("{}.attention", node.name),
        DeviceAttention {
            device: softmax.device.clone(),
            qk: qk.geometry.clone(),
            pv: pv.geometry.clone(),
        },
        &taps,
    )?;
    patch.shunt_outside(model, pv_node.id.into(), wired[0])?;
    Ok(Some(patch))
}
