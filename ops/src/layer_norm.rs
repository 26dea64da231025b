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
        let mut t = input.into_tensor();
        {
            let mut view = t.try_as_plain_ram_mut()?;
            let x = view.as_slice_mut::<f32>()?;
            layer_norm_rows(x, d, self.eps(), gamma.as_deref(), beta.as_deref());
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
            normalise(row, eps, gamma, beta);
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

#[inline]
fn normalise(row: &mut [f32], eps: f32, gamma: Option<&[f32]>, beta: Option<&[f32]>) {
    let d = row.len() as f64;
    let mean = lane_sum(row, |x| x) / d;
    let var = lane_sum(row, |x| (x - mean) * (x - mean)) / d;
    let rstd = (1.0 / (var + eps as f64).sqrt()) as f32;
    let mean = mean as f32;
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
