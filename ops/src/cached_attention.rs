//! `CachedAttention` (displayed `CpuCachedAttention`): `softmax(Q K^T + mask) V` in one pass per query row, on the CPU.

use rayon::prelude::*;
use tract_core::internal::*;

/// Where the axes of one operand are: its batch axes (in the scores' order), the axis of its
/// rows (queries or keys) and the axis of its depth, which is its last.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AttentionAxes {
    /// Position of each batch axis, in the order of the scores' batch axes.
    pub batch: TVec<usize>,
    /// Position of the rows axis.
    pub rows: usize,
}

/// `softmax(Q K^T + mask) V` over the last axis of the scores, for every batch index (heads
/// and sequences) and query row: the scores of one row are computed, normalised and used at
/// once, so that the `[.., queries, keys]` scores and probabilities are never tensors and
/// neither K nor V is repacked at each call, which is what tract's two products cost when Q
/// has a few rows: a decoder's step attends with one query to 1500 cached keys.
///
/// Inputs: Q `[.., m, d]`, K `[.., n, d]`, V `[.., n, dv]` (depth last, batch axes anywhere
/// else as [`AttentionAxes`] says), and optionally an additive mask laid out as the scores
/// (`scores` axes), each of its axes either 1 or the scores'. Output: `[.., m, dv]` in the
/// layout `out` says. Any scale is in Q already. With `nan_to_zero`, a row whose keys are
/// all masked gives zeros (the `IsNaN`/`Where` some exporters put after the softmax) instead
/// of NaN.
///
/// With `keep_scores` not empty, a second output holds the scores `Q K^T + mask` (before the
/// softmax) of the batch indices it lists (flattened in the scores' batch order: the heads,
/// for one sequence), `[keep_scores.len(), m, n]`: the cross-attention weights that word
/// timestamps align with.
///
/// Numerics: float32 dot products and sums (vectorised, their order differs from tract's
/// products), `exp` of the standard library.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CachedAttention {
    /// Q's axes.
    pub q: AttentionAxes,
    /// K's axes.
    pub k: AttentionAxes,
    /// V's axes.
    pub v: AttentionAxes,
    /// The output's axes.
    pub out: AttentionAxes,
    /// The scores' axes (where the mask's are): batch, queries; keys are last.
    pub scores: AttentionAxes,
    /// Whether an input mask follows V.
    pub masked: bool,
    /// Whether a fully masked row gives zeros rather than NaN.
    pub nan_to_zero: bool,
    /// The flattened batch indices whose scores are a second output (none: no second output).
    pub keep_scores: TVec<usize>,
}

impl Op for CachedAttention {
    fn name(&self) -> StaticName {
        "CpuCachedAttention".into()
    }

    op_as_typed_op!();
}

/// Element strides of a contiguous tensor of `shape`, 0 on axes of size 1 (broadcast).
fn strides(shape: &[usize]) -> TVec<usize> {
    let mut s: TVec<usize> = tvec![0; shape.len()];
    let mut acc = 1;
    for (i, &d) in shape.iter().enumerate().rev() {
        s[i] = if d == 1 { 0 } else { acc };
        acc *= d;
    }
    s
}

/// Offsets of one operand for every flattened batch index.
fn batch_offsets(dims: &[usize], axes: &[usize], shape: &[usize]) -> Vec<usize> {
    let st = strides(shape);
    let total: usize = dims.iter().product();
    let mut out = Vec::with_capacity(total);
    for flat in 0..total {
        let mut rest = flat;
        let mut off = 0;
        for (b, &dim) in dims.iter().enumerate().rev() {
            let i = rest % dim;
            rest /= dim;
            let axis = axes[b];
            if shape[axis] != 1 {
                off += i * st[axis];
            }
        }
        out.push(off);
    }
    out
}

