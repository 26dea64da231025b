//! `CpuIm2Col`: the patches of a 1-D convolution as the rows of a matrix, so that the
//! convolution becomes one GEMM.

use tract_core::internal::*;

/// The patches of a 1-D convolution over `x: [1, channels, length]` (NCW, batch 1) as a
/// row-major `[out_len, channels * kernel]` matrix: row `t`, column `c * kernel + j` holds
/// `x[0, c, t * stride + j - pad_before]`, zero outside the input. The column order matches
/// an OIW kernel reshaped to `[O, channels * kernel]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CpuIm2Col {
    /// Input channels.
    pub channels: usize,
    /// Input length.
    pub length: usize,
    /// Kernel width.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Zeros before the input.
    pub pad_before: usize,
    /// Output positions.
    pub out_len: usize,
}

impl Op for CpuIm2Col {
    fn name(&self) -> StaticName {
        "CpuIm2Col".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "[1, {}, {}] -> [{}, {}] (kernel {}, stride {}, pad {})",
            self.channels,
            self.length,
            self.out_len,
            self.channels * self.kernel,
            self.kernel,
            self.stride,
            self.pad_before
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for CpuIm2Col {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        ensure!(input.shape() == [1, self.channels, self.length]);
        let x = input.try_as_plain_ram()?.as_slice::<f32>()?;
        let width = self.channels * self.kernel;
        let mut out = vec![0f32; self.out_len * width];
        // Rows of the output a task: the conv2 stem of base is 1500 rows of 1536 values.
        const ROWS: usize = 64;
        use rayon::prelude::*;
        out.par_chunks_mut(width * ROWS)
            .enumerate()
            .for_each(|(block, rows)| {
                for (i, row) in rows.chunks_mut(width).enumerate() {
                    let t = block * ROWS + i;
                    let start = (t * self.stride) as isize - self.pad_before as isize;
                    for c in 0..self.channels {
                        let src = &x[c * self.length..(c + 1) * self.length];
                        for j in 0..self.kernel {
                            let i = start + j as isize;
                            if i >= 0 && (i as usize) < self.length {
                                row[c * self.kernel + j] = src[i as usize];
                            }
                        }
                    }
                }
            });
        let out = tract_core::ndarray::Array2::from_shape_vec((self.out_len, width), out)?;
        Ok(tvec!(out.into_tensor().into_tvalue()))
    }

    op_out_of_plan!();
}

impl TypedOp for CpuIm2Col {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs[0].datum_type == f32::datum_type());
        Ok(tvec!(f32::fact([
            self.out_len,
            self.channels * self.kernel
        ])))
    }

    as_op!();
}
