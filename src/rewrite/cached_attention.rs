//! `EinSum (Q K^T)` -> [`Add` mask] -> `Softmax` -> [`IsNan`/`Iff`] -> `EinSum (P V)` ->
//! one `CachedAttention`, in decoders.
//!
//! A decoder step attends with one query to its caches; tract's products would pack the
//! 1500 cached keys and values of every layer again at each token, which costs more than the
//! products themselves. The pattern is recognised from the products' axes, whatever the
//! exporter's layout, as long as every operand's depth is its last axis.

use amanuensis_ops::{AttentionAxes, CachedAttention};
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::ops::logic::Iff;
use tract_onnx::tract_core::ops::math::Add;
use tract_onnx::tract_core::ops::nn::{Softmax, SoftmaxKind};

use super::{Pass, RewriteContext, Stage};

inventory::submit! {
    Pass {
        name: "cached_attention",
        stage: Stage::Decoder,
        order: 10,
        add: |r| r.with_rule_for::<Softmax>("cached_attention", rule),
    }
}

/// The roles of a binary product's axes: each letter's position in A, B and the output.
struct Roles {
    /// (A, B, output) positions of the axes in all three.
    batch: Vec<(usize, usize, usize)>,
    /// (A, output) of the axis only A and the output have.
    m: (usize, usize),
    /// (B, output) of the axis only B and the output have.
    n: (usize, usize),
    /// (A, B) of the contracted axis.
    k: (usize, usize),
}

fn roles(op: &EinSum) -> Option<Roles> {
    if op.q_params.is_some() || op.operating_dt != f32::datum_type() {
        return None;
    }
    let mut batch = Vec::new();
    let (mut m, mut n, mut k) = (None, None, None);
    for axis in op.axes.iter_all_axes() {
        let at = |v: &TVec<TVec<usize>>, i: usize| -> Option<Option<usize>> {
            match v.get(i).map(|p| p.len()) {
                Some(0) => Some(None),
                Some(1) => Some(Some(v[i][0])),
                _ => None,
            }
        };
        let (a, b, c) = (
            at(&axis.inputs, 0)?,
            at(&axis.inputs, 1)?,
            at(&axis.outputs, 0)?,
        );
        match (a, b, c) {
            (Some(a), Some(b), Some(c)) => batch.push((a, b, c)),
            (Some(a), None, Some(c)) if m.is_none() => m = Some((a, c)),
            (None, Some(b), Some(c)) if n.is_none() => n = Some((b, c)),
            (Some(a), Some(b), None) if k.is_none() => k = Some((a, b)),
            _ => return None,
        }
    }
    Some(Roles {
        batch,
        m: m?,
        n: n?,
        k: k?,
    })
}

