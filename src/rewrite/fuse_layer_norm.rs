//! LayerNorm, in the form decluttering leaves it -> `CpuLayerNorm`.
//!
//! tract turns ONNX `LayerNormalization` (opset 17+) and the spelled-out opset-14 chain
//! (`ReduceMean`, `Sub`, `Pow 2`, `ReduceMean`, `Add eps`, `Sqrt`, `Div`) alike into
//! `x - mean(x)` (a `Reduce<Sum>` times `1/d`, or a mean reduction) feeding an `RmsNorm`,
//! then a `Mul` by gamma and an `Add` of beta. The rule anchors on the `RmsNorm` over the
//! last axis and checks that its input is `x` centred on its own mean over that axis.

use amanuensis_ops::CpuLayerNorm;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::math::{Add, Mul, Sub};
use tract_onnx::tract_core::ops::nn::{Reduce, Reducer, RmsNorm};

use super::{Pass, RewriteContext, Stage, per_column, succ_bin_with_const};

inventory::submit! {
    Pass {
        name: "fuse_layer_norm",
        stage: Stage::Cpu,
        order: 10,
        add: |r| r.with_rule_for::<RmsNorm>("fuse_layer_norm", rule),
    }
}

/// Whether `outlet` is the mean of `x` over `axis`: `Reduce<Sum>(x) * (1/d)`.
fn is_mean_of(model: &TypedModel, outlet: OutletId, x: OutletId, axis: usize, d: usize) -> bool {
    let node = model.node(outlet.node);
    let sum_of_x = |n: &TypedNode| {
        n.op_as::<Reduce>().is_some_and(|r| {
            r.reducer == Reducer::Sum && r.axes.as_slice() == [axis] && n.inputs[0] == x
        })
    };
    let Some(bin) = node.op_as::<TypedBinOp>() else {
        return false;
    };
    if !bin.0.is::<Mul>() || node.inputs.len() != 2 {
        return false;
    }
    let (mut has_sum, mut has_scale) = (false, false);
    for input in &node.inputs {
        let n = model.node(input.node);
        if sum_of_x(n) {
            has_sum = true;
        } else if let Some(k) = model.outlet_fact(*input).ok().and_then(|f| f.konst.clone())
            && let Ok(v) = k.cast_to_scalar::<f32>()
        {
            has_scale = (v - 1.0 / d as f32).abs() <= 1e-6 / d as f32;
        }
    }
    has_sum && has_scale
}

fn rule(
    ctx: &RewriteContext,
    model: &TypedModel,
    node: &TypedNode,
    _name: &str,
    op: &RmsNorm,
) -> TractResult<Option<TypedModelPatch>> {
    let fact = model.node_input_facts(node.id)?[0];
    let rank = fact.rank();
    if fact.datum_type != f32::datum_type() || rank == 0 || op.axis != rank - 1 {
        ctx.leave(
            node,
            "an RmsNorm that is not a float32 LayerNorm over the last axis",
        );
        return Ok(None);
    }
    let Some(d) = fact.shape[rank - 1].to_usize().ok() else {
        ctx.leave(node, "a LayerNorm over a symbolic width");
        return Ok(None);
    };
    let centred = model.node(node.inputs[0].node);
    let is_sub = centred
        .op_as::<TypedBinOp>()
        .is_some_and(|b| b.0.is::<Sub>() && centred.inputs.len() == 2);
    if !is_sub || !is_mean_of(model, centred.inputs[1], centred.inputs[0], rank - 1, d) {
        ctx.leave(
            node,
            "an RmsNorm of something other than x - mean(x): not a LayerNorm",
        );
        return Ok(None);
    }
    // The centred value must feed nothing but the RmsNorm, or fusing would recompute it.
    if model
        .single_succ(centred.id)?
        .is_none_or(|s| s.id != node.id)
    {
        ctx.leave(node, "x - mean(x) is used elsewhere");
        return Ok(None);
    }
    let x = centred.inputs[0];
    let eps = op.eps.cast_to_scalar::<f32>()?;
    let mut last = node;
    let mut gamma = None;
    let mut beta = None;
    if let Some((mul, k)) = succ_bin_with_const::<Mul>(model, last)
        && let Some(g) = per_column(&k, d)
    {
        gamma = Some(g);
        last = mul;
    }
    if let Some((add, k)) = succ_bin_with_const::<Add>(model, last)
        && let Some(b) = per_column(&k, d)
    {
        beta = Some(b);
        last = add;
    }
    let out_fact = model.outlet_fact(last.id.into())?;
    if out_fact.shape != fact.shape {
        ctx.leave(
            node,
            "gamma or beta broadcasts the LayerNorm to another shape",
        );
        return Ok(None);
    }
    let mut patch = TypedModelPatch::default();
    let tap = patch.tap_model(model, x)?;
    // Named after the exporter's node: tract's suffixes (`.reduced_sum_dd.rms_norm`) cut.
    let base = match node.name.rfind('/') {
        Some(slash) => match node.name[slash..].find('.') {
            Some(dot) => &node.name[..slash + dot],
            None => &node.name,
        },
        None => node.name.split('.').next().unwrap_or(&node.name),
    };
    let wired = patch.wire_node(
        format!("{base}.layer_norm"),
        CpuLayerNorm::new(eps, gamma.as_deref(), beta.as_deref()),
        &[tap],
    )?;
    patch.shunt_outside(model, last.id.into(), wired[0])?;
    Ok(Some(patch))
}
