//! A shared reference to the device an op dispatches to.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;

use amanuensis_kernels::device::{Device, KernelNeed, StreamLayout, Traffic};
use amanuensis_kernels::gemm::GemmContract;

/// The device an op runs on. Two handles are equal when they point at the same device, so
/// that tract's graph machinery (which compares and hashes ops) keeps ops of different
/// devices apart.
#[derive(Clone)]
pub struct DeviceHandle(pub Arc<dyn Device>);

impl DeviceHandle {
    /// A handle on `device`.
    pub fn new(device: Arc<dyn Device>) -> DeviceHandle {
        DeviceHandle(device)
    }
}

impl Deref for DeviceHandle {
    type Target = dyn Device;
    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

impl fmt::Debug for DeviceHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.prefix())
    }
}

impl PartialEq for DeviceHandle {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for DeviceHandle {}

impl Hash for DeviceHandle {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (Arc::as_ptr(&self.0) as *const u8 as usize).hash(state)
    }
}

/// What one op of a plan asks of its device per evaluation: a kernel at one dispatch shape,
/// the traffic of all its calls of that kernel, and the bytes it uploaded once (weights).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceCall {
    /// The kernel and its dispatch shape.
    pub need: KernelNeed,
    /// The traffic of one evaluation's calls of that kernel.
    pub traffic: Traffic,
    /// Bytes uploaded once when the plan was built.
    pub upload_bytes: u64,
}

impl DeviceCall {
    /// `calls` calls of a row-wise or elementwise kernel over `rows` rows of `cols` values:
    /// none when the contract runs softmax and GELU on the host
    /// ([`GemmContract::softmax_gelu_on_device`]).
    pub fn stream(
        contract: &GemmContract,
        kernel: amanuensis_kernels::device::Kernel,
        rows: usize,
        cols: usize,
        calls: u64,
    ) -> Option<DeviceCall> {
        if !contract.softmax_gelu_on_device() {
            return None;
        }
        let layout = StreamLayout::new(contract, rows, cols);
        Some(DeviceCall {
            need: KernelNeed::stream(kernel, &layout),
            traffic: Traffic::stream(contract, kernel, &layout).times(calls),
            upload_bytes: 0,
        })
    }
    /// A product with its weights on the device (`B`, and the bias with `bias`): `[m, k] @
    /// [k, n]` once for each of `batch` batch indices, GELU in the epilogue with `gelu` (on the
    /// host after the bias when the contract runs GELU there).
    pub fn gemm_with_weights(
        contract: &GemmContract,
        (m, k, n): (usize, usize, usize),
        batch: usize,
        bias: bool,
        gelu: bool,
    ) -> DeviceCall {
        let layout = contract.layout(m, k, n);
        let need = KernelNeed::weights_gemm(contract, &layout, bias, gelu);
        DeviceCall {
            traffic: Traffic::gemm(contract, &layout, true, need.tile_end()).times(batch as u64),
            need,
            upload_bytes: layout.upload_bytes(bias) as u64,
        }
    }

    /// The kernels of `heads` heads of attention of `dims` (`Q K^T`, softmax, `P V`; under
    /// bf16x3 the two products), each once a head.
    pub fn attention(
        contract: &GemmContract,
        dims: amanuensis_kernels::device::AttentionDims,
        heads: usize,
    ) -> Vec<DeviceCall> {
        contract
            .attention(dims)
            .calls(contract)
            .into_iter()
            .map(|(need, traffic)| DeviceCall {
                need,
                traffic: traffic.times(heads as u64),
                upload_bytes: 0,
            })
            .collect()
    }
}

/// An op that runs on a device answers for its own device calls, as tract ops answer for
/// their cost: the placement report's traffic, the plan's kernel check and the prediction all
/// read this one answer. An op on the CPU device makes none.
pub trait DeviceOp {
    /// The device calls of one evaluation with an output of `output_shape`.
    fn device_calls(&self, output_shape: &[usize]) -> Vec<DeviceCall>;

    /// The device it runs on.
    fn device(&self) -> &DeviceHandle;
}
