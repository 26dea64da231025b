//! `EinSum (x @ W)` with a constant `W` -> [`Add` bias] -> [GELU] -> one `CpuLinear`, in
//! decoders.
//!
//! A decoder step multiplies one token by every weight matrix: reading the weights is the
//! whole cost, and tract's product reads them at half the speed the memory allows on this
//! project's machines. `CpuLinear` packs them once and reads them with every core. Only the
//! forms of linear layers are taken: `x`'s last axes contracted with `W`'s leading (or
//! trailing) axes, its other axes kept in order, `W`'s one remaining axis last.

use std::sync::Arc;

use amanuensis_ops::{CpuLinear, LinearWeights};
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::TypedOp;
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_core::ops::math::Add;
use tract_onnx::tract_core::ops::nn::GeluExact;

use super::{Pass, RewriteContext, Stage, const_f32, per_column, succ_bin_with_const};

inventory::submit! {
    Pass {
        name: "cpu_linear",
        stage: Stage::Decoder,
        order: 20,
        add: |r| r.with_rule_for::<EinSum>("cpu_linear", rule),
    }
}

/// How `x` and `W`'s axes line up: `x`'s kept axes, `W`'s `[k.., n]` or `[n, k..]`.
struct Linear {
    k_axes: usize,
    /// Whether W's output axis comes first (`[n, k..]`).
    n_first: bool,
}

fn linear(op: &EinSum, x_rank: usize, w_rank: usize) -> Option<Linear> {
    if op.q_params.is_some() || op.operating_dt != f32::datum_type() {
        return None;
    }
    let (mut k, mut n) = (Vec::new(), None);
    for axis in op.axes.iter_all_axes() {
        let one = |v: &TVec<TVec<usize>>, i: usize| -> Option<Option<usize>> {
            match v.get(i).map(|p| p.len()) {
                Some(0) => Some(None),
                Some(1) => Some(Some(v[i][0])),
                _ => None,
            }
        };
        match (
            one(&axis.inputs, 0)?,
            one(&axis.inputs, 1)?,
            one(&axis.outputs, 0)?,
        ) {
            (Some(a), Some(b), None) => k.push((a, b)),
            (None, Some(b), Some(c)) if n.is_none() => n = Some((b, c)),
            // x's other axes, and size-1 axes of x or of the output alone; whether they line
            // up is checked on the output's shape.
            (Some(_), None, _) | (None, None, Some(_)) => {}
            _ => return None,
        }
    }
    let (nb, _) = n?;
    k.sort();
    let p = x_rank.checked_sub(k.len())?;
    if k.is_empty() || w_rank != k.len() + 1 {
        return None;
    }
    let n_first = nb == 0;
    let offset = if n_first { 1 } else { 0 };
    if !n_first && nb != k.len() {
        return None;
    }
    if k.iter()
        .enumerate()
        .any(|(i, &(a, b))| a != p + i || b != offset + i)
    {
        return None;
    }
    Some(Linear {
        k_axes: k.len(),
        n_first,
    })
}

fn rule(
    ctx: &RewriteContext,
    model: &TypedModel,
    node: &TypedNode,
    _name: &str,
    op: &EinSum,
) -> TractResult<Option<TypedModelPatch>> {
    if node.inputs.len() != 2 {
        return Ok(None);
    }

    let Some(w) = const_f32(model, node.inputs[1]) else {
        return Ok(None);
    };
    let x_fact = model.outlet_fact(node.inputs[0])?;
    if x_fact.datum_type != f32::datum_type() {
        return Ok(None);
    }
    let Some(layout) = linear(op, x_fact.rank(), w.rank()) else {
        return Ok(None);
    };
    let shape = w.shape();
    let (k, n) = if layout.n_first {
        (shape[1..].iter().product::<usize>(), shape[0])
    } else {
        (
            shape[..shape.len() - 1].iter().product::<usize>(),
            shape[shape.len() - 1],
        )
    };
    let values = w.try_as_plain_ram()?;
    let values = values.as_slice::<f32>()?;
    let mut last = node;
    let mut bias = None;
    if let Some((add, b)) = succ_bin_with_const::<Add>(model, node)
        && let Some(b) = per_column(&b, n)
        && model.outlet_fact(add.id.into())?.shape == model.outlet_fact(node.id.into())?.shape
    {
        bias = Some(b);
        last = add;
    }
    let mut gelu = false;
    if let Some(next) = model.single_succ(last.id)?
        && next
            .op_as::<ElementWiseOp>()
            .is_some_and(|e| e.0.is::<GeluExact>())
    {
        gelu = true;
        last = next;
    }
    let linear = CpuLinear {
        weights: Arc::new(LinearWeights::with_precision(
            values,
            k,
            n,
            layout.n_first,
            bias,
            ctx.weights,
        )),
        k_axes: layout.k_axes,
        gelu,
    };
    // x's kept axes, in order, must be the output's (its size-1 axes aside).
    let ours = linear.output_facts(&[x_fact])?;
    if ours[0].shape != model.outlet_fact(node.id.into())?.shape {
        return Ok(None);
    }
    let mut patch = TypedModelPatch::default();
    let x = patch.tap_model(model, node.inputs[0])?;
    let out = patch.wire_node(format!("{}.cpu_linear", node.name), linear, &[x])?[0];
    patch.shunt_outside(model, last.id.into(), out)?;
    Ok(Some(patch))
}
