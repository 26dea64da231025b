//! What every layout of decoder graphs does for a session: [`CrossKv`](super::cross_kv),
//! [`Split`](super::split) and [`NoCache`](super::no_cache) implement it.

use super::graph::{CrossRows, Graph, OpTimes};
use super::state::State;
use super::{DecoderError, DecoderShape};

/// One layout of decoder graphs, planned: how a window starts and how tokens run.
pub(super) trait DecoderKind: Send + Sync {
    /// The decoder's shapes, read and checked when the graphs were loaded.
    fn shape(&self) -> DecoderShape;

    /// The planned graphs.
    #[cfg(test)]
    fn graphs(&self) -> Vec<&Graph>;

    /// How the graph that reads the cross-attention cache takes it.
    fn cross_rows(&self) -> CrossRows;

    /// Sets what a new window needs before its first tokens (the cross-attention cache, for
    /// a kind that computes it apart from the tokens).
    fn start(&self, _state: &mut State) -> Result<(), DecoderError> {
        Ok(())
    }

    /// Runs `tokens` (one row each, all of one length, as many rows as `state` has) after
    /// what each row holds; returns the logits of each row's last position, `[rows *
    /// n_vocab]`. With `times`, every node run is timed into it.
    fn forward(
        &self,
        state: &mut State,
        tokens: &[Vec<u32>],
        times: Option<&mut OpTimes>,
    ) -> Result<Vec<f32>, DecoderError>;

    /// Whether the cross-attention cache outlives a reset (it came from its own graph).
    fn keeps_cross(&self) -> bool;

    /// The graph that runs a fresh session's first tokens (a prompt, from an empty cache).
    fn prompt_graph(&self) -> &Graph;
}

/// The shape of a decoder whose graph `main` gives the logits and has `n_layers` layers.
pub(super) fn read_shape(
    main: &Graph,
    n_layers: usize,
    hints: &super::DecoderHints,
) -> Result<DecoderShape, DecoderError> {
    let n_heads = main
        .cache_dims(None)
        .map(|(heads, _)| heads)
        .or(hints.n_heads)
        .unwrap_or(hints.d_model / 64);
    Ok(DecoderShape {
        n_vocab: main.n_vocab()?,
        n_layers,
        n_heads,
        d_model: hints.d_model,
        n_audio_ctx: hints.n_audio_ctx,
    })
}
