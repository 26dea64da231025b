//! A decoder exported without a cache (`decoder_model.onnx` alone): every step runs the whole
//! sequence of every row again.

use super::graph::{CrossRows, Graph, OpTimes};
use super::kind::{DecoderKind, read_shape};
use super::state::State;
use super::{DecoderError, DecoderHints, DecoderShape};

/// One graph from tokens and features to logits.
pub(super) struct NoCache {
    graph: Graph,
    shape: DecoderShape,
}

impl NoCache {
    /// Checks that `graph` takes tokens and gives logits.
    pub(super) fn new(graph: Graph, hints: &DecoderHints) -> Result<NoCache, DecoderError> {
        graph.require_logits()?;
        let shape = read_shape(&graph, graph.layers(), hints)?;
        Ok(NoCache { graph, shape })
    }
}

impl DecoderKind for NoCache {
    fn shape(&self) -> DecoderShape {
        self.shape
    }

    #[cfg(test)]
    fn graphs(&self) -> Vec<&Graph> {
        vec![&self.graph]
    }

    fn cross_rows(&self) -> CrossRows {
        CrossRows::PerRow
    }

    fn forward(
        &self,
        state: &mut State,
        tokens: &[Vec<u32>],
        times: Option<&mut OpTimes>,
    ) -> Result<Vec<f32>, DecoderError> {
        for (history, new) in state.history.iter_mut().zip(tokens) {
            history.extend_from_slice(new);
        }
        let inputs = state.inputs(&self.graph, &state.history)?;
        let out = self.graph.run(inputs, times)?;
        state.last_logits(&self.graph, &out)
    }

    fn keeps_cross(&self) -> bool {
        false
    }

    fn prompt_graph(&self) -> &Graph {
        &self.graph
    }
}
