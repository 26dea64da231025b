//! One planned decoder graph: how its inputs and outputs map to the decoder's tensors, the
//! checks a kind makes of it, and running it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tract_linalg::multithread::Executor;
use tract_onnx::prelude::*;

use super::DecoderError;
use super::cache_name::{Attention, CacheName, Part};
use super::load::Prepared;

/// What feeds one input of a graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Feed {
    /// `input_ids`: the tokens, `[rows, seq]`.
    Ids,
    /// `encoder_hidden_states`: the window's features, `[rows, n_audio_ctx, d_model]`.
    Hidden,
    /// `past_key_values.*`: a cache tensor.
    Cache(CacheName),
}

/// How many rows a graph's cross-attention inputs have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CrossRows {
    /// One, whatever the number of token rows: every cross-attention input goes straight into
    /// a fused attention ([`amanuensis_ops::CachedAttention`]), which broadcasts it over the rows, so the
    /// rows of a beam search read one copy of the window's keys and values.
    One,
    /// One per token row (the graph reshapes or otherwise reads the keys and values in a way
    /// that needs every row).
    PerRow,
}

/// Time per op kind: (nodes run, time), by tract's op name.
pub(super) type OpTimes = HashMap<String, (usize, Duration)>;

/// What a graph's inputs and outputs carry.
#[derive(Debug, Clone)]
pub(super) struct Io {
    /// What feeds each input, in order.
    pub feeds: Vec<Feed>,
    /// The element type of `input_ids`.
    pub ids_type: DatumType,
    /// Output index of `logits`.
    pub logits: Option<usize>,
    /// Output index of each `present.*`.
    pub presents: Vec<(CacheName, usize)>,
    /// The rows of the cross-attention inputs.
    pub cross_rows: CrossRows,
}

/// One planned graph.
pub(super) struct Graph {
    /// The file read (a merged decoder's two graphs name the same file).
    pub path: PathBuf,
    /// The plan.
    pub plan: Arc<TypedRunnableModel>,
    /// Its inputs and outputs.
    pub io: Io,
}

/// Drops the inputs of `model` that nothing reads any more (compaction keeps every input),
/// then compacts it: the feeds of the inputs kept, of `feeds` (one per input, in order).
pub(super) fn drop_unread_inputs(model: &mut TypedModel, feeds: &[Feed]) -> TractResult<Vec<Feed>> {
    let outputs = model.output_outlets()?.to_vec();
    let inputs = model.input_outlets()?.to_vec();
    let mut kept_feeds = Vec::new();
    let mut used = Vec::new();
    for (feed, outlet) in feeds.iter().zip(inputs) {
        if !model.outlet_successors(outlet).is_empty() || outputs.contains(&outlet) {
            used.push(outlet);
            kept_feeds.push(*feed);
        }
    }
    model.inputs = used;
    model.compact()?;
    Ok(kept_feeds)
}

impl Feed {
    /// Whether the input is a cross-attention cache tensor.
    pub(super) fn is_cross(&self) -> bool {
        matches!(
            self,
            Feed::Cache(CacheName {
                attention: Attention::Cross,
                ..
            })
        )
    }
}

impl Graph {
    /// The graph cut down to the outputs `names` and what they are computed from, planned
    /// again on `executor`; the inputs it no longer reads are dropped, and with them what only
    /// the other outputs needed (weights included).
    pub(super) fn keep_presents(
        self,
        names: &[CacheName],
        executor: &Executor,
    ) -> Result<Graph, DecoderError> {
        let mut model = self.plan.model().clone();
        let tract = |e: anyhow::Error| self.error("pruning the graph", e);
        let outputs = model.output_outlets().map_err(tract)?.to_vec();
        let mut kept = Vec::new();
        let mut presents = Vec::new();
        for name in names {
            let ix = self.present(*name).ok_or_else(|| {
                self.not_a_decoder(format!("output {} is missing", name.present()))
            })?;
            presents.push((*name, kept.len()));
            kept.push(outputs[ix]);
        }
        model.select_output_outlets(&kept).map_err(tract)?;
        model.compact().map_err(tract)?;
        let feeds = drop_unread_inputs(&mut model, &self.io.feeds).map_err(tract)?;
        let Graph { path, plan, io } = self;
        drop(plan);
        let io = Io {
            feeds,
            logits: None,
            presents,
            ..io
        };
        Prepared::new(path, model, io).plan(executor)
    }

