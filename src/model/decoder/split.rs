//! optimum's decoders with a cache: `decoder_model.onnx` (the first tokens, without a cache in;
//! the cross-attention keys and values out) and `decoder_with_past_model.onnx` (every later
//! token), as two files or as the two branches of `decoder_model_merged.onnx`.
//!
//! Both graphs hold every weight of the decoder. When the with-past graph, given an empty
//! cache, computes a prompt as the first graph does (checked on a probe when the decoder is
//! loaded: a with-past graph traced for one token may lack the causal mask), the first graph is
//! cut down to its cross-attention outputs and the decoder runs as a [`CrossKv`]: each weight
//! is then held once. Otherwise the two graphs stay, as a [`Split`], sharing the constants that
//! tract holds for them (see [`constants`](super::constants)).

use std::path::Path;

use amanuensis_kernels::low_precision::WeightPrecision;
use tract_linalg::multithread::Executor;
use tract_onnx::prelude::*;

use super::cache::KvCache;
use super::cache_name::{Attention, CacheName, Part};
use super::constants::share_constants;
use super::cross_kv::CrossKv;
use super::graph::{CrossRows, Graph, OpTimes};
use super::kind::{DecoderKind, read_shape};
use super::load::{Prepared, prepare, read_proto};
use super::merged::{Branch, branch_model};
use super::state::State;
use super::{DecoderError, DecoderHints, DecoderShape};

/// The first-tokens graph and the with-past graph, each run for what it was made for.
pub(super) struct Split {
    /// Tokens and features to logits and both caches.
    first: Graph,
    /// Tokens and both caches to logits and the new self-attention cache.
    step: Graph,
    shape: DecoderShape,
}

/// Loads optimum's `decoder_model.onnx` (`first`) and `decoder_with_past_model.onnx` (`step`).
pub(super) fn load_files(
    first: &Path,
    step: &Path,
    hints: &DecoderHints,
    weights: WeightPrecision,
    executor: &Executor,
) -> Result<Box<dyn DecoderKind>, DecoderError> {
    let first = prepare(first, read_proto(first)?, hints, weights)?;
    let step = prepare(step, read_proto(step)?, hints, weights)?;
    load(first, step, hints, executor)
}

/// Loads optimum's `decoder_model_merged.onnx`, its two branches as two graphs.
pub(super) fn load_merged(
    path: &Path,
    hints: &DecoderHints,
    weights: WeightPrecision,
    executor: &Executor,
) -> Result<Box<dyn DecoderKind>, DecoderError> {
    let proto = read_proto(path)?;
    let branch = |branch| {
        branch_model(&proto, branch).map_err(|detail| DecoderError::NotADecoder {
            path: path.to_path_buf(),
            detail,
        })
    };
    let first = prepare(path, branch(Branch::WithoutCache)?, hints, weights)?;
    let step = prepare(path, branch(Branch::WithCache)?, hints, weights)?;
    drop(proto);
    load(first, step, hints, executor)
}

fn load(
    mut first: Prepared,
    mut step: Prepared,
    hints: &DecoderHints,
    executor: &Executor,
) -> Result<Box<dyn DecoderKind>, DecoderError> {
    share_constants(&mut [first.model_mut(), step.model_mut()]).map_err(|e| {
        DecoderError::Tract {
            path: first.path().to_path_buf(),
            stage: "sharing the constants of the two graphs",
            detail: format!("{e:#}"),
        }
    })?;
    let split = Split::new(first.plan(executor)?, step.plan(executor)?, hints)?;
    if !split.step_takes_prompts() {
        return Ok(Box::new(split));
    }
    let Split { first, step, shape } = split;
    let cross: Vec<CacheName> = (0..shape.n_layers)
        .flat_map(|layer| {
            Part::BOTH.map(|part| CacheName {
                layer,
                attention: Attention::Cross,
                part,
            })
        })
        .collect();
    let cross = first.keep_presents(&cross, executor)?;
    Ok(Box::new(CrossKv::new(cross, step, hints)?))
}

/// Tokens of the probe that compares the two graphs.
const PROBE_TOKENS: [u32; 4] = [1, 2, 3, 4];

/// How far the probe's two computations may differ, relative to the largest magnitude of
/// each tensor compared: float32 sums in different orders differ by a few 1e-6 of it, a
/// missing causal mask by a tenth or more.
const PROBE_TOLERANCE: f32 = 1e-3;

impl Split {
    /// Checks that `first` gives logits and both caches and `step` logits and the
    /// self-attention cache, for as many layers as `step` has.
    pub(super) fn new(
        first: Graph,
        step: Graph,
        hints: &DecoderHints,
    ) -> Result<Split, DecoderError> {
        step.require_logits()?;
        first.require_logits()?;
        let n_layers = step.layers();
        if n_layers == 0 {
            return Err(step.not_a_decoder("it has no past_key_values inputs".into()));
        }
        step.require_presents(n_layers, Attention::SelfAttention)?;
        first.require_presents(n_layers, Attention::SelfAttention)?;
        first.require_presents(n_layers, Attention::Cross)?;
        let shape = read_shape(&step, n_layers, hints)?;
        Ok(Split { first, step, shape })
    }