fn rule(
    _ctx: &RewriteContext,
    model: &TypedModel,
    node: &TypedNode,
    _name: &str,
    softmax: &Softmax,
) -> TractResult<Option<TypedModelPatch>> {
    let scores_fact = model.outlet_fact(node.inputs[0])?;
    let rank = scores_fact.rank();
    if softmax.kind != SoftmaxKind::Softmax
        || scores_fact.datum_type != f32::datum_type()
        || rank < 2
        || softmax.axes.as_slice() != [rank - 1]
    {
        return Ok(None);
    }
    // The scores: Q K^T, maybe plus a mask.
    let mut qk_node = model.node(node.inputs[0].node);
    let mut mask = None;
    if let Some(add) = qk_node.op_as::<TypedBinOp>()
        && add.0.is::<Add>()
    {
        let (a, b) = (qk_node.inputs[0], qk_node.inputs[1]);
        let (product, other) = if model.node(a.node).op_is::<EinSum>() {
            (a, b)
        } else {
            (b, a)
        };
        let other_fact = model.outlet_fact(other)?;
        if other_fact.rank() != rank || other_fact.datum_type != f32::datum_type() {
            return Ok(None);
        }
        mask = Some(other);
        qk_node = model.node(product.node);
        if model.outlet_fact(product)?.shape != scores_fact.shape {
            return Ok(None);
        }
    }
    let Some(qk) = qk_node.op_as::<EinSum>() else {
        return Ok(None);
    };
    let Some(qkr) = roles(qk) else {
        return Ok(None);
    };
    if qk_node.outputs[0].successors.len() != 1 || qkr.n.1 != rank - 1 || qkr.m.1 != rank - 2 {
        return Ok(None);
    }
    // The probabilities, maybe with NaN rows replaced by zeros.
    let Some(mut pv_node) = model.single_succ(node.id)? else {
        return Ok(None);
    };
    let mut probs = OutletId::new(node.id, 0);
    let mut nan_to_zero = false;
    if pv_node.op.name() == "IsNan" {
        let Some(iff_node) = model.single_succ(pv_node.id)? else {
            return Ok(None);
        };
        let zero = iff_node
            .inputs
            .get(1)
            .and_then(|o| model.outlet_fact(*o).ok())
            .and_then(|f| f.konst.clone());
        let is_zero =
            zero.is_some_and(|z| z.cast_to_scalar::<f32>().is_ok_and(|v| v == 0.0) && z.len() == 1);
        if !iff_node.op_is::<Iff>()
            || iff_node.inputs[0] != OutletId::new(pv_node.id, 0)
            || iff_node.inputs[2] != probs
            || !is_zero
            || model.node(node.id).outputs[0].successors.len() != 2
        {
            return Ok(None);
        }
        let Some(next) = model.single_succ(iff_node.id)? else {
            return Ok(None);
        };
        probs = OutletId::new(iff_node.id, 0);
        nan_to_zero = true;
        pv_node = next;
    } else if node.outputs[0].successors.len() != 1 {
        return Ok(None);
    }
    let Some(pv) = pv_node.op_as::<EinSum>() else {
        return Ok(None);
    };
    let Some(pvr) = roles(pv) else {
        return Ok(None);
    };
    // P V contracts the keys (the scores' last axis) and keeps the queries.
    if pv_node.inputs[0] != probs || pvr.k.0 != rank - 1 || pvr.m.0 != rank - 2 {
        return Ok(None);
    }
    let (q_fact, k_fact, v_fact) = (
        model.outlet_fact(qk_node.inputs[0])?,
        model.outlet_fact(qk_node.inputs[1])?,
        model.outlet_fact(pv_node.inputs[1])?,
    );
    let out_rank = model.outlet_fact(pv_node.id.into())?.rank();
    // Depth last everywhere.
    if qkr.k.0 + 1 != q_fact.rank()
        || qkr.k.1 + 1 != k_fact.rank()
        || pvr.n.0 + 1 != v_fact.rank()
        || pvr.n.1 + 1 != out_rank
        || qkr.batch.len() != pvr.batch.len()
        || q_fact.rank() != qkr.batch.len() + 2
        || k_fact.rank() != qkr.batch.len() + 2
        || v_fact.rank() != qkr.batch.len() + 2
    {
        return Ok(None);
    }
    // Batch axes in the scores' order.
    let mut qk_batch = qkr.batch.clone();
    qk_batch.sort_by_key(|&(_, _, s)| s);
    let mut q_batch = TVec::new();
    let mut k_batch = TVec::new();
    let mut v_batch = TVec::new();
    let mut out_batch = TVec::new();
    let mut scores_batch = TVec::new();
    for &(qa, ka, s) in &qk_batch {
        let Some(&(_, va, oa)) = pvr.batch.iter().find(|&&(p, _, _)| p == s) else {
            return Ok(None);
        };
        q_batch.push(qa);
        k_batch.push(ka);
        v_batch.push(va);
        out_batch.push(oa);
        scores_batch.push(s);
    }
    let op = CachedAttention {
        q: AttentionAxes {
            batch: q_batch,
            rows: qkr.m.0,
        },
        k: AttentionAxes {
            batch: k_batch,
            rows: qkr.n.0,
        },
        v: AttentionAxes {
            batch: v_batch,
            rows: pvr.k.1,
        },
        out: AttentionAxes {
            batch: out_batch,
            rows: pvr.m.1,
        },
        scores: AttentionAxes {
            batch: scores_batch,
            rows: rank - 2,
        },
        masked: mask.is_some(),
        nan_to_zero,
        keep_scores: tvec![],
    };
    let mut inputs = vec![qk_node.inputs[0], qk_node.inputs[1], pv_node.inputs[1]];
    inputs.extend(mask);
    let mut patch = TypedModelPatch::default();
    let taps = patch.taps(model, &inputs)?;
    let wired = patch.wire_node(format!("{}.cached_attention", node.name), op, &taps)?;
    patch.shunt_outside(model, pv_node.id.into(), wired[0])?;
    Ok(Some(patch))
}
