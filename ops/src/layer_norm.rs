//! `CpuLayerNorm`: LayerNorm over the last axis in one fused pass per row.

use std::sync::Arc;

use tract_core::internal::*;

/// Lanes of the row reductions: sums are kept in this many partial sums, combined at the end
/// of the row, which lets the compiler vectorise them.
const LANES: usize = 8;

/// Rows handed to one task: enough to amortise a task, few enough to balance the cores.
const ROWS_PER_TASK: usize = 16;

/// LayerNorm over the last axis of a float32 tensor:
/// `y = (x - mean(x)) / sqrt(var(x) + eps) * gamma + beta`, with the biased variance.
///
/// The mean and the variance of the centred values are accumulated in float64: Whisper's
/// residual stream has outlier channels, and on out-of-distribution input (white noise) a
/// float32 accumulation moved tiny.en's output by 2e-3 after four layers; with float64 it
/// stays within 1e-3 of PyTorch, as tract's own plan does.
///
/// One pass per row computes the mean, a second the variance of the centred values, a third
/// writes the result: the row stays in the L1 cache, where tract's decomposed form (Reduce,
/// Mul, Sub, RmsNorm, Mul, Add) walks the whole tensor six times. Rows are spread over
/// rayon's current pool.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CpuLayerNorm {
    /// Added to the variance.
    pub eps: u32,
    /// The scale, one value per column, if any.
    pub gamma: Option<Arc<Vec<u32>>>,
    /// The shift, one value per column, if any.
    pub beta: Option<Arc<Vec<u32>>>,
}

fn bits(v: &[f32]) -> Arc<Vec<u32>> {
    Arc::new(v.iter().map(|x| x.to_bits()).collect())
}

fn floats(v: &[u32]) -> Vec<f32> {
    v.iter().map(|&b| f32::from_bits(b)).collect()
}

impl CpuLayerNorm {
    /// A LayerNorm with `eps` and optional per-column `gamma` and `beta`.
    pub fn new(eps: f32, gamma: Option<&[f32]>, beta: Option<&[f32]>) -> CpuLayerNorm {
        CpuLayerNorm {
            eps: eps.to_bits(),
            gamma: gamma.map(bits),
            beta: beta.map(bits),
        }
    }

    /// The epsilon.
    pub fn eps(&self) -> f32 {
        f32::from_bits(self.eps)
    }
}

impl Op for CpuLayerNorm {
    fn name(&self) -> StaticName {
        "CpuLayerNorm".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "eps: {:e}, gamma: {}, beta: {}",
            self.eps(),
            self.gamma.is_some(),
            self.beta.is_some()
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for CpuLayerNorm {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let d = *input.shape().last().context("LayerNorm of a scalar")?;
        let gamma = self.gamma.as_deref().map(|g| floats(g));
        let beta = self.beta.as_deref().map(|b| floats(b));
        for (name, v) in [("gamma", &gamma), ("beta", &beta)] {
            if let Some(v) = v {
                ensure!(v.len() == d, "{name} has {} values, rows have {d}", v.len());
            }
        }
        // Out of place: the input is the residual stream, which its addition reads again
        // after this op, so writing in place would cost a copy of it first.
        let x = input.try_as_plain_ram()?.as_slice::<f32>()?;
        // SAFETY: every value is written below, row by row.
        let mut t = unsafe { Tensor::uninitialized::<f32>(input.shape())? };
        {
            let mut view = t.try_as_plain_ram_mut()?;
            let out = view.as_slice_mut::<f32>()?;
            layer_norm_rows_into(x, out, d, self.eps(), gamma.as_deref(), beta.as_deref());
        }
        Ok(tvec!(t.into_tvalue()))
    }

    op_out_of_plan!();
}

impl TypedOp for CpuLayerNorm {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs[0].datum_type == f32::datum_type());
        ensure!(inputs[0].rank() > 0);
        Ok(tvec!(f32::fact(inputs[0].shape.clone())))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let count: TDim = inputs[0].shape.iter().product();
        Ok(tvec!((Cost::FMA(f32::datum_type()), count * 4)))
    }

    as_op!();
}

/// LayerNorm of every row of `x` (`d` values a row), in place: see [`CpuLayerNorm`].
pub fn layer_norm_rows(
    x: &mut [f32],
    d: usize,
    eps: f32,
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
) {
    use rayon::prelude::*;
    if d == 0 {
        return;
    }
    x.par_chunks_mut(d * ROWS_PER_TASK).for_each(|rows| {
        for row in rows.chunks_mut(d) {
            let (mean, rstd) = moments(row, eps);
            normalise(row, mean, rstd, gamma, beta);
        }
    });
}

/// [`layer_norm_rows`] of `x` into `out` (the same length): the same values.
pub fn layer_norm_rows_into(
    x: &[f32],
    out: &mut [f32],
    d: usize,
    eps: f32,
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
) {
    use rayon::prelude::*;
    assert_eq!(x.len(), out.len(), "the output holds the input's values");
    if d == 0 {
        return;
    }
    out.par_chunks_mut(d * ROWS_PER_TASK)
        .zip(x.par_chunks(d * ROWS_PER_TASK))
        .for_each(|(out, x)| {
            for (o, row) in out.chunks_mut(d).zip(x.chunks(d)) {
                let (mean, rstd) = moments(row, eps);
                o.copy_from_slice(row);
                normalise(o, mean, rstd, gamma, beta);
            }
        });
}

/// The sum of `f(x)` over the row, in float64, in [`LANES`] partial sums.
#[inline(always)]
fn lane_sum(row: &[f32], f: impl Fn(f64) -> f64) -> f64 {
    let mut acc = [0f64; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(chunk) {
            *a += f(x as f64);
        }
    }
    for (a, &x) in acc.iter_mut().zip(chunks.remainder()) {
        *a += f(x as f64);
    }
    acc.iter().sum()
}

/// The row's mean and `1 / sqrt(variance + eps)`, both accumulated in float64.
#[inline]
fn moments(row: &[f32], eps: f32) -> (f32, f32) {
    let d = row.len() as f64;
    let mean = lane_sum(row, |x| x) / d;
    let var = lane_sum(row, |x| (x - mean) * (x - mean)) / d;
    ((mean as f32), (1.0 / (var + eps as f64).sqrt()) as f32)
}

#[inline]
fn normalise(row: &mut [f32], mean: f32, rstd: f32, gamma: Option<&[f32]>, beta: Option<&[f32]>) {
    match (gamma, beta) {
        (Some(g), Some(b)) => {
            for ((x, g), b) in row.iter_mut().zip(g).zip(b) {
                *x = (*x - mean) * rstd * g + b;
            }
        }
        (Some(g), None) => {
            for (x, g) in row.iter_mut().zip(g) {
                *x = (*x - mean) * rstd * g;
            }
        }
        (None, Some(b)) => {
            for (x, b) in row.iter_mut().zip(b) {
                *x = (*x - mean) * rstd + b;
            }
        }
        (None, None) => {
            for x in row.iter_mut() {
                *x = (*x - mean) * rstd;
            }
        }
    }
}