impl EvalOp for CachedAttention {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        ensure!(inputs.len() == 3 + self.masked as usize);
        let (q, k, v) = (&inputs[0], &inputs[1], &inputs[2]);
        let (qs, ks, vs) = (q.shape(), k.shape(), v.shape());
        let m = qs[self.q.rows];
        let d = *qs.last().context("Q has rank 0")?;
        let n = ks[self.k.rows];
        let dv = *vs.last().context("V has rank 0")?;
        ensure!(
            ks.last() == Some(&d) && vs[self.v.rows] == n,
            "attention shapes {qs:?} {ks:?} {vs:?}"
        );
        let batch: TVec<usize> = self
            .q
            .batch
            .iter()
            .zip(&self.k.batch)
            .zip(&self.v.batch)
            .map(|((&a, &b), &c)| qs[a].max(ks[b]).max(vs[c]))
            .collect();
        let mut out_shape: TVec<usize> = tvec![0; self.out.batch.len() + 2];
        for (&axis, &dim) in self.out.batch.iter().zip(&batch) {
            out_shape[axis] = dim;
        }
        out_shape[self.out.rows] = m;
        *out_shape.last_mut().unwrap() = dv;
        let mut output = Tensor::zero::<f32>(&out_shape)?;
        let total: usize = batch.iter().product();
        ensure!(
            self.keep_scores.iter().all(|&b| b < total),
            "scores of batch indices {:?} asked of {total}",
            self.keep_scores
        );
        let mut kept = Tensor::zero::<f32>(&[self.keep_scores.len(), m, n])?;
        // Where each batch index's scores go in `kept`, if anywhere.
        let mut kept_at = vec![None; total];
        for (p, &b) in self.keep_scores.iter().enumerate() {
            kept_at[b] = Some(p);
        }
        let outputs = |output: Tensor, kept: Tensor| {
            if self.keep_scores.is_empty() {
                tvec!(output.into_tvalue())
            } else {
                tvec!(output.into_tvalue(), kept.into_tvalue())
            }
        };
        if m == 0 || dv == 0 || batch.contains(&0) {
            return Ok(outputs(output, kept));
        }
        let q_plain = q.try_as_plain_ram()?;
        let k_plain = k.try_as_plain_ram()?;
        let v_plain = v.try_as_plain_ram()?;
        let (qd, kd, vd) = (
            q_plain.as_slice::<f32>()?,
            k_plain.as_slice::<f32>()?,
            v_plain.as_slice::<f32>()?,
        );
        let mask_plain = if self.masked {
            Some(inputs[3].try_as_plain_ram()?)
        } else {
            None
        };
        let mask = match &mask_plain {
            Some(p) => Some((p.as_slice::<f32>()?, inputs[3].shape())),
            None => None,
        };
        let q_off = batch_offsets(&batch, &self.q.batch, qs);
        let k_off = batch_offsets(&batch, &self.k.batch, ks);
        let v_off = batch_offsets(&batch, &self.v.batch, vs);
        let o_off = batch_offsets(&batch, &self.out.batch, &out_shape);
        let (q_row, k_row, v_row) = (
            strides(qs)[self.q.rows].max(d),
            strides(ks)[self.k.rows].max(d),
            strides(vs)[self.v.rows].max(dv),
        );
        let o_row = strides(&out_shape)[self.out.rows].max(dv);
        let mask_layout = mask.map(|(data, shape)| {
            let st = strides(shape);
            let offs = batch_offsets(&batch, &self.scores.batch, shape);
            let row = st[self.scores.rows];
            let col = *st.last().unwrap();
            (data, offs, row, col)
        });

