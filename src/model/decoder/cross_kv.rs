//! Decoders with a graph of their own for the cross-attention keys and values: this project's
//! export (`cross_kv_model.onnx` and `decoder_with_past_model.onnx`), and optimum's exports
//! whose with-past graph also takes a prompt (their first graph then cut down to its
//! cross-attention outputs, see [`split`](super::split)).
//!
//! The cross-attention graph runs once per window, when the session starts; the step graph runs
//! the prompt (after an empty cache) and every later token.

use tract_onnx::prelude::*;

use super::cache::KvCache;
use super::cache_name::Attention;
use super::graph::{CrossRows, Feed, Graph, OpTimes};
use super::kind::{DecoderKind, read_shape};
use super::state::State;
use super::{DecoderError, DecoderHints, DecoderShape};

/// A cross-attention graph and a step graph with a self-attention cache in and out.
pub(super) struct CrossKv {
    /// Features to every layer's cross-attention keys and values.
    cross: Graph,
    /// Tokens, the self-attention cache and the cross-attention cache to logits and the new
    /// self-attention cache.
    step: Graph,
    shape: DecoderShape,
}

impl CrossKv {
    /// Checks that `cross` gives the cross-attention cache and `step` logits and the
    /// self-attention cache, for as many layers as `step` has.
    pub(super) fn new(
        cross: Graph,
        step: Graph,
        hints: &DecoderHints,
    ) -> Result<CrossKv, DecoderError> {
        step.require_logits()?;
        let n_layers = step.layers();
        if n_layers == 0 {
            return Err(step.not_a_decoder("it has no past_key_values inputs".into()));
        }
        step.require_presents(n_layers, Attention::SelfAttention)?;
        cross.require_presents(n_layers, Attention::Cross)?;
        if cross.io.feeds != [Feed::Hidden] {
            return Err(cross.not_a_decoder(
                "the cross-attention graph must take encoder_hidden_states alone".into(),
            ));
        }
        let shape = read_shape(&step, n_layers, hints)?;
        Ok(CrossKv { cross, step, shape })
    }
}

impl DecoderKind for CrossKv {
    fn shape(&self) -> DecoderShape {
        self.shape
    }

    #[cfg(test)]
    fn graphs(&self) -> Vec<&Graph> {
        vec![&self.cross, &self.step]
    }

    fn cross_rows(&self) -> CrossRows {
        self.step.io.cross_rows
    }

    fn start(&self, state: &mut State) -> Result<(), DecoderError> {
        let out = self
            .cross
            .run(tvec![state.hidden.clone().into_tvalue()], None)?;
        state.cross = Some(KvCache::from_presents(
            &self.cross,
            &out,
            self.shape.n_layers,
            Attention::Cross,
        ));
        Ok(())
    }

    fn forward(
        &self,
        state: &mut State,
        tokens: &[Vec<u32>],
        times: Option<&mut OpTimes>,
    ) -> Result<Vec<f32>, DecoderError> {
        state.run_cached(&self.step, tokens, times)
    }

    fn keeps_cross(&self) -> bool {
        true
    }

    fn prompt_graph(&self) -> &Graph {
        &self.step
    }
}
