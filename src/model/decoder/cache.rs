//! The keys and values of one attention of every layer, `[rows, heads, positions, head width]`
//! each, and how their rows are reordered.

use std::sync::Arc;

use tract_onnx::prelude::*;

use super::cache_name::{Attention, CacheName, Part};
use super::graph::Graph;

/// Per layer, the keys and the values of one attention (self or cross), rows first.
#[derive(Clone)]
pub(super) struct KvCache {
    layers: Vec<[TValue; 2]>,
}

impl KvCache {
    /// `n_layers` empty caches of `rows` rows: `[rows, heads, 0, head_dim]`.
    pub(super) fn empty(
        n_layers: usize,
        rows: usize,
        heads: usize,
        head_dim: usize,
    ) -> TractResult<KvCache> {
        let empty = Tensor::zero::<f32>(&[rows, heads, 0, head_dim])?.into_tvalue();
        Ok(KvCache {
            layers: (0..n_layers)
                .map(|_| [empty.clone(), empty.clone()])
                .collect(),
        })
    }

    /// The `attention` presents of `n_layers` layers among the outputs `out` of `graph`, which
    /// gives them all (checked when the decoder is loaded).
    pub(super) fn from_presents(
        graph: &Graph,
        out: &TVec<TValue>,
        n_layers: usize,
        attention: Attention,
    ) -> KvCache {
        let at = |layer, part| {
            let name = CacheName {
                layer,
                attention,
                part,
            };
            out[graph.present(name).expect("presents checked at load")].clone()
        };
        KvCache {
            layers: (0..n_layers)
                .map(|layer| [at(layer, Part::Key), at(layer, Part::Value)])
                .collect(),
        }
    }

    /// The keys or values of `layer`.
    pub(super) fn get(&self, layer: usize, part: Part) -> &TValue {
        &self.layers[layer][part.index()]
    }

    /// The rows of every tensor.
    pub(super) fn rows(&self) -> usize {
        self.layers
            .first()
            .and_then(|[k, _]| k.shape().first().copied())
            .unwrap_or(0)
    }

    /// Every tensor, to replace.
    #[cfg(test)]
    pub(super) fn slots_mut(&mut self) -> impl Iterator<Item = &mut TValue> {
        self.layers.iter_mut().flatten()
    }

    /// Every tensor.
    pub(super) fn tensors(&self) -> impl Iterator<Item = &TValue> {
        self.layers.iter().flatten()
    }

    /// Keeps row `source[i]` as row `i` of every tensor. When the number of rows stays, the
    /// rows move within each tensor, through `scratch` for the rows that are both read and
    /// overwritten (no allocation once `scratch` has grown to that size; a tensor that is
    /// shared with another owner is copied first); otherwise each tensor is gathered anew.
    pub(super) fn reorder(&mut self, source: &[usize], scratch: &mut Vec<u8>) -> TractResult<()> {
        let placeholder = Tensor::zero::<f32>(&[0])?.into_tvalue();
        for pair in &mut self.layers {
            for slot in pair.iter_mut() {
                reorder_rows(slot, source, scratch, &placeholder)?;
            }
        }
        Ok(())
    }
}

/// Replaces `slot` by its rows `source`: in place when their number does not change (and the
/// tensor has no other owner), else in a new tensor. `placeholder` stands in `slot` meanwhile.
fn reorder_rows(
    slot: &mut TValue,
    source: &[usize],
    scratch: &mut Vec<u8>,
    placeholder: &TValue,
) -> TractResult<()> {
    let rows = slot.shape().first().copied().unwrap_or(0);
    anyhow::ensure!(
        source.iter().all(|&s| s < rows),
        "rows {source:?} asked of a cache of {rows} rows"
    );
    if source.len() != rows {
        *slot = gather_rows(slot, source)?.into_tvalue();
        return Ok(());
    }
    if source.iter().copied().eq(0..rows) {
        return Ok(());
    }
    let mut tensor = std::mem::replace(slot, placeholder.clone()).into_arc_tensor();
    let result = permute_rows(Arc::make_mut(&mut tensor), source, scratch);
    *slot = TValue::from_const(tensor);
    result
}