        {
            let mut out_plain = output.try_as_plain_ram_mut()?;
            let od = out_plain.as_slice_mut::<f32>()?;
            let mut kept_plain = kept.try_as_plain_ram_mut()?;
            let kept_ptr = SendPtr(kept_plain.as_slice_mut::<f32>()?.as_mut_ptr());
            // One task per batch index; each writes its own output rows.
            let tasks: Vec<usize> = (0..q_off.len()).collect();
            let out_ptr = SendPtr(od.as_mut_ptr());
            let out_len = od.len();
            let work = |b: usize| {
                let mut scores = vec![0.0f32; n];
                let mut acc = vec![0.0f32; dv];
                for i in 0..m {
                    let qr = &qd[q_off[b] + i * q_row..][..d];
                    let keys = &kd[k_off[b]..];
                    let mask_row = mask_layout
                        .as_ref()
                        .map(|(data, offs, row, col)| (&data[offs[b] + i * row..], *col));
                    let max = kernels::scores(qr, keys, k_row, mask_row, &mut scores);
                    if let Some(p) = kept_at[b] {
                        // SAFETY: row `i` of kept batch `p` is this task's alone (each batch
                        // index is kept at most once); `kept` is `[kept, m, n]`.
                        let row = unsafe {
                            std::slice::from_raw_parts_mut(kept_ptr.get().add((p * m + i) * n), n)
                        };
                        row.copy_from_slice(&scores);
                    }
                    // SAFETY: each task writes only the rows of its own batch index, which do not
                    // overlap; the buffer outlives the parallel loop.
                    let orow = unsafe {
                        std::slice::from_raw_parts_mut(out_ptr.get().add(o_off[b] + i * o_row), dv)
                    };
                    debug_assert!(o_off[b] + i * o_row + dv <= out_len);
                    if max == f32::NEG_INFINITY || max.is_nan() {
                        orow.fill(if self.nan_to_zero { 0.0 } else { f32::NAN });
                        continue;
                    }
                    let sum = kernels::exp_sum(&mut scores, max);
                    kernels::weighted_rows(&scores, &vd[v_off[b]..], v_row, &mut acc);
                    let inv = 1.0 / sum;
                    for (o, a) in orow.iter_mut().zip(&acc) {
                        *o = a * inv;
                    }
                }
            };
            if tasks.len() > 1 && m * n * (d + dv) >= 1 << 16 {
                tasks.into_par_iter().for_each(work);
            } else {
                tasks.into_iter().for_each(work);
            }
        }
        Ok(outputs(output, kept))
    }

    op_out_of_plan!();
}

/// A pointer that tasks writing disjoint rows may share.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: the tasks that share it write disjoint ranges (see `eval`).
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}

impl SendPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

impl TypedOp for CachedAttention {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 3 + self.masked as usize);
        ensure!(inputs.iter().all(|f| f.datum_type == f32::datum_type()));
        let (q, k, v) = (&inputs[0].shape, &inputs[1].shape, &inputs[2].shape);
        let mut shape: TVec<TDim> = tvec![TDim::from(0); self.out.batch.len() + 2];
        for (b, &axis) in self.out.batch.iter().enumerate() {
            let dims = [
                &q[self.q.batch[b]],
                &k[self.k.batch[b]],
                &v[self.v.batch[b]],
            ];
            shape[axis] = dims
                .iter()
                .find(|d| !d.is_one())
                .map(|d| (*d).clone())
                .unwrap_or_else(|| TDim::from(1));
        }
        shape[self.out.rows] = q[self.q.rows].clone();
        *shape.last_mut().unwrap() = v[v.len() - 1].clone();
        let mut facts = tvec!(f32::fact(shape));
        if !self.keep_scores.is_empty() {
            facts.push(f32::fact([
                TDim::from(self.keep_scores.len()),
                q[self.q.rows].clone(),
                k[self.k.rows].clone(),
            ]));
        }
        Ok(facts)
    }

    as_op!();
}

/// The inner loops, compiled for AVX2 with FMA and for the baseline, chosen at run time.
mod kernels {
    const LANES: usize = 16;

    #[cfg(target_arch = "x86_64")]
    fn fma() -> bool {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }

    /// `scores[j] = q . keys[j * stride ..][..d] (+ mask[j * col])`; returns their maximum.
    pub fn scores(
        q: &[f32],
        keys: &[f32],
        stride: usize,
        mask: Option<(&[f32], usize)>,
        scores: &mut [f32],
    ) -> f32 {
        #[cfg(target_arch = "x86_64")]
        if fma() {
            // SAFETY: the CPU supports AVX2 and FMA, checked just above.
            return unsafe { scores_fma(q, keys, stride, mask, scores) };
        }
        scores_body(q, keys, stride, mask, scores)
    }

    /// `s = exp(s - max)` in place; returns their sum.
    pub fn exp_sum(scores: &mut [f32], max: f32) -> f32 {
        #[cfg(target_arch = "x86_64")]
        if fma() {
            // SAFETY: the CPU supports AVX2 and FMA, checked just above.
            return unsafe { exp_sum_fma(scores, max) };
        }
        exp_sum_body(scores, max)
    }

