//! `DeviceSoftmax`: softmax over the last axis on the device.

use tract_core::internal::*;

use crate::{DeviceHandle, device_error};

/// Softmax over the last axis of a float32 tensor, with the device kernel's numerics
/// (bfloat16 in and out, its exp approximation; see the kernels crate's NUMERICS.md).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeviceSoftmax {
    /// Where it runs.
    pub device: DeviceHandle,
}

impl crate::device::DeviceOp for DeviceSoftmax {
    fn device(&self) -> &DeviceHandle {
        &self.device
    }

    /// One softmax call over the output's rows.
    fn device_calls(&self, output_shape: &[usize]) -> Vec<crate::device::DeviceCall> {
        if self.device.is_cpu() {
            return Vec::new();
        }
        let cols = *output_shape.last().unwrap_or(&1);
        let rows = output_shape.iter().product::<usize>() / cols.max(1);
        crate::device::DeviceCall::stream(
            self.device.contract(),
            amanuensis_kernels::device::Kernel::Softmax,
            rows,
            cols,
            1,
        )
        .into_iter()
        .collect()
    }
}

impl Op for DeviceSoftmax {
    fn name(&self) -> StaticName {
        format!("{}Softmax", self.device.prefix()).into()
    }

    op_as_typed_op!();
}

impl EvalOp for DeviceSoftmax {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let cols = *input.shape().last().context("softmax of a scalar")?;
        let mut t = input.into_tensor();
        {
            let mut view = t.try_as_plain_ram_mut()?;
            let x = view.as_slice_mut::<f32>()?;
            self.device.softmax(x, cols).map_err(device_error)?;
        }
        Ok(tvec!(t.into_tvalue()))
    }

    op_out_of_plan!();
}

impl TypedOp for DeviceSoftmax {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs[0].datum_type == f32::datum_type());
        ensure!(inputs[0].rank() > 0);
        Ok(tvec!(f32::fact(inputs[0].shape.clone())))
    }

    as_op!();
}
