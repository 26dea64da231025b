//! `CpuLinear`: `x @ W (+ b)` (then GELU) over the last axes of `x`, for any number of rows,
//! with `W` packed once.

use std::fmt;
use std::sync::Arc;

use amanuensis_kernels::low_precision::{LowPrecisionB, WeightPrecision, gemv_low_precision};
use amanuensis_kernels::packed_gemm::{PackedB, gemm_f32, gemv_f32};
use tract_core::internal::*;

/// A linear layer's weights, packed for the CPU's micro-kernels (or held in bfloat16 or int8),
/// and its bias.
pub struct LinearWeights {
    held: Held,
    bias: Option<Vec<f32>>,
}

enum Held {
    F32(PackedB),
    Low(LowPrecisionB),
}

impl LinearWeights {
    /// Packs `w` (`[k, n]`, row-major; `[n, k]` when `transposed`) and keeps `bias` (`n`
    /// values).
    pub fn new(
        w: &[f32],
        k: usize,
        n: usize,
        transposed: bool,
        bias: Option<Vec<f32>>,
    ) -> LinearWeights {
        LinearWeights::with_precision(w, k, n, transposed, bias, WeightPrecision::F32)
    }

    /// [`new`](LinearWeights::new), the weights held as `precision` says
    /// ([`amanuensis_kernels::low_precision`]).
    pub fn with_precision(
        w: &[f32],
        k: usize,
        n: usize,
        transposed: bool,
        bias: Option<Vec<f32>>,
        precision: WeightPrecision,
    ) -> LinearWeights {
        let held = match LowPrecisionB::new(w, k, n, transposed, precision) {
            Some(low) => Held::Low(low),
            None if transposed => Held::F32(PackedB::plain_transposed(w, k, n)),
            None => Held::F32(PackedB::plain(w, k, n)),
        };
        LinearWeights { held, bias }
    }

    /// Rows of the weights (the reduction) and columns (the outputs).
    pub fn shape(&self) -> (usize, usize) {
        match &self.held {
            Held::F32(p) => (p.k(), p.n()),
            Held::Low(l) => (l.k(), l.n()),
        }
    }

    /// How the weights are held.
    pub fn precision(&self) -> WeightPrecision {
        match &self.held {
            Held::F32(_) => WeightPrecision::F32,
            Held::Low(l) => l.precision(),
        }
    }
}

impl fmt::Debug for LinearWeights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (k, n) = self.shape();
        write!(
            f,
            "[{k}x{n}]{}{}",
            match self.precision() {
                WeightPrecision::F32 => String::new(),
                p => format!(" {p}"),
            },
            if self.bias.is_some() { "+bias" } else { "" }
        )
    }
}

/// `y = x @ W (+ bias)`, then GELU ([`amanuensis_kernels::cpu_math::gelu`]) with `gelu`: `x` is
/// `[.., k]` (its last axes flattened: a product that contracts heads and head width together
/// takes them as one `k`), `y` is `[.., n]`, in float32 with one sum per output (the CPU
/// device's numerics). A few rows (a decoder's token) go through a matrix-vector product that
/// reads `W` once with every core; more rows through the packed GEMM. Any number of rows: the
/// decoder's sequence and batch are symbolic.
#[derive(Clone)]
pub struct CpuLinear {
    /// The weights.
    pub weights: Arc<LinearWeights>,
    /// Axes of the input that are contracted (its last ones).
    pub k_axes: usize,
    /// Whether a GELU follows.
    pub gelu: bool,
}

impl fmt::Debug for CpuLinear {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CpuLinear{:?}{}",
            self.weights,
            if self.gelu { "+gelu" } else { "" }
        )
    }
}

impl PartialEq for CpuLinear {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.weights, &other.weights)
            && self.k_axes == other.k_axes
            && self.gelu == other.gelu
    }
}

impl Eq for CpuLinear {}

impl std::hash::Hash for CpuLinear {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (Arc::as_ptr(&self.weights) as usize).hash(state);
        self.k_axes.hash(state);
        self.gelu.hash(state);
    }
}

impl Op for CpuLinear {
    fn name(&self) -> StaticName {
        "CpuLinear".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("{:?}", self)])
    }

    op_as_typed_op!();
}

impl EvalOp for CpuLinear {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = &inputs[0];
        let (k, n) = self.weights.shape();
        let shape = x.shape();
        ensure!(
            shape.len() >= self.k_axes,
            "CpuLinear: input of rank {}",
            shape.len()
        );
        let lead = &shape[..shape.len() - self.k_axes];
        ensure!(
            shape[lead.len()..].iter().product::<usize>() == k,
            "CpuLinear: input {shape:?} against weights of {k} rows"
        );
        let rows: usize = lead.iter().product();
        let mut out_shape: TVec<usize> = lead.into();
        out_shape.push(n);
        let mut out = Tensor::zero::<f32>(&out_shape)?;
        {
            let plain = x.try_as_plain_ram()?;
            let a = plain.as_slice::<f32>()?;
            let mut view = out.try_as_plain_ram_mut()?;
            let c = view.as_slice_mut::<f32>()?;
            let bias = self.weights.bias.as_deref();
            match &self.weights.held {
                Held::F32(packed) if rows >= 12 => gemm_f32(a, rows, packed, bias, self.gelu, c),
                Held::F32(packed) => gemv_f32(a, rows, packed, bias, self.gelu, c),
                Held::Low(low) => gemv_low_precision(a, rows, low, bias, self.gelu, c),
            }
        }
        Ok(tvec!(out.into_tvalue()))
    }

    op_out_of_plan!();
}

impl TypedOp for CpuLinear {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs[0].datum_type == f32::datum_type());
        let shape = &inputs[0].shape;
        let mut out: TVec<TDim> = shape
            .iter()
            .take(shape.len() - self.k_axes)
            .cloned()
            .collect();
        out.push(self.weights.shape().1.into());
        Ok(tvec!(f32::fact(out)))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let shape = &inputs[0].shape;
        let rows: TDim = shape.iter().take(shape.len() - self.k_axes).product();
        let (k, n) = self.weights.shape();
        Ok(tvec!((Cost::FMA(f32::datum_type()), rows * (k * n) as i64)))
    }

    as_op!();
}
