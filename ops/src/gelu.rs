//! `DeviceGelu`: GELU on the device.

use tract_core::internal::*;

use crate::{DeviceHandle, device_error};

/// GELU of every value of a float32 tensor, with the device kernel's numerics (the tanh
/// form, bfloat16 out; see the kernels crate's NUMERICS.md).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeviceGelu {
    /// Where it runs.
    pub device: DeviceHandle,
}

impl crate::device::DeviceOp for DeviceGelu {
    fn device(&self) -> &DeviceHandle {
        &self.device
    }

    /// One gelu call over the output's rows (its values).
    fn device_calls(&self, output_shape: &[usize]) -> Vec<crate::device::DeviceCall> {
        if self.device.is_cpu() {
            return Vec::new();
        }
        let (rows, cols) = (output_shape.iter().product::<usize>(), 1);
        crate::device::DeviceCall::stream(
            self.device.contract(),
            amanuensis_kernels::device::Kernel::Gelu,
            rows,
            cols,
            1,
        )
        .into_iter()
        .collect()
    }
}

impl Op for DeviceGelu {
    fn name(&self) -> StaticName {
        format!("{}Gelu", self.device.prefix()).into()
    }

    op_as_typed_op!();
}

impl EvalOp for DeviceGelu {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let mut t = input.into_tensor();
        {
            let mut view = t.try_as_plain_ram_mut()?;
            let x = view.as_slice_mut::<f32>()?;
            self.device.gelu(x).map_err(device_error)?;
        }
        Ok(tvec!(t.into_tvalue()))
    }

    op_out_of_plan!();
}

impl TypedOp for DeviceGelu {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs[0].datum_type == f32::datum_type());
        Ok(tvec!(f32::fact(inputs[0].shape.clone())))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let count: TDim = inputs[0].shape.iter().product();
        Ok(tvec!((Cost::FMA(f32::datum_type()), count * 14)))
    }

    as_op!();
}
