//! From a typed decoder graph to the one that is planned: tract's declutter (less two passes
//! that break decoders), this project's CPU fusions, tract's optimisation.

use std::sync::Arc;

use amanuensis_kernels::low_precision::WeightPrecision;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::ops::konst::Const;
use tract_onnx::tract_core::optim::Optimizer;

use super::super::encoder::{f16_to_f32, has_f16};

/// Where a preparation step failed: the stage (for messages) and tract's error.
pub(super) type StageError = (&'static str, anyhow::Error);

/// Declutters, fuses for the CPU (`Stage::Cpu` and `Stage::Decoder`, the linear layers'
/// weights held as `weights` says) and optimises `typed`, computing float16 graphs in float32.
pub(super) fn optimize(
    mut typed: TypedModel,
    weights: WeightPrecision,
) -> Result<TypedModel, StageError> {
    let stage = |stage: &'static str| move |e: anyhow::Error| (stage, e);
    if has_f16(&typed) {
        f16_to_f32(&mut typed).map_err(stage("converting float16 to float32"))?;
    }
    declutter(&mut typed, true).map_err(stage("decluttering"))?;
    // A product's constant of its own folds with its layout changes, before the rules read it.
    unshare_product_constants(&mut typed).map_err(stage("decluttering"))?;
    declutter(&mut typed, true).map_err(stage("decluttering"))?;
    let mut context = crate::rewrite::RewriteContext::new(None);
    context.weights = weights;
    crate::rewrite::rewrite(
        &mut typed,
        &context,
        &[crate::rewrite::Stage::Cpu, crate::rewrite::Stage::Decoder],
    )
    .map_err(|e| ("fusing for the CPU", anyhow::anyhow!(e)))?;
    declutter(&mut typed, false).map_err(stage("decluttering"))?;
    unshare_product_constants(&mut typed).map_err(stage("decluttering"))?;
    typed.optimize().map_err(stage("optimising"))?;
    Ok(typed)
}

/// The declutter passes of tract without `FoldUniformMask`, and without `PushSliceUp` when
/// `keep_slices`.
///
/// `FoldUniformMask`, in tract 0.23, folds the causal mask of optimum's decoders into a
/// constant of the shape it had for two tokens, so that any other prompt length fails to
/// broadcast ("Can not broadcast 3 against 2"); the mask is cheap, so it is left as it is.
/// `PushSliceUp` moves the last-position slice before the logits up into the last layer's
/// attention, where the fused attention would no longer be recognised: the attention is fused
/// first, then the slice pushed up.
fn declutter(model: &mut TypedModel, keep_slices: bool) -> TractResult<()> {
    let mut optimizer = Optimizer::declutter();
    optimizer.passes.retain(|p| {
        let name = format!("{p:?}");
        let pushes_slices = keep_slices && name.contains("PushSliceUp");
        !(name.contains("FoldUniformMask") || pushes_slices)
    });
    optimizer.session().optimize(model)
}

/// Gives every matrix product its own copy of a constant it shares with other nodes (the same
/// tensor, not a copy of its data).
///
/// tract packs a constant operand once, at planning, only when the product is the constant's
/// only consumer; Whisper ties its output projection to the token embedding, which a Gather
/// also reads, so the 51865 x d_model matrix would be packed again at every token (30 ms of a
/// 50 ms step for tiny).
fn unshare_product_constants(model: &mut TypedModel) -> TractResult<()> {
    let shared: Vec<(usize, Arc<Tensor>)> = model
        .nodes()
        .iter()
        .filter(|n| n.outputs.len() == 1 && n.outputs[0].successors.len() > 1)
        .filter_map(|n| {
            let konst = n.op_as::<Const>()?;
            Some((n.id, konst.val().clone()))
        })
        .collect();
    for (id, tensor) in shared {
        let products: Vec<InletId> = model.nodes()[id].outputs[0]
            .successors
            .iter()
            .copied()
            .filter(|inlet| model.nodes()[inlet.node].op_is::<EinSum>())
            .collect();
        for (i, inlet) in products.into_iter().enumerate() {
            let name = format!("{}.for_product_{i}", model.nodes()[id].name);
            // A node of its own: `add_const` and `wire_node` would hand back the shared one.
            let fact = model.nodes()[id].outputs[0].fact.clone();
            let konst = model.add_node(name, Const::new(tensor.clone())?, tvec![fact])?;
            model.add_edge(OutletId::new(konst, 0), inlet)?;
        }
    }
    Ok(())
}