    /// Whether `step`, given an empty self-attention cache and `first`'s cross-attention
    /// cache, gives the logits and the self-attention cache that `first` gives for a prompt
    /// of a few tokens, over made-up features. Any error counts as no.
    fn step_takes_prompts(&self) -> bool {
        let probe = || -> Result<bool, DecoderError> {
            let shape = self.shape;
            let features = probe_features(shape.n_audio_ctx * shape.d_model);
            let hidden = Tensor::from_shape(&[1, shape.n_audio_ctx, shape.d_model], &features)
                .map_err(|e| self.first.error("building the input", e))?
                .into_arc_tensor();
            let tokens = vec![
                PROBE_TOKENS
                    .iter()
                    .map(|&t| t % shape.n_vocab.max(1) as u32)
                    .collect(),
            ];
            let mut by_first = State::new(shape, hidden.clone());
            let want = self.forward(&mut by_first, &tokens, None)?;
            let mut by_step = State::new(shape, hidden);
            by_step.cross = by_first.cross.clone();
            let got = by_step.run_cached(&self.step, &tokens, None)?;
            let (Some(want_past), Some(got_past)) = (&by_first.past, &by_step.past) else {
                return Ok(false);
            };
            let mut pairs = want_past.tensors().zip(got_past.tensors());
            let caches_agree = pairs.all(|(w, g)| {
                match (
                    w.to_plain_array_view::<f32>(),
                    g.to_plain_array_view::<f32>(),
                ) {
                    (Ok(w), Ok(g)) => w.shape() == g.shape() && close(w.iter(), g.iter()),
                    _ => false,
                }
            });
            Ok(caches_agree && close(want.iter(), got.iter()))
        };
        probe().unwrap_or(false)
    }
}

/// Whether two tensors' values agree within [`PROBE_TOLERANCE`] of the largest magnitude of
/// the first.
fn close<'a>(
    want: impl Iterator<Item = &'a f32> + Clone,
    got: impl Iterator<Item = &'a f32>,
) -> bool {
    let scale = want.clone().fold(1.0f32, |m, v| m.max(v.abs()));
    let mut n = 0usize;
    let agree = want.zip(got).all(|(w, g)| {
        n += 1;
        (w - g).abs() <= PROBE_TOLERANCE * scale
    });
    agree && n > 0
}

/// Made-up features in [-1, 1), the same at every load.
fn probe_features(len: usize) -> Vec<f32> {
    let mut x = 0x2545_f491u32;
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (x >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect()
}

impl DecoderKind for Split {
    fn shape(&self) -> DecoderShape {
        self.shape
    }

    #[cfg(test)]
    fn graphs(&self) -> Vec<&Graph> {
        vec![&self.first, &self.step]
    }

    fn cross_rows(&self) -> CrossRows {
        self.step.io.cross_rows
    }

    fn forward(
        &self,
        state: &mut State,
        tokens: &[Vec<u32>],
        times: Option<&mut OpTimes>,
    ) -> Result<Vec<f32>, DecoderError> {
        if state.past.is_some() {
            return state.run_cached(&self.step, tokens, times);
        }
        let out = self.first.run(state.inputs(&self.first, tokens)?, times)?;
        let n_layers = self.shape.n_layers;
        state.past = Some(KvCache::from_presents(
            &self.first,
            &out,
            n_layers,
            Attention::SelfAttention,
        ));
        let mut cross = KvCache::from_presents(&self.first, &out, n_layers, Attention::Cross);
        if self.step.io.cross_rows == CrossRows::One && cross.rows() != 1 {
            // The rows are all the same: one serves them all.
            let mut scratch = Vec::new();
            cross
                .reorder(&[0], &mut scratch)
                .map_err(|e| self.first.error("reading the cross-attention cache", e))?;
        }
        state.cross = Some(cross);
        state.last_logits(&self.first, &out)
    }

    fn keeps_cross(&self) -> bool {
        false
    }

    fn prompt_graph(&self) -> &Graph {
        &self.first
    }
}

#[cfg(test)]
mod tests {
    use super::close;

    #[test]
    fn the_probe_tolerates_rounding_and_not_a_different_result() {
        let want = [10.0f32, -3.0, 0.5];
        assert!(close(want.iter(), [10.000_05f32, -3.000_01, 0.5].iter()));
        assert!(!close(want.iter(), [10.0f32, -3.0, 0.6].iter()));
        assert!(
            !close([].iter(), [].iter()),
            "nothing compared is no agreement"
        );
    }
}