    /// The output that gives the cache tensor `name`, if the graph gives it.
    pub(super) fn present(&self, name: CacheName) -> Option<usize> {
        self.io
            .presents
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, ix)| *ix)
    }

    /// The number of layers the cache names of the graph say (0 without a cache).
    pub(super) fn layers(&self) -> usize {
        let inputs = self.io.feeds.iter().filter_map(|f| match f {
            Feed::Cache(name) => Some(name.layer + 1),
            _ => None,
        });
        let outputs = self.io.presents.iter().map(|(name, _)| name.layer + 1);
        inputs.chain(outputs).max().unwrap_or(0)
    }

    /// The declared `[heads, head width]` of the first cache input of `attention` (any
    /// attention when `None`).
    pub(super) fn cache_dims(&self, attention: Option<Attention>) -> Option<(usize, usize)> {
        let ix = self.io.feeds.iter().position(|f| match f {
            Feed::Cache(name) => attention.is_none_or(|a| a == name.attention),
            _ => false,
        })?;
        let model = self.plan.model();
        let outlet = *model.input_outlets().ok()?.get(ix)?;
        let fact = model.outlet_fact(outlet).ok()?;
        let dim = |axis: usize| fact.shape.get(axis)?.to_i64().ok().map(|d| d as usize);
        Some((dim(1)?, dim(3)?))
    }

    /// An error about this graph's file.
    pub(super) fn error(&self, stage: &'static str, e: anyhow::Error) -> DecoderError {
        DecoderError::Tract {
            path: self.path.clone(),
            stage,
            detail: format!("{e:#}"),
        }
    }

    /// An error saying the graph is not a Whisper decoder.
    pub(super) fn not_a_decoder(&self, detail: String) -> DecoderError {
        DecoderError::NotADecoder {
            path: self.path.clone(),
            detail,
        }
    }

    /// Checks that the graph takes tokens and gives logits.
    pub(super) fn require_logits(&self) -> Result<(), DecoderError> {
        if self.io.logits.is_none() || !self.io.feeds.contains(&Feed::Ids) {
            return Err(self.not_a_decoder("it has no input_ids input or no logits output".into()));
        }
        Ok(())
    }

    /// Checks that the graph gives the keys and values of `attention` for `n_layers` layers.
    pub(super) fn require_presents(
        &self,
        n_layers: usize,
        attention: Attention,
    ) -> Result<(), DecoderError> {
        for layer in 0..n_layers {
            for part in Part::BOTH {
                let name = CacheName {
                    layer,
                    attention,
                    part,
                };
                if self.present(name).is_none() {
                    return Err(self.not_a_decoder(format!("output {} is missing", name.present())));
                }
            }
        }
        Ok(())
    }

    /// The width of the logits.
    pub(super) fn n_vocab(&self) -> Result<usize, DecoderError> {
        let ix = self
            .io
            .logits
            .ok_or_else(|| self.not_a_decoder("it has no logits output".into()))?;
        let fact = self
            .plan
            .model()
            .output_fact(ix)
            .map_err(|e| self.not_a_decoder(format!("cannot read the logits' shape: {e:#}")))?;
        fact.shape
            .dims()
            .last()
            .and_then(|d| d.to_i64().ok())
            .map(|d| d as usize)
            .ok_or_else(|| self.not_a_decoder(format!("logits of shape {:?}", fact.shape)))
    }

    /// Runs the graph; with `times`, times every node into it.
    pub(super) fn run(
        &self,
        inputs: TVec<TValue>,
        times: Option<&mut OpTimes>,
    ) -> Result<TVec<TValue>, DecoderError> {
        let result = match times {
            None => self.plan.run(inputs),
            Some(times) => self.plan.spawn().and_then(|mut state| {
                state.run_plan_with_eval(inputs, |ctx, op_state, node, inputs| {
                    let start = Instant::now();
                    let result = tract_onnx::tract_core::plan::eval(ctx, op_state, node, inputs);
                    let entry = times.entry(node.op().name().to_string()).or_default();
                    entry.0 += 1;
                    entry.1 += start.elapsed();
                    result
                })
            }),
        };
        result.map_err(|e| self.error("running", e))
    }
}
