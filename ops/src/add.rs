//! `CpuAdd`: the sum of two float32 tensors of one shape (a residual connection).

use tract_core::internal::*;

/// Below this many values one thread adds: a task would cost more than its share.
const PARALLEL: usize = 1 << 16;

/// Values a task adds (64 KiB of each operand).
const CHUNK: usize = 1 << 14;

/// `a + b` for two float32 tensors of the same shape (leading axes of size 1 aside; the
/// output has the shape of the first), elementwise, the values spread over rayon's current
/// pool. tract's own addition runs on one thread; Whisper's residual connections are a few
/// MB a layer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct CpuAdd;

impl Op for CpuAdd {
    fn name(&self) -> StaticName {
        "CpuAdd".into()
    }

    op_as_typed_op!();
}

/// A shape without its leading axes of size 1.
fn core<D: PartialEq + From<usize>>(shape: &[D]) -> &[D] {
    let lead = shape.iter().take_while(|d| **d == D::from(1)).count();
    &shape[lead..]
}

impl EvalOp for CpuAdd {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (a, b) = args_2!(inputs);
        ensure!(
            core(a.shape()) == core(b.shape()),
            "CpuAdd of shapes {:?} and {:?}",
            a.shape(),
            b.shape()
        );
        let (x, y) = (
            a.try_as_plain_ram()?.as_slice::<f32>()?,
            b.try_as_plain_ram()?.as_slice::<f32>()?,
        );
        // SAFETY: every value is written below.
        let mut out = unsafe { Tensor::uninitialized::<f32>(a.shape())? };
        {
            let mut view = out.try_as_plain_ram_mut()?;
            let z = view.as_slice_mut::<f32>()?;
            let add = |(z, (x, y)): (&mut [f32], (&[f32], &[f32]))| {
                for ((z, x), y) in z.iter_mut().zip(x).zip(y) {
                    *z = x + y;
                }
            };
            if z.len() < PARALLEL {
                add((z, (x, y)));
            } else {
                use rayon::prelude::*;
                z.par_chunks_mut(CHUNK)
                    .zip(x.par_chunks(CHUNK).zip(y.par_chunks(CHUNK)))
                    .for_each(add);
            }
        }
        Ok(tvec!(out.into_tvalue()))
    }

    op_out_of_plan!();
}

/// No cost declared: tract's cost model counts no multiply-add for an addition either, so
/// FLOP counts and placement shares stay those of tract's graph.
impl TypedOp for CpuAdd {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 2);
        ensure!(inputs.iter().all(|i| i.datum_type == f32::datum_type()));
        ensure!(
            core(&inputs[0].shape.to_tvec()) == core(&inputs[1].shape.to_tvec()),
            "CpuAdd of shapes {:?} and {:?}",
            inputs[0].shape,
            inputs[1].shape
        );
        Ok(tvec!(f32::fact(inputs[0].shape.clone())))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sum of each pair of values, on both sides of the threshold for the pool, with a
    /// leading axis of size 1 on one side only.
    #[test]
    fn adds_elementwise() {
        for len in [5usize, 3 * PARALLEL + 7] {
            let x: Vec<f32> = (0..len).map(|i| i as f32 * 0.5).collect();
            let y: Vec<f32> = (0..len).map(|i| 1.0 - i as f32).collect();
            let a = Tensor::from_shape(&[1, len], &x).unwrap();
            let b = Tensor::from_shape(&[len], &y).unwrap();
            let out = CpuAdd
                .eval(
                    &EvalContext::out_of_plan(),
                    tvec![a.into_tvalue(), b.into_tvalue()],
                )
                .unwrap();
            assert_eq!(out[0].shape(), [1, len]);
            let z = out[0].try_as_plain_ram().unwrap();
            let z = z.as_slice::<f32>().unwrap();
            assert_eq!(z.len(), len);
            for (i, z) in z.iter().enumerate() {
                assert_eq!(*z, (i as f32 * 0.5) + (1.0 - i as f32), "value {i}");
            }
        }
        let a = Tensor::from_shape(&[2, 3], &[0f32; 6]).unwrap();
        let b = Tensor::from_shape(&[3, 2], &[0f32; 6]).unwrap();
        assert!(
            CpuAdd
                .eval(
                    &EvalContext::out_of_plan(),
                    tvec![a.into_tvalue(), b.into_tvalue()]
                )
                .is_err(),
            "shapes that differ are refused"
        );
    }
}
