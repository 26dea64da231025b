//! What a session holds between forward passes, and how a graph's inputs are made from it.

use std::sync::Arc;

use tract_onnx::prelude::*;

use super::cache::{KvCache, gather_rows};
use super::cache_name::{Attention, CacheName};
use super::graph::{CrossRows, Feed, Graph, OpTimes};
use super::{DecoderError, DecoderShape};

/// One window's decoding state.
pub(super) struct State {
    /// The decoder's shapes.
    pub shape: DecoderShape,
    /// The window's features, `[1, n_audio_ctx, d_model]`.
    pub hidden: Arc<Tensor>,
    /// The cross-attention keys and values: one row for every row when the graph that reads
    /// them broadcasts them ([`CrossRows::One`]), else one (identical) row per row.
    pub cross: Option<KvCache>,
    /// The self-attention keys and values of the tokens decoded so far, one row per row.
    pub past: Option<KvCache>,
    /// Every row's tokens so far (read by graphs without a cache).
    pub history: Vec<Vec<u32>>,
    /// The rows decoded side by side.
    pub rows: usize,
    /// Whether each row decodes a window of its own (a batch of windows): `hidden` and the
    /// cross-attention cache then have a row per row, which move with them.
    pub windows: bool,
    /// Reused by in-place reorders of the caches.
    scratch: Vec<u8>,
}

impl State {
    /// A window with features `hidden` (`[1, n_audio_ctx, d_model]`), one row, nothing decoded.
    pub(super) fn new(shape: DecoderShape, hidden: Arc<Tensor>) -> State {
        State {
            shape,
            hidden,
            cross: None,
            past: None,
            history: vec![Vec::new()],
            rows: 1,
            windows: false,
            scratch: Vec::new(),
        }
    }

    /// A batch of windows with features `hidden` (`[windows, n_audio_ctx, d_model]`), a row
    /// each, nothing decoded.
    pub(super) fn batch(shape: DecoderShape, hidden: Arc<Tensor>) -> State {
        let rows = hidden.shape()[0];
        State {
            rows,
            windows: true,
            history: vec![Vec::new(); rows],
            ..State::new(shape, hidden)
        }
    }

    /// The inputs of `graph` for `tokens` (one row each): the caches that the state holds
    /// (the self-attention's must be set when the graph reads it), the features once per row.
    pub(super) fn inputs(
        &self,
        graph: &Graph,
        tokens: &[Vec<u32>],
    ) -> Result<TVec<TValue>, DecoderError> {
        self.inputs_with_past(graph, tokens, self.past.as_ref())
    }

    /// [`inputs`](State::inputs) with `past` as the self-attention cache.
    pub(super) fn inputs_with_past(
        &self,
        graph: &Graph,
        tokens: &[Vec<u32>],
        past: Option<&KvCache>,
    ) -> Result<TVec<TValue>, DecoderError> {
        let missing = |what: &str| {
            graph.error(
                "building the input",
                anyhow::anyhow!("the session holds no {what} cache"),
            )
        };
        let mut inputs = TVec::new();
        for feed in &graph.io.feeds {
            inputs.push(match *feed {
                Feed::Ids => ids(graph, tokens)?,
                Feed::Hidden => self.hidden_rows(graph)?,
                Feed::Cache(CacheName {
                    layer,
                    attention: Attention::SelfAttention,
                    part,
                }) => past
                    .ok_or_else(|| missing("self-attention"))?
                    .get(layer, part)
                    .clone(),
                Feed::Cache(CacheName {
                    layer,
                    attention: Attention::Cross,
                    part,
                }) => self
                    .cross
                    .as_ref()
                    .ok_or_else(|| missing("cross-attention"))?
                    .get(layer, part)
                    .clone(),
            });
        }
        Ok(inputs)
    }

    /// The features, `[rows, n_audio_ctx, d_model]`.
    fn hidden_rows(&self, graph: &Graph) -> Result<TValue, DecoderError> {
        if self.rows == 1 || self.windows {
            return Ok(self.hidden.clone().into_tvalue());
        }
        gather_rows(&self.hidden, &vec![0; self.rows])
            .map(IntoTValue::into_tvalue)
            .map_err(|e| graph.error("building the input", e))
    }

