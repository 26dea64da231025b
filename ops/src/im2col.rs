//! `CpuIm2Col`: the patches of a 1-D convolution as the rows of a matrix, so that the
//! convolution becomes one GEMM.

use tract_core::internal::*;

/// The patches of a 1-D convolution over one sequence as a row-major `[out_len, channels *
/// kernel]` matrix (zero outside the input), from either layout of the input:
/// - `[1, channels, length]` (NCW, `channels_last` false): row `t`, column `c * kernel + j`
///   holds `x[0, c, t * stride + j - pad_before]`, the column order of an OIW kernel reshaped
///   to `[O, channels * kernel]`;
/// - `[1, length, channels]` (NWC, `channels_last` true, as a product writes its output):
///   column `j * channels + c` holds `x[0, t * stride + j - pad_before, c]`, so a row is
///   `kernel` whole rows of the input side by side; the kernel's rows are ordered so too.
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
    /// The input is `[1, length, channels]` rather than `[1, channels, length]`.
    pub channels_last: bool,
}

impl Op for CpuIm2Col {
    fn name(&self) -> StaticName {
        "CpuIm2Col".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{:?} -> [{}, {}] (kernel {}, stride {}, pad {})",
            self.input_shape(),
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
        ensure!(input.shape() == self.input_shape());
        let x = input.try_as_plain_ram()?.as_slice::<f32>()?;
        let width = self.channels * self.kernel;
        // SAFETY: every value is written below (the patches' values, zeros outside the input).
        let mut out = unsafe { Tensor::uninitialized::<f32>(&[self.out_len, width])? };
        {
            let mut view = out.try_as_plain_ram_mut()?;
            let out = view.as_slice_mut::<f32>()?;
            // Rows of the output a task: the conv2 stem of base is 1500 rows of 1536 values.
            const ROWS: usize = 64;
            use rayon::prelude::*;
            out.par_chunks_mut(width * ROWS)
                .enumerate()
                .for_each(|(block, rows)| {
                    let t0 = block * ROWS;
                    for (i, row) in rows.chunks_mut(width).enumerate() {
                        let start = ((t0 + i) * self.stride) as isize - self.pad_before as isize;
                        if self.channels_last {
                            self.row_channels_last(x, start, row);
                        } else {
                            self.row_channels_first(x, start, row);
                        }
                    }
                });
        }
        Ok(tvec!(out.into_tvalue()))
    }

    op_out_of_plan!();
}

impl CpuIm2Col {
    /// The input's shape: `[1, channels, length]`, or `[1, length, channels]` channels last.
    fn input_shape(&self) -> [usize; 3] {
        if self.channels_last {
            [1, self.length, self.channels]
        } else {
            [1, self.channels, self.length]
        }
    }

    /// One row from an NCW input: a short run of every channel, the next rows reading the
    /// same lines of the input again while they are in the cache; a patch inside the input is
    /// copied without bounds checks.
    fn row_channels_first(&self, x: &[f32], start: isize, row: &mut [f32]) {
        let inside = start >= 0 && start as usize + self.kernel <= self.length;
        for (c, patch) in row.chunks_exact_mut(self.kernel).enumerate() {
            let src = &x[c * self.length..(c + 1) * self.length];
            if inside {
                patch.copy_from_slice(&src[start as usize..][..self.kernel]);
                continue;
            }
            for (j, value) in patch.iter_mut().enumerate() {
                let at = start + j as isize;
                *value = if at >= 0 && (at as usize) < self.length {
                    src[at as usize]
                } else {
                    0.0
                };
            }
        }
    }

    /// One row from an NWC input: `kernel` whole rows of the input, zeros for those outside.
    fn row_channels_last(&self, x: &[f32], start: isize, row: &mut [f32]) {
        for (j, tap) in row.chunks_exact_mut(self.channels).enumerate() {
            let at = start + j as isize;
            if at >= 0 && (at as usize) < self.length {
                tap.copy_from_slice(&x[at as usize * self.channels..][..self.channels]);
            } else {
                tap.fill(0.0);
            }
        }
    }
}

impl TypedOp for CpuIm2Col {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs[0].datum_type == f32::datum_type());
        let shape = self.input_shape();
        ensure!(
            inputs[0].shape.as_concrete() == Some(&shape[..]),
            "CpuIm2Col over {:?}, expected {shape:?}",
            inputs[0].shape
        );
        Ok(tvec!(f32::fact([
            self.out_len,
            self.channels * self.kernel
        ])))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The patches times an OIW kernel reshaped to `[O, channels * kernel]` (channels first)
    /// or to `[O, kernel * channels]` (channels last) give the direct 1-D convolution (sums
    /// over channels and taps of kernel x input, zero padding), for Whisper's two stems'
    /// strides, both input layouts, and a length that leaves a partial last block of rows.
    #[test]
    fn patches_times_the_kernel_are_the_direct_convolution() {
        let (channels, length, kernel, outputs) = (5, 131, 3, 4);
        let x: Vec<f32> = (0..channels * length)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
            .collect();
        let w: Vec<f32> = (0..outputs * channels * kernel)
            .map(|i| ((i * 13 % 29) as f32 - 14.0) / 7.0)
            .collect();
        for (stride, channels_last) in [(1, false), (2, false), (1, true), (2, true)] {
            let out_len = (length + 2 - kernel) / stride + 1;
            let op = CpuIm2Col {
                channels,
                length,
                kernel,
                stride,
                pad_before: 1,
                out_len,
                channels_last,
            };
            let input = if channels_last {
                // x transposed: [1, length, channels].
                let xt: Vec<f32> = (0..length * channels)
                    .map(|i| x[(i % channels) * length + i / channels])
                    .collect();
                tract_core::ndarray::Array3::from_shape_vec((1, length, channels), xt)
            } else {
                tract_core::ndarray::Array3::from_shape_vec((1, channels, length), x.clone())
            }
            .unwrap()
            .into_tensor()
            .into_tvalue();
            // Column `col` of a row is (channel, tap):
            let column = |col: usize| {
                if channels_last {
                    (col % channels, col / channels)
                } else {
                    (col / kernel, col % kernel)
                }
            };
            let patches = op
                .eval(&EvalContext::out_of_plan(), tvec!(input))
                .unwrap()
                .remove(0);
            let patches = patches
                .try_as_plain_ram()
                .unwrap()
                .as_slice::<f32>()
                .unwrap()
                .to_vec();
            let width = channels * kernel;
            assert_eq!(patches.len(), out_len * width);
            for t in 0..out_len {
                for o in 0..outputs {
                    let via_patches: f64 = (0..width)
                        .map(|i| {
                            let (c, j) = column(i);
                            patches[t * width + i] as f64
                                * w[(o * channels + c) * kernel + j] as f64
                        })
                        .sum();
                    let mut direct = 0f64;
                    for c in 0..channels {
                        for j in 0..kernel {
                            let at = (t * stride + j) as isize - 1;
                            if (0..length as isize).contains(&at) {
                                direct += w[(o * channels + c) * kernel + j] as f64
                                    * x[c * length + at as usize] as f64;
                            }
                        }
                    }
                    assert!(
                        (via_patches - direct).abs() < 1e-9,
                        "stride {stride}, channels last {channels_last}, t {t}, o {o}"
                    );
                }
            }
        }
    }
}