    /// `acc = sum_j p[j] rows[j * stride ..][..acc.len()]`.
    pub fn weighted_rows(p: &[f32], rows: &[f32], stride: usize, acc: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if fma() {
            // SAFETY: the CPU supports AVX2 and FMA, checked just above.
            return unsafe { weighted_rows_fma(p, rows, stride, acc) };
        }
        weighted_rows_body(p, rows, stride, acc)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn scores_fma(
        q: &[f32],
        keys: &[f32],
        stride: usize,
        mask: Option<(&[f32], usize)>,
        scores: &mut [f32],
    ) -> f32 {
        scores_body(q, keys, stride, mask, scores)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn exp_sum_fma(scores: &mut [f32], max: f32) -> f32 {
        exp_sum_body(scores, max)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn weighted_rows_fma(p: &[f32], rows: &[f32], stride: usize, acc: &mut [f32]) {
        weighted_rows_body(p, rows, stride, acc)
    }

    #[inline(always)]
    fn dot(a: &[f32], b: &[f32]) -> f32 {
        let mut lanes = [0.0f32; LANES];
        let chunks = a.len() / LANES;
        for c in 0..chunks {
            let (x, y) = (&a[c * LANES..][..LANES], &b[c * LANES..][..LANES]);
            for l in 0..LANES {
                lanes[l] = x[l].mul_add(y[l], lanes[l]);
            }
        }
        let mut sum = lanes.iter().sum::<f32>();
        for i in chunks * LANES..a.len() {
            sum = a[i].mul_add(b[i], sum);
        }
        sum
    }

    #[inline(always)]
    fn scores_body(
        q: &[f32],
        keys: &[f32],
        stride: usize,
        mask: Option<(&[f32], usize)>,
        scores: &mut [f32],
    ) -> f32 {
        let d = q.len();
        let mut max = f32::NEG_INFINITY;
        for (j, s) in scores.iter_mut().enumerate() {
            let mut v = dot(q, &keys[j * stride..][..d]);
            if let Some((mask, col)) = mask {
                v += mask[j * col];
            }
            *s = v;
            max = if v > max { v } else { max };
        }
        max
    }

    #[inline(always)]
    fn exp_sum_body(scores: &mut [f32], max: f32) -> f32 {
        let mut lanes = [0.0f32; LANES];
        let mut chunks = scores.chunks_exact_mut(LANES);
        for chunk in &mut chunks {
            for (l, s) in lanes.iter_mut().zip(chunk.iter_mut()) {
                *s = amanuensis_kernels::cpu_math::exp(*s - max);
                *l += *s;
            }
        }
        let mut sum = lanes.iter().sum::<f32>();
        for s in chunks.into_remainder() {
            *s = amanuensis_kernels::cpu_math::exp(*s - max);
            sum += *s;
        }
        sum
    }

    #[inline(always)]
    fn weighted_rows_body(p: &[f32], rows: &[f32], stride: usize, acc: &mut [f32]) {
        let dv = acc.len();
        acc.fill(0.0);
        for (j, &w) in p.iter().enumerate() {
            for (a, &v) in acc.iter_mut().zip(&rows[j * stride..][..dv]) {
                *a = w.mul_add(v, *a);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plain reference over `[h, m, d]`, `[h, n, d]`, `[h, n, dv]` in f64.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        h: usize,
        m: usize,
        n: usize,
        d: usize,
        dv: usize,
        causal: bool,
    ) -> Vec<f32> {
        let mut out = vec![0.0f32; h * m * dv];
        for b in 0..h {
            for i in 0..m {
                let visible = if causal { n - m + i + 1 } else { n };
                let s: Vec<f64> = (0..visible)
                    .map(|j| {
                        (0..d)
                            .map(|c| q[(b * m + i) * d + c] as f64 * k[(b * n + j) * d + c] as f64)
                            .sum()
                    })
                    .collect();
                let max = s.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = s.iter().map(|x| (x - max).exp()).collect();
                let sum: f64 = e.iter().sum();
                for c in 0..dv {
                    out[(b * m + i) * dv + c] = ((0..visible)
                        .map(|j| e[j] * v[(b * n + j) * dv + c] as f64)
                        .sum::<f64>()
                        / sum) as f32;
                }
            }
        }
        out
    }

    fn values(len: usize, seed: u32) -> Vec<f32> {
        let mut x = seed;
        (0..len)
            .map(|_| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (x >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
            })
            .collect()
    }

    fn canonical(masked: bool) -> CachedAttention {
        let axes = AttentionAxes {
            batch: tvec![0],
            rows: 1,
        };
        CachedAttention {
            q: axes.clone(),
            k: axes.clone(),
            v: axes.clone(),
            out: axes.clone(),
            scores: axes,
            masked,
            nan_to_zero: true,
            keep_scores: tvec![],
        }
    }

    #[test]
    fn matches_a_plain_reference_with_and_without_a_causal_mask() {
        let (h, m, n, d, dv) = (3, 5, 37, 64, 40);
        let q = values(h * m * d, 1);
        let k = values(h * n * d, 2);
        let v = values(h * n * dv, 3);
        let t =
            |data: &[f32], shape: &[usize]| Tensor::from_shape(shape, data).unwrap().into_tvalue();
        let ctx = EvalContext::out_of_plan();
        let assert_close = |got: &TValue, want: &[f32]| {
            let got = got.try_as_plain_ram().unwrap().as_slice::<f32>().unwrap();
            let err = got
                .iter()
                .zip(want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(err < 1e-5, "{err}");
        };
        let out = canonical(false)
            .eval(
                &ctx,
                tvec![t(&q, &[h, m, d]), t(&k, &[h, n, d]), t(&v, &[h, n, dv])],
            )
            .unwrap();
        let want = reference(&q, &k, &v, h, m, n, d, dv, false);
        assert_close(&out[0], &want);

        let mask: Vec<f32> = (0..m * n)
            .map(|x| {
                if x % n > n - m + x / n {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
            .collect();
        let out = canonical(true)
            .eval(
                &ctx,
                tvec![
                    t(&q, &[h, m, d]),
                    t(&k, &[h, n, d]),
                    t(&v, &[h, n, dv]),
                    t(&mask, &[1, m, n])
                ],
            )
            .unwrap();
        let want = reference(&q, &k, &v, h, m, n, d, dv, true);
        assert_close(&out[0], &want);
    }

    #[test]
    fn keeps_the_scores_of_the_batch_indices_asked() {
        let (h, m, n, d) = (3, 4, 29, 64);
        let q = values(h * m * d, 4);
        let k = values(h * n * d, 5);
        let v = values(h * n * d, 6);
        let t =
            |data: &[f32], shape: &[usize]| Tensor::from_shape(shape, data).unwrap().into_tvalue();
        let op = CachedAttention {
            keep_scores: tvec![2, 0],
            ..canonical(false)
        };
        let inputs = tvec![t(&q, &[h, m, d]), t(&k, &[h, n, d]), t(&v, &[h, n, d])];
        let out = op.eval(&EvalContext::out_of_plan(), inputs).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].shape(), &[2, m, n]);
        let kept = out[1].try_as_plain_ram().unwrap();
        let kept = kept.as_slice::<f32>().unwrap();
        let mut err = 0.0f64;
        for (p, &b) in [2usize, 0].iter().enumerate() {
            for i in 0..m {
                for j in 0..n {
                    let want: f64 = (0..d)
                        .map(|c| q[(b * m + i) * d + c] as f64 * k[(b * n + j) * d + c] as f64)
                        .sum();
                    err = err.max((kept[(p * m + i) * n + j] as f64 - want).abs());
                }
            }
        }
        // 64 products of values in [-1, 1] summed in float32: a few ulps of sums up to ~8.
        assert!(err < 1e-5, "{err}");
        // The first output is unchanged by keeping scores.
        let inputs = tvec![t(&q, &[h, m, d]), t(&k, &[h, n, d]), t(&v, &[h, n, d])];
        let plain = canonical(false)
            .eval(&EvalContext::out_of_plan(), inputs)
            .unwrap();
        assert_eq!(
            plain[0]
                .try_as_plain_ram()
                .unwrap()
                .as_slice::<f32>()
                .unwrap(),
            out[0]
                .try_as_plain_ram()
                .unwrap()
                .as_slice::<f32>()
                .unwrap()
        );
    }
}