    /// Runs `tokens` through `graph`, a graph with a self-attention cache in and out, after
    /// the self-attention cache the state holds (an empty one if none); keeps its presents.
    pub(super) fn run_cached(
        &mut self,
        graph: &Graph,
        tokens: &[Vec<u32>],
        times: Option<&mut OpTimes>,
    ) -> Result<Vec<f32>, DecoderError> {
        if self.past.is_none() {
            let head_dim = graph
                .cache_dims(Some(Attention::SelfAttention))
                .map_or(self.shape.d_model / self.shape.n_heads.max(1), |d| d.1);
            let empty =
                KvCache::empty(self.shape.n_layers, self.rows, self.shape.n_heads, head_dim)
                    .map_err(|e| graph.error("building the input", e))?;
            self.past = Some(empty);
        }
        let inputs = self.inputs(graph, tokens)?;
        // The old cache goes before the run, so that its presents do not double it.
        self.past = None;
        let out = graph.run(inputs, times)?;
        self.past = Some(KvCache::from_presents(
            graph,
            &out,
            self.shape.n_layers,
            Attention::SelfAttention,
        ));
        self.last_logits(graph, &out)
    }

    /// Logits of the last position of every row, from the `[rows, seq, n_vocab]` (or `[rows,
    /// n_vocab]`) logits output of `graph`.
    pub(super) fn last_logits(
        &self,
        graph: &Graph,
        out: &TVec<TValue>,
    ) -> Result<Vec<f32>, DecoderError> {
        let logits = &out[graph.io.logits.expect("logits checked at load")];
        let view = logits
            .to_plain_array_view::<f32>()
            .map_err(|e| graph.error("reading the logits", e))?;
        let shape = view.shape().to_vec();
        let n_vocab = *shape.last().unwrap_or(&0);
        let seq = if shape.len() == 3 { shape[1] } else { 1 };
        let mut last = Vec::with_capacity(self.rows * n_vocab);
        for row in 0..self.rows {
            let start = (row * seq + seq - 1) * n_vocab;
            last.extend(view.iter().skip(start).take(n_vocab));
        }
        Ok(last)
    }

    /// Keeps row `source[i]` as row `i`: the self-attention cache is permuted in place when the
    /// number of rows stays; the cross-attention's, when it has a row per row, is only
    /// gathered when their number changes (its rows are all the same), except in a batch of
    /// windows, where the features and the cross-attention cache move with their rows.
    pub(super) fn reorder(&mut self, source: &[usize], cross_rows: CrossRows) -> TractResult<()> {
        anyhow::ensure!(
            source.iter().all(|&s| s < self.rows),
            "rows {source:?} asked of a session of {} rows",
            self.rows
        );
        if let Some(past) = &mut self.past {
            past.reorder(source, &mut self.scratch)?;
        }
        if self.windows {
            // Each row's window goes with it.
            if let Some(cross) = &mut self.cross {
                cross.reorder(source, &mut self.scratch)?;
            }
            self.hidden = Arc::new(gather_rows(&self.hidden, source)?);
        } else if cross_rows == CrossRows::PerRow
            && source.len() != self.rows
            && let Some(cross) = &mut self.cross
        {
            cross.reorder(&vec![0; source.len()], &mut self.scratch)?;
        }
        self.history = source.iter().map(|&s| self.history[s].clone()).collect();
        self.rows = source.len();
        Ok(())
    }
}

/// `tokens` as the `input_ids` of `graph`, `[rows, seq]`.
fn ids(graph: &Graph, tokens: &[Vec<u32>]) -> Result<TValue, DecoderError> {
    let len = tokens.first().map_or(0, Vec::len);
    let flat: Vec<i64> = tokens.iter().flatten().map(|&t| i64::from(t)).collect();
    let t = Tensor::from_shape(&[tokens.len(), len], &flat)
        .and_then(|t| t.cast_to_dt(graph.io.ids_type).map(|t| t.into_owned()))
        .map_err(|e| graph.error("building the input", e))?;
    Ok(t.into_tvalue())
}
