//! The emulated device: the kernel contract computed on the CPU with the kernels' exact
//! numerics, counting the dispatches and bytes a device would see.

use std::sync::Arc;

use crate::device::{
    Counters, Device, DeviceError, Epilogue, Kernel, StreamLayout, Traffic, Weights, checks,
};
use crate::emu::{self, PackedB};
use crate::gemm::GemmContract;
use crate::{gelu, softmax};

/// Weights as the emulator keeps them: B packed in bfloat16 values, and the bias.
#[derive(Debug)]
struct EmuWeights {
    packed: PackedB,
    bias: Option<Vec<f32>>,
}

/// The kernel contract on the CPU (`--backend emu`). Work is spread over rayon's current pool;
/// results do not depend on the number of threads.
#[derive(Debug)]
pub struct Emulator {
    contract: GemmContract,
    counters: Counters,
}

impl Emulator {
    /// An emulator of `contract`.
    pub fn new(contract: GemmContract) -> Emulator {
        Emulator {
            contract,
            counters: Counters::default(),
        }
    }
}

impl Device for Emulator {
    fn prefix(&self) -> &'static str {
        "Emu"
    }

    fn contract(&self) -> &GemmContract {
        &self.contract
    }

    fn prepare_weights(
        &self,
        b: &[f32],
        k: usize,
        n: usize,
        bias: Option<&[f32]>,
    ) -> Result<Arc<Weights>, DeviceError> {
        checks::weights(b, k, n, bias)?;
        let packed = PackedB::new(&self.contract, b, k, n);
        self.counters
            .record_weights(self.contract.layout(1, k, n).weight_bytes());
        Ok(Arc::new(Weights::new(
            k,
            n,
            bias.is_some(),
            Box::new(EmuWeights {
                packed,
                bias: bias.map(<[f32]>::to_vec),
            }),
        )))
    }

    fn matmul(
        &self,
        a: &[f32],
        m: usize,
        w: &Weights,
        epilogue: Epilogue,
        c: &mut [f32],
    ) -> Result<(), DeviceError> {
        let ew = checks::own::<EmuWeights>(w)?;
        checks::matmul(a, m, w, c)?;
        emu::gemm(
            self.contract.rounding,
            a,
            m,
            &ew.packed,
            ew.bias.as_deref(),
            c,
        );
        if epilogue == Epilogue::Gelu {
            gelu::gelu(self.contract.rounding, c);
        }
        let layout = self.contract.layout(m, w.k(), w.n());
        self.counters
            .record(Kernel::MatMul, Traffic::gemm(&self.contract, &layout, true));
        Ok(())
    }

    fn matmul_act(
        &self,
        a: &[f32],
        b: &[f32],
        (m, k, n): (usize, usize, usize),
        c: &mut [f32],
    ) -> Result<(), DeviceError> {
        checks::matmul_act(a, b, (m, k, n), c)?;
        let packed = PackedB::new(&self.contract, b, k, n);
        emu::gemm(self.contract.rounding, a, m, &packed, None, c);
        let layout = self.contract.layout(m, k, n);
        self.counters.record(
            Kernel::MatMul,
            Traffic::gemm(&self.contract, &layout, false),
        );
        Ok(())
    }

    fn softmax(&self, x: &mut [f32], cols: usize) -> Result<(), DeviceError> {
        checks::softmax(x, cols)?;
        softmax::softmax_rows(self.contract.rounding, x, cols);
        self.counters.record(
            Kernel::Softmax,
            Traffic::stream(&StreamLayout::new(&self.contract, x.len() / cols, cols)),
        );
        Ok(())
    }

    fn gelu(&self, x: &mut [f32]) -> Result<(), DeviceError> {
        gelu::gelu(self.contract.rounding, x);
        self.counters.record(
            Kernel::Gelu,
            Traffic::stream(&StreamLayout::new(&self.contract, x.len(), 1)),
        );
        Ok(())
    }

    fn counters(&self) -> &Counters {
        &self.counters
    }
}
