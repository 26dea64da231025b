//! One window's decoding: the public face of [`State`] over a [`DecoderModel`]'s kind.

use std::collections::HashSet;

use tract_onnx::prelude::*;

use super::DecoderError;
use super::DecoderModel;
use super::cache::KvCache;
use super::graph::OpTimes;
use super::state::State;
use crate::model::OpTime;

/// One window's decoding state: the cross-attention keys and values, and per row the
/// self-attention cache of the tokens decoded so far.
///
/// Rows are sequences decoded side by side (beam search, best-of-N). The cross-attention keys
/// and values are held once for all rows when the decoder's graph lets them broadcast (this
/// project's export and optimum's current exports), else once per row.
pub struct DecoderSession<'m> {
    model: &'m DecoderModel,
    pub(super) state: State,
    forwards: usize,
}

/// The bytes of the tensors a session holds, each allocation counted once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct SessionBytes {
    /// The window's features.
    pub features: usize,
    /// The cross-attention keys and values.
    pub cross_attention: usize,
    /// The self-attention keys and values of every row.
    pub self_attention: usize,
}

impl SessionBytes {
    /// Everything together.
    pub fn total(&self) -> usize {
        self.features + self.cross_attention + self.self_attention
    }
}

impl<'m> DecoderSession<'m> {
    /// A session of `model` over features `hidden` (`[1, n_audio_ctx, d_model]`), started.
    pub(super) fn start(
        model: &'m DecoderModel,
        hidden: std::sync::Arc<Tensor>,
    ) -> Result<DecoderSession<'m>, DecoderError> {
        DecoderSession::started(model, State::new(model.shape, hidden))
    }

    /// A session of `model` over a batch of windows' features `hidden` (`[windows,
    /// n_audio_ctx, d_model]`), a row each, started.
    pub(super) fn start_batch(
        model: &'m DecoderModel,
        hidden: std::sync::Arc<Tensor>,
    ) -> Result<DecoderSession<'m>, DecoderError> {
        DecoderSession::started(model, State::batch(model.shape, hidden))
    }

    /// A session of `model` over `state`, which its kind starts.
    fn started(
        model: &'m DecoderModel,
        mut state: State,
    ) -> Result<DecoderSession<'m>, DecoderError> {
        model.kind.start(&mut state)?;
        Ok(DecoderSession {
            model,
            state,
            forwards: 0,
        })
    }

    /// The rows decoded side by side.
    pub fn rows(&self) -> usize {
        self.state.rows
    }

    fn error(&self, stage: &'static str, detail: String) -> DecoderError {
        DecoderError::Tract {
            path: self.model.files.main_file().to_path_buf(),
            stage,
            detail,
        }
    }

    fn run(
        &mut self,
        tokens: &[Vec<u32>],
        times: Option<&mut OpTimes>,
    ) -> Result<Vec<f32>, DecoderError> {
        if tokens.len() != self.state.rows {
            return Err(self.error(
                "building the input",
                format!(
                    "{} rows of tokens for a session of {} rows: give one row of tokens per \
                     row (see reorder)",
                    tokens.len(),
                    self.state.rows
                ),
            ));
        }
        if tokens.iter().any(|t| t.len() != tokens[0].len()) {
            return Err(self.error(
                "building the input",
                "rows of tokens of different lengths: every row takes as many tokens".into(),
            ));
        }
        if self.state.cross.is_none() && self.model.kind.keeps_cross() {
            self.model.kind.start(&mut self.state)?;
        }
        self.forwards += 1;
        self.model.kind.forward(&mut self.state, tokens, times)
    }

    /// Runs `tokens` (one row each, all of one length) after what each row holds; returns
    /// the logits of each row's last position, `[rows * n_vocab]`.
    pub fn forward(&mut self, tokens: &[Vec<u32>]) -> Result<Vec<f32>, DecoderError> {
        self.run(tokens, None)
    }

    /// Like [`forward`](DecoderSession::forward), timing every node of the graphs the pass
    /// runs: where one pass's time goes, per op kind, slowest first.
    pub fn profile(&mut self, tokens: &[Vec<u32>]) -> Result<Vec<OpTime>, DecoderError> {
        let mut times = OpTimes::new();
        self.run(tokens, Some(&mut times))?;
        let mut ops: Vec<OpTime> = times
            .into_iter()
            .map(|(op, (nodes, time))| OpTime { op, nodes, time })
            .collect();
        ops.sort_by_key(|t| std::cmp::Reverse(t.time));
        Ok(ops)
    }

    /// openai-whisper's alignment pass (whisper/timing.py, `find_alignment`): runs `tokens`
    /// as one sequence from an empty cache over the window, and gives the scores of the
    /// cross-attention heads `heads` (layer, head) and the logits of every position. The
    /// session's own tokens are neither read nor changed; it must have one row (a fresh
    /// session, or one [reset](DecoderSession::reset)).
    pub fn cross_scores(
        &mut self,
        tokens: &[u32],
        heads: &[(usize, usize)],
    ) -> Result<super::CrossScores, DecoderError> {
        if self.state.rows != 1 {
            return Err(self.error(
                "building the input",
                format!(
                    "the alignment pass runs one sequence, and the session has {} rows: reset                      it first",
                    self.state.rows
                ),
            ));
        }
        let graph = self.model.alignment_graph(heads)?;
        if self.state.cross.is_none() && self.model.kind.keeps_cross() {
            self.model.kind.start(&mut self.state)?;
        }
        let shape = self.model.shape;
        let head_dim = self
            .model
            .kind
            .prompt_graph()
            .cache_dims(Some(super::cache_name::Attention::SelfAttention))
            .map_or(shape.d_model / shape.n_heads.max(1), |d| d.1);
        let empty = KvCache::empty(shape.n_layers, 1, shape.n_heads, head_dim)
            .map_err(|e| self.error("building the input", format!("{e:#}")))?;
        let inputs = self
            .state
            .inputs_with_past(&graph.graph, &[tokens.to_vec()], Some(&empty))?;
        self.forwards += 1;
        let out = graph.graph.run(inputs, None)?;
        let read = |value: &TValue| -> Result<Vec<f32>, DecoderError> {
            let plain = value
                .try_as_plain_ram()
                .and_then(|p| Ok(p.as_slice::<f32>()?.to_vec()))
                .map_err(|e| graph.graph.error("reading the alignment outputs", e))?;
            Ok(plain)
        };
        let n = tokens.len();
        let frames = shape.n_audio_ctx;
        let logits = read(&out[0])?;
        if logits.len() != n * shape.n_vocab {
            return Err(graph.graph.not_a_decoder(format!(
                "its alignment pass gives {} logits for {n} positions of {} tokens: the graph \
                 computes the logits of fewer positions than it is given, in a way this project \
                 does not undo, so it cannot give word probabilities",
                logits.len(),
                shape.n_vocab
            )));
        }
        let mut by_head = std::collections::HashMap::new();
        for (ix, (layer, kept)) in graph.layers.iter().enumerate() {
            let scores = read(&out[ix + 1])?;
            for (p, &head) in kept.iter().enumerate() {
                by_head.insert(
                    (*layer, head),
                    scores[p * n * frames..(p + 1) * n * frames].to_vec(),
                );
            }
        }
        let scores = heads
            .iter()
            .map(|h| by_head.get(h).cloned().expect("every head has its output"))
            .collect();
        Ok(super::CrossScores {
            tokens: n,
            frames,
            scores,
            logits,
        })
    }

    /// The forward passes run so far (a prompt counts one, as does each later token of all
    /// rows together), resets included.
    pub fn forwards(&self) -> usize {
        self.forwards
    }

    /// Forgets the decoded tokens, keeping the window's cross-attention keys and values when
    /// they came from their own graph: a fresh session for another decoding of the window (of
    /// each window left, in a batch).
    pub fn reset(&mut self) {
        let state = &mut self.state;
        state.past = None;
        if !self.model.kind.keeps_cross() {
            state.cross = None;
        } else if !state.windows
            && let Some(cross) = &mut state.cross
            && cross.rows() != 1
            && cross.reorder(&[0], &mut Vec::new()).is_err()
        {
            // Computed again at the next forward pass.
            state.cross = None;
        }
        if state.windows {
            state.history = vec![Vec::new(); state.rows];
        } else {
            state.history = vec![Vec::new()];
            state.rows = 1;
        }
    }

    /// Keeps row `source[i]` as row `i` of the caches (which may change the number of rows).
    /// The self-attention cache moves in place while the number of rows stays.
    pub fn reorder(&mut self, source: &[usize]) -> Result<(), DecoderError> {
        if source.iter().copied().eq(0..self.state.rows) {
            return Ok(());
        }
        let cross_rows = self.model.kind.cross_rows();
        self.state
            .reorder(source, cross_rows)
            .map_err(|e| self.error("reordering the cache", format!("{e:#}")))
    }

    /// The bytes of the tensors the session holds (what a beam search adds to the model's).
    pub fn held_bytes(&self) -> SessionBytes {
        let mut seen = HashSet::new();
        let mut count = |tensors: &mut dyn Iterator<Item = &Tensor>| -> usize {
            tensors
                .flat_map(super::constants::allocations)
                .filter(|(address, bytes)| *bytes > 0 && seen.insert(*address))
                .map(|(_, bytes)| bytes)
                .sum()
        };
        fn tensors(cache: &Option<KvCache>) -> impl Iterator<Item = &Tensor> {
            cache.iter().flat_map(|c| c.tensors().map(|t| &**t))
        }
        SessionBytes {
            features: count(&mut std::iter::once(&*self.state.hidden)),
            cross_attention: count(&mut tensors(&self.state.cross)),
            self_attention: count(&mut tensors(&self.state.past)),
        }
    }
}

impl crate::transcribe::Session for DecoderSession<'_> {
    fn forward(&mut self, tokens: &[Vec<u32>]) -> Result<Vec<f32>, DecoderError> {
        DecoderSession::forward(self, tokens)
    }

    fn expand(&mut self, n: usize) -> Result<(), DecoderError> {
        self.reorder(&vec![0; n])
    }

    fn reorder(&mut self, source: &[usize]) -> Result<(), DecoderError> {
        DecoderSession::reorder(self, source)
    }
}
