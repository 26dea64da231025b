//! The cross-attention scores that word timestamps align tokens with: the graph that runs a
//! fresh session's prompt, its fused cross-attentions made to give the scores of the
//! alignment heads as outputs of their own.
//!
//! openai-whisper (whisper/timing.py, `find_alignment`) hooks its cross-attention layers for
//! `Q K^T` (scaled, before the softmax) and keeps the heads of `model.alignment_heads`. The
//! decoder's ONNX graphs give no such output; their cross-attentions are fused into
//! [`CachedAttention`] when the decoder is loaded, whatever the exporter's layout, so the fused
//! op gives them: every layout of decoder (this project's export and optimum's) aligns words
//! the same way, without exporting anything more.

use amanuensis_ops::CachedAttention;
use tract_linalg::multithread::Executor;
use tract_onnx::prelude::*;

use super::graph::{Graph, Io, drop_unread_inputs};
use super::load::Prepared;
use super::{DecoderError, DecoderShape};

/// The prompt graph with the alignment heads' scores as outputs.
pub(super) struct AlignmentGraph {
    /// The graph: logits first, then the scores of the layers in `layers`.
    pub graph: Graph,
    /// The alignment heads it was built for, in the caller's order.
    pub heads: Vec<(usize, usize)>,
    /// For each output after the logits: the layer and, in its order, the heads it keeps.
    pub layers: Vec<(usize, Vec<usize>)>,
}

/// What an alignment pass gives: the scores of the alignment heads and the logits of every
/// position.
#[derive(Debug, Clone)]
pub struct CrossScores {
    /// Tokens run (the rows of the scores and of the logits).
    pub tokens: usize,
    /// Encoder positions (the columns of the scores).
    pub frames: usize,
    /// Per alignment head, in the order asked, `[tokens, frames]` scores `Q K^T / sqrt(d)`
    /// before the softmax.
    pub scores: Vec<Vec<f32>>,
    /// The logits of every position, `[tokens, n_vocab]`.
    pub logits: Vec<f32>,
}

impl AlignmentGraph {
    /// Builds the alignment graph of `prompt`, a decoder graph of `shape`, for the `heads`
    /// (layer, head); planned on `executor`.
    pub(super) fn build(
        prompt: &Graph,
        heads: &[(usize, usize)],
        shape: &DecoderShape,
        executor: &Executor,
    ) -> Result<AlignmentGraph, DecoderError> {
        let tract = |e: anyhow::Error| prompt.error("adding the cross-attention outputs", e);
        let mut model = prompt.plan.model().clone();
        let order = model.eval_order().map_err(tract)?;
        // The fused cross-attentions, in the order they run (layer by layer): those whose keys
        // are the encoder's positions.
        let mut cross = Vec::new();
        for &id in &order {
            let node = model.node(id);
            let Some(op) = node.op_as::<CachedAttention>() else {
                continue;
            };
            let keys = model.outlet_fact(node.inputs[1]).map_err(tract)?;
            if keys.shape[op.k.rows].to_i64().ok() == Some(shape.n_audio_ctx as i64) {
                cross.push(id);
            }
        }
        let n_layers = cross.len();
        if n_layers == 0 || (shape.n_layers != 0 && n_layers != shape.n_layers) {
            return Err(prompt.not_a_decoder(format!(
                "word timestamps read the cross-attention weights of every layer, and {n_layers} \
                 of the decoder's {} layers have a cross-attention this project recognises (a \
                 product of the queries and the encoder's keys, a softmax, a product with the \
                 values); this export cannot give word timestamps: export the model with \
                 `amanuensis models convert` or optimum",
                shape.n_layers
            )));
        }
        // The heads a sequence has: the cross-attention's batch axes, every symbol at 1 (the
        // decoder's shape guesses them when no cache input declares them).
        let node = model.node(cross[0]);
        let op = node.op_as::<CachedAttention>().expect("found above");
        let n_heads = heads_of(&model, node, op).map_err(tract)?;
        for &(layer, head) in heads {
            if layer >= n_layers || head >= n_heads {
                return Err(prompt.not_a_decoder(format!(
                    "alignment head ({layer}, {head}) is outside the decoder's {n_layers} layers \
                     of {n_heads} heads: fix alignment_heads in generation_config.json"
                )));
            }
        }
        let logits_ix = prompt
            .io
            .logits
            .ok_or_else(|| prompt.not_a_decoder("it has no logits output".into()))?;
        let mut outputs = vec![model.output_outlets().map_err(tract)?[logits_ix]];
        let mut layers = Vec::new();
        for (layer, &id) in cross.iter().enumerate() {
            let keep: Vec<usize> = heads
                .iter()
                .filter(|(l, _)| *l == layer)
                .map(|&(_, h)| h)
                .collect();
            if keep.is_empty() {
                continue;
            }
            let node = model.node(id).clone();
            let op = node.op_as::<CachedAttention>().expect("found above");
            let heads_here = heads_of(&model, &node, op).map_err(tract)?;
            if heads_here != n_heads {
                return Err(tract(anyhow::anyhow!(
                    "the cross-attentions have {n_heads} and {heads_here} heads"
                )));
            }
            let scored = CachedAttention {
                keep_scores: keep.iter().copied().collect(),
                ..op.clone()
            };
            let name = format!("{}.alignment_scores", node.name);
            let mut patch = TypedModelPatch::default();
            let taps = patch.taps(&model, &node.inputs).map_err(tract)?;
            let wired = patch.wire_node(&name, scored, &taps).map_err(tract)?;
            patch
                .shunt_outside(&model, OutletId::new(id, 0), wired[0])
                .map_err(tract)?;
            patch.apply(&mut model).map_err(tract)?;
            let new = model
                .nodes()
                .iter()
                .find(|n| n.name == name)
                .map(|n| n.id)
                .ok_or_else(|| tract(anyhow::anyhow!("the patched node is gone")))?;
            outputs.push(OutletId::new(new, 1));
            layers.push((layer, keep));
        }
        model.select_output_outlets(&outputs).map_err(tract)?;
        every_position(&mut model).map_err(tract)?;
        model.compact().map_err(tract)?;
        let feeds = drop_unread_inputs(&mut model, &prompt.io.feeds).map_err(tract)?;
        let io = Io {
            feeds,
            logits: Some(0),
            presents: Vec::new(),
            ..prompt.io.clone()
        };
        let graph = Prepared::new(prompt.path.clone(), model, io).plan(executor)?;
        Ok(AlignmentGraph {
            graph,
            heads: heads.to_vec(),
            layers,
        })
    }
}