/// Row `source[i]` of `t` as row `i`, for as many rows as `t` has, moving bytes within `t`.
fn permute_rows(t: &mut Tensor, source: &[usize], scratch: &mut Vec<u8>) -> TractResult<()> {
    let rows = source.len();
    let mut plain = t.try_as_plain_ram_mut()?;
    let data = plain.as_bytes_mut();
    let row = data.len().checked_div(rows).unwrap_or(0);
    // A row must be saved when another row reads it and it is itself overwritten.
    let overwritten = |r: usize| source[r] != r;
    let mut saved: Vec<Option<usize>> = vec![None; rows];
    scratch.clear();
    for (i, &s) in source.iter().enumerate() {
        if s != i && overwritten(s) && saved[s].is_none() {
            saved[s] = Some(scratch.len());
            scratch.extend_from_slice(&data[s * row..(s + 1) * row]);
        }
    }
    for (i, &s) in source.iter().enumerate() {
        if s == i {
            continue;
        }
        match saved[s] {
            Some(at) => data[i * row..(i + 1) * row].copy_from_slice(&scratch[at..at + row]),
            None => data.copy_within(s * row..(s + 1) * row, i * row),
        }
    }
    Ok(())
}

/// The rows `source` of `t` along its first axis, in that order, in a new tensor.
pub(super) fn gather_rows(t: &Tensor, source: &[usize]) -> TractResult<Tensor> {
    let rows = t.shape().first().copied().unwrap_or(0);
    let mut shape: TVec<usize> = t.shape().into();
    shape[0] = source.len();
    let plain = t.try_as_plain_ram()?;
    let data = plain.as_bytes();
    let row = data.len().checked_div(rows).unwrap_or(0);
    let mut out = Tensor::zero_dt(t.datum_type(), &shape)?;
    {
        let mut out_plain = out.try_as_plain_ram_mut()?;
        let out_data = out_plain.as_bytes_mut();
        for (i, &s) in source.iter().enumerate() {
            out_data[i * row..(i + 1) * row].copy_from_slice(&data[s * row..(s + 1) * row]);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placeholder() -> TValue {
        Tensor::zero::<f32>(&[0]).unwrap().into_tvalue()
    }

    fn numbered(rows: usize, per_row: usize) -> Tensor {
        let data: Vec<f32> = (0..rows * per_row).map(|x| x as f32).collect();
        Tensor::from_shape(&[rows, 1, per_row, 1], &data).unwrap()
    }

    /// Every reordering of 4 rows, repeats included, in place against a fresh gather; the
    /// tensor keeps its buffer.
    #[test]
    fn permuting_in_place_matches_a_gather_and_keeps_the_buffer() {
        let rows: usize = 4;
        let mut scratch = Vec::new();
        for code in 0..rows.pow(rows as u32) {
            let source: Vec<usize> = (0..rows)
                .map(|i| code / rows.pow(i as u32) % rows)
                .collect();
            let t = numbered(rows, 3);
            let want = gather_rows(&t, &source).unwrap();
            let mut slot = t.into_tvalue();
            let before = slot.as_bytes().as_ptr();
            reorder_rows(&mut slot, &source, &mut scratch, &placeholder()).unwrap();
            assert_eq!(*slot, want, "{source:?}");
            assert_eq!(slot.as_bytes().as_ptr(), before, "{source:?} reallocated");
        }
    }

    #[test]
    fn a_shared_tensor_is_left_alone_and_other_counts_gather() {
        let mut scratch = Vec::new();
        let t = numbered(3, 2).into_tvalue();
        let mut slot = t.clone();
        reorder_rows(&mut slot, &[2, 0, 1], &mut scratch, &placeholder()).unwrap();
        assert_eq!(*t, numbered(3, 2), "the other owner's tensor changed");
        assert_eq!(*slot, gather_rows(&t, &[2, 0, 1]).unwrap());
        reorder_rows(&mut slot, &[1, 1, 1, 1, 0], &mut scratch, &placeholder()).unwrap();
        assert_eq!(slot.shape(), &[5, 1, 2, 1]);
        assert_eq!(*slot, gather_rows(&t, &[0, 0, 0, 0, 2]).unwrap());
        assert!(reorder_rows(&mut slot, &[5], &mut scratch, &placeholder()).is_err());
    }
}
