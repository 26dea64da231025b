//! The constants of a decoder's graphs, held once: two graphs of one decoder (optimum's
//! `decoder_model.onnx` and `decoder_with_past_model.onnx`, or the two branches of its merged
//! graph) are read and optimised apart, so each owns its copy of every weight they have in
//! common; [`share_constants`] makes the second point at the first's.
//!
//! tract folds each constant operand of a product into a packed tensor when it optimises a
//! graph (`OptMatMulPack` on a constant is evaluated away), and the plan's `Const` nodes then
//! hold those packed tensors, the raw ones only where something else reads them (the token
//! embedding's `Gather`): sharing happens on the optimised graphs, packed tensors included.
//! Products that this project's rewrite fuses (`CpuLinear`) hold their packed weights in the op,
//! out of reach of this pass; a decoder whose graphs share those too is read differently (see
//! the `split` module).

use std::collections::HashMap;
use std::sync::Arc;

use tract_linalg::mmm::{EagerPackedInput, PackedMatrixStorage};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::konst::Const;

/// Constants smaller than this are not worth a comparison.
const MIN_SHARED_BYTES: usize = 1024;

/// Makes every constant of `models` that equals (same type, shape and bytes, packed or not) a
/// constant of an earlier model, or an earlier one of the same model, the same tensor: one
/// allocation, however many graphs read it. The graphs compute exactly what they did.
pub(super) fn share_constants(models: &mut [&mut TypedModel]) -> TractResult<()> {
    let mut seen: HashMap<(DatumType, TVec<usize>), Vec<Arc<Tensor>>> = HashMap::new();
    for model in models.iter_mut() {
        for id in 0..model.nodes().len() {
            let Some(konst) = model.node(id).op_as::<Const>() else {
                continue;
            };
            let tensor = konst.val().clone();
            if bytes(&tensor) < MIN_SHARED_BYTES {
                continue;
            }
            let exotic = konst.exotic_fact().is_some();
            let candidates = seen
                .entry((tensor.datum_type(), tensor.shape().into()))
                .or_default();
            let Some(same) = candidates
                .iter()
                .find(|c| Arc::ptr_eq(c, &tensor) || ***c == *tensor)
                .cloned()
            else {
                candidates.push(tensor);
                continue;
            };
            if Arc::ptr_eq(&same, &tensor) {
                continue;
            }
            let node = model.node_mut(id);
            let exotic_fact = if exotic {
                node.outputs[0].fact.exotic_fact.clone()
            } else {
                None
            };
            let op = Const::new_with_opt_exotic_fact(same, exotic_fact)?;
            // The output fact holds the tensor too (`konst`): it must name the shared one.
            node.outputs[0].fact = op.output_facts(&[])?.remove(0);
            node.op = Box::new(op);
        }
    }
    Ok(())
}

/// The allocations a tensor's data lives in, as (address, bytes): its buffer if it is plain,
/// its packed panels if it is a matrix tract packed.
pub(super) fn allocations(tensor: &Tensor) -> Vec<(usize, usize)> {
    if let Some(plain) = tensor.as_plain_ram_storage() {
        let bytes = plain.as_bytes();
        return vec![(bytes.as_ptr() as usize, bytes.len())];
    }
    let Some(packed) = tensor.storage_as::<PackedMatrixStorage>() else {
        return Vec::new();
    };
    packed
        .values()
        .iter()
        .filter_map(|v| v.downcast_ref::<EagerPackedInput>())
        .map(|v| (Arc::as_ptr(&v.packed) as usize, v.packed.len()))
        .collect()
}

/// The bytes of a tensor's data.
fn bytes(tensor: &Tensor) -> usize {
    allocations(tensor).iter().map(|(_, b)| b).sum()
}

/// The bytes of the constants the plans of `models` hold, each allocation counted once.
#[cfg(test)]
pub(super) fn constant_bytes<'a>(models: impl IntoIterator<Item = &'a TypedModel>) -> usize {
    let mut seen = std::collections::HashSet::new();
    models
        .into_iter()
        .flat_map(|m| m.nodes().iter())
        .filter_map(|n| n.op_as::<Const>())
        .flat_map(|k| allocations(k.val()))
        .filter(|(address, _)| seen.insert(*address))
        .map(|(_, bytes)| bytes)
        .sum()
}
