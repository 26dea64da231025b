//! `NpuAttention`: attention's `softmax(Q K^T) V`, head by head, on the device.

use amanuensis_kernels::device::AttentionDims;
use tract_core::internal::*;

use crate::matmul::{canonical_cow, write_output};
use crate::{DeviceHandle, MatMulGeometry, device_error};

/// `softmax(Q K^T) V` per head: the two products and the softmax of [`crate::NpuMatMul`] and
/// [`crate::NpuSoftmax`], with the same numerics, as one device call a head
/// ([`amanuensis_kernels::device::Device::attention`]): the `[heads, positions, positions]`
/// scores are never a tensor of the plan, and on the device they never leave it.
///
/// Inputs: Q, K, V in the layouts `qk` and `pv` describe. `qk`'s output must be canonical
/// (`[heads, M, N]`) and `pv` must read it canonically, so that one head's scores are a
/// contiguous `[M, N]` block whose rows the softmax normalises.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NpuAttention {
    /// Where it runs.
    pub device: DeviceHandle,
    /// `Q K^T`.
    pub qk: MatMulGeometry,
    /// `P V`.
    pub pv: MatMulGeometry,
}

impl NpuAttention {
    /// The sizes of one head, as the device takes them.
    pub fn dims(&self) -> AttentionDims {
        AttentionDims {
            m: self.qk.m,
            d: self.qk.k,
            n: self.qk.n,
            dv: self.pv.n,
        }
    }

    /// Whether `qk` and `pv` can be fused: heads, positions and the score layout agree.
    pub fn fits(qk: &MatMulGeometry, pv: &MatMulGeometry) -> bool {
        let identity = |p: &[usize]| p.iter().enumerate().all(|(i, &x)| i == x);
        qk.batch == pv.batch
            && qk.m == pv.m
            && qk.n == pv.k
            && identity(&qk.out_perm)
            && identity(&pv.a_perm)
            && qk.n_axes_in_output.len() == 1
            && qk.n_axes_in_output[0] + 1 == qk.out_shape.len()
    }
}

impl crate::device::DeviceOp for NpuAttention {
    /// The three kernels of one head (`Q K^T`, softmax, `P V`), once a head.
    fn device_calls(&self, _output_shape: &[usize]) -> Vec<crate::device::DeviceCall> {
        if self.device.is_cpu() {
            return Vec::new();
        }
        let contract = self.device.contract();
        contract
            .attention(self.dims())
            .calls(contract)
            .into_iter()
            .map(|(need, traffic)| crate::device::DeviceCall {
                need,
                traffic: traffic.times(self.qk.batch as u64),
                upload_bytes: 0,
            })
            .collect()
    }
}

impl Op for NpuAttention {
    fn name(&self) -> StaticName {
        format!("{}Attention", self.device.prefix()).into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{} heads, [{}x{}] @ [{}x{}] -> softmax -> @ [{}x{}]",
            self.qk.batch, self.qk.m, self.qk.k, self.qk.k, self.qk.n, self.pv.k, self.pv.n
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for NpuAttention {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (qk, pv) = (&self.qk, &self.pv);
        ensure!(inputs.len() == 3, "{} takes Q, K and V", self.name());
        let q = canonical_cow(inputs[0].to_plain_array_view::<f32>()?, &qk.a_perm);
        let k = canonical_cow(inputs[1].to_plain_array_view::<f32>()?, &qk.b_perm);
        let v = canonical_cow(inputs[2].to_plain_array_view::<f32>()?, &pv.b_perm);
        let dims = self.dims();
        let out = write_output(pv, |c| {
            self.device
                .attention_heads(&q, &k, &v, dims, qk.batch, c)
                .map_err(device_error)
        })?;
        Ok(tvec!(out.into_tvalue()))
    }

    op_out_of_plan!();
}

impl TypedOp for NpuAttention {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.iter().all(|f| f.datum_type == f32::datum_type()));
        Ok(tvec!(f32::fact(&self.pv.out_shape)))
    }

    fn cost(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let fma = |g: &MatMulGeometry| g.batch * g.m * g.k * g.n;
        Ok(tvec!((
            Cost::FMA(f32::datum_type()),
            ((fma(&self.qk) + fma(&self.pv)) as i64).into()
        )))
    }

    as_op!();
}
