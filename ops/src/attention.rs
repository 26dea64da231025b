//! `DeviceAttention`: attention's `softmax(Q K^T) V`, head by head, on the device.

use std::borrow::Cow;

use amanuensis_kernels::device::{AttentionDims, Heads, HeadsMut};
use tract_core::internal::*;

use crate::matmul::{canonical_cow, row_major_strides, write_output};
use crate::{DeviceHandle, MatMulGeometry, device_error};

/// `softmax(Q K^T) V` per head: the two products and the softmax of [`crate::DeviceMatMul`] and
/// [`crate::DeviceSoftmax`], with the same numerics, as one device call a head
/// ([`amanuensis_kernels::device::Device::attention`]): the `[heads, positions, positions]`
/// scores are never a tensor of the plan, and on the device they never leave it.
///
/// Inputs: Q, K, V in the layouts `qk` and `pv` describe. `qk`'s output must be canonical
/// (`[heads, M, N]`) and `pv` must read it canonically, so that one head's scores are a
/// contiguous `[M, N]` block whose rows the softmax normalises.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeviceAttention {
    /// Where it runs.
    pub device: DeviceHandle,
    /// `Q K^T`.
    pub qk: MatMulGeometry,
    /// `P V`.
    pub pv: MatMulGeometry,
}

impl DeviceAttention {
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

impl crate::device::DeviceOp for DeviceAttention {
    fn device(&self) -> &DeviceHandle {
        &self.device
    }

    /// The three kernels of one head (`Q K^T`, softmax, `P V`), once a head.
    fn device_calls(&self, _output_shape: &[usize]) -> Vec<crate::device::DeviceCall> {
        if self.device.is_cpu() {
            return Vec::new();
        }
        crate::device::DeviceCall::attention(self.device.contract(), self.dims(), self.qk.batch)
    }
}

impl Op for DeviceAttention {
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

/// Groups the axes of an array of `shape` at `strides` (in values), taken in the order
/// `perm`, into three axes of sizes `groups` (`[batch, rows, cols]` of a product's canonical
/// layout): the strides of those three, or `None` when the axes of one group are not
/// evenly spaced in memory (then the operand must be copied).
fn three_axes(
    shape: &[usize],
    strides: &[usize],
    perm: &[usize],
    groups: [usize; 3],
) -> Option<[usize; 3]> {
    let mut axes = perm
        .iter()
        .map(|&p| (shape[p], strides[p]))
        .filter(|&(s, _)| s != 1);
    let mut out = [0usize; 3];
    for (g, &size) in groups.iter().enumerate() {
        // The group's axes, outermost first, merged while each steps over the next whole.
        let mut product = 1usize;
        let mut stride = 0usize;
        while product < size {
            let (s, st) = axes.next()?;
            if product > 1 && stride != st * s {
                return None;
            }
            product *= s;
            stride = st;
        }
        if product != size {
            return None;
        }
        out[g] = stride;
    }
    axes.next().is_none().then_some(out)
}

/// An input of the product as the device's `[batch, rows, cols]` view: in place when its
/// axes allow, else a canonical copy (kept in `copy`).
fn heads_view<'a>(
    value: &'a TValue,
    perm: &[usize],
    groups: [usize; 3],
    copy: &'a mut Option<Cow<'a, [f32]>>,
) -> TractResult<Heads<'a>> {
    let view = value.to_plain_array_view::<f32>()?;
    if let Some(data) = view.to_slice()
        && let Some(strides) =
            three_axes(view.shape(), &row_major_strides(view.shape()), perm, groups)
    {
        return Heads::new(data, groups, strides).map_err(device_error);
    }
    let values = copy.insert(canonical_cow(view, perm));
    Heads::contiguous(values, groups).map_err(device_error)
}

impl EvalOp for DeviceAttention {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (qk, pv) = (&self.qk, &self.pv);
        ensure!(inputs.len() == 3, "{} takes Q, K and V", self.name());
        let AttentionDims { m, d, n, dv } = self.dims();
        let heads = qk.batch;
        let (mut q_copy, mut k_copy, mut v_copy) = (None, None, None);
        let q = heads_view(&inputs[0], &qk.a_perm, [heads, m, d], &mut q_copy)?;
        let kt = heads_view(&inputs[1], &qk.b_perm, [heads, d, n], &mut k_copy)?;
        let v = heads_view(&inputs[2], &pv.b_perm, [heads, n, dv], &mut v_copy)?;
        // The output's canonical axes where the output tensor holds them.
        let out_strides = row_major_strides(&pv.out_shape);
        let mut canon_strides = vec![0usize; pv.out_shape.len()];
        for (j, &c) in pv.out_perm.iter().enumerate() {
            canon_strides[c] = out_strides[j];
        }
        let identity: Vec<usize> = (0..canon_strides.len()).collect();
        let groups = [heads, m, dv];
        let out = match three_axes(&pv.canon_shape, &canon_strides, &identity, groups) {
            Some(strides) => {
                // SAFETY: every value is written by the attention below (an output view's
                // positions are distinct and cover the tensor).
                let mut out = unsafe { Tensor::uninitialized::<f32>(&pv.out_shape)? };
                {
                    let mut ram = out.try_as_plain_ram_mut()?;
                    let data = ram.as_slice_mut::<f32>()?;
                    let mut o = HeadsMut::new(data, groups, strides).map_err(device_error)?;
                    self.device
                        .attention_strided(q, kt, v, &mut o)
                        .map_err(device_error)?;
                }
                out
            }
            None => write_output(pv, |c| {
                let mut o = HeadsMut::contiguous(c, groups).map_err(device_error)?;
                self.device
                    .attention_strided(q, kt, v, &mut o)
                    .map_err(device_error)
            })?,
        };
        Ok(tvec!(out.into_tvalue()))
    }

    op_out_of_plan!();
}

impl TypedOp for DeviceAttention {
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