/// Makes a graph that computes the logits of the last position only compute them for every
/// position: this project's export slices the last position before the output projection
/// (tract then moves the slice up into the last layer), where word probabilities need every
/// position's. Every slice of the last position of the sequence axis is bypassed and the
/// shapes after it computed again.
fn every_position(model: &mut TypedModel) -> TractResult<()> {
    use tract_onnx::tract_core::ops::array::Slice;
    let seq = model.symbols.sym("seq");
    let last = TDim::from(seq.clone()) - 1;
    let slices: Vec<usize> = model
        .nodes()
        .iter()
        .filter(|n| {
            n.op_as::<Slice>()
                .is_some_and(|s| s.axis == 1 && s.end == TDim::from(seq.clone()) && s.start == last)
        })
        .map(|n| n.id)
        .collect();
    for id in slices {
        let input = model.node(id).inputs[0];
        let successors = model.node(id).outputs[0].successors.clone();
        for inlet in successors {
            model.add_edge(input, inlet)?;
        }
    }
    model.refresh_output_facts()
}

/// The heads of a cross-attention when one sequence runs: the sizes of its scores' batch
/// axes, every symbol (sequences, windows) at 1, multiplied.
fn heads_of(model: &TypedModel, node: &TypedNode, op: &CachedAttention) -> TractResult<usize> {
    let facts: Vec<&TypedFact> = node
        .inputs
        .iter()
        .take(3)
        .map(|o| model.outlet_fact(*o))
        .collect::<TractResult<_>>()?;
    let mut product = 1usize;
    for b in 0..op.q.batch.len() {
        let axes = [op.q.batch[b], op.k.batch[b], op.v.batch[b]];
        let size = facts
            .iter()
            .zip(axes)
            .filter_map(|(f, a)| {
                let dim = &f.shape[a];
                let mut one = SymbolValues::default();
                for s in dim.symbols() {
                    one.set(&s, 1);
                }
                dim.eval(&one).to_i64().ok()
            })
            .max()
            .unwrap_or(1);
        product *= size as usize;
    }
    Ok(product)
}
