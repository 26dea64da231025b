#![warn(missing_docs)]
//! The tract ops of amanuensis.
//!
//! - [`DeviceMatMul`], [`DeviceSoftmax`], [`DeviceGelu`]: written once, each holding the
//!   [`DeviceHandle`] it dispatches to: the XDNA device, its emulator, or the CPU's own
//!   kernels. Their displayed names say where they run (`NpuMatMul`, `EmuMatMul`,
//!   `CpuMatMul`);
//! - [`DeviceAttention`]: attention's `softmax(Q K^T) V`, head by head, with the same kernels;
//! - [`CpuLayerNorm`]: LayerNorm over the last axis in one fused, vectorised pass per row;
//! - [`CpuIm2Col`]: the patches of a 1-D convolution, which turn it into one GEMM;
//! - [`CpuAdd`]: the sum of two tensors of one shape (a residual connection), over the pool;
//! - [`CachedAttention`]: `softmax(Q K^T + mask) V` in one pass per query row (a decoder's
//!   attention over its caches);
//! - [`CpuLinear`]: a linear layer over any number of rows with its weights packed once (a
//!   decoder's products).
//!
//! The ops know nothing of ONNX or of the graph patterns they replace: the root crate's
//! rewrite passes build them.

mod add;
mod attention;
mod cached_attention;
mod device;
mod gelu;
mod im2col;
mod layer_norm;
mod linear;
mod matmul;
mod softmax;

pub use add::CpuAdd;
pub use attention::DeviceAttention;
pub use cached_attention::{AttentionAxes, CachedAttention};
pub use device::{DeviceCall, DeviceHandle, DeviceOp};
pub use gelu::DeviceGelu;
pub use im2col::CpuIm2Col;
pub use layer_norm::{CpuLayerNorm, layer_norm_rows};
pub use linear::{CpuLinear, LinearWeights};
pub use matmul::{DeviceMatMul, DeviceWeights, MatMulGeometry, WeightsHandle, upload_weights};
pub use softmax::DeviceSoftmax;

/// What a node of a rewritten plan is, for placement reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OpKind {
    /// A matrix product ([`DeviceMatMul`]).
    MatMul,
    /// A softmax ([`DeviceSoftmax`]).
    Softmax,
    /// A GELU ([`DeviceGelu`]).
    Gelu,
    /// A LayerNorm ([`CpuLayerNorm`]).
    LayerNorm,
    /// The patches of a convolution ([`CpuIm2Col`]).
    Im2Col,
    /// Attention's two products and softmax, fused ([`DeviceAttention`]).
    Attention,
}

/// The kind of `op` and the device prefix it dispatches to (`None` for CPU ops, those of the
/// CPU device included), when it is one of this crate's ops.
pub fn classify(op: &dyn tract_core::internal::Op) -> Option<(OpKind, Option<&'static str>)> {
    let on = |d: &DeviceHandle| (!d.is_cpu()).then(|| d.prefix());
    if let Some(op) = op.downcast_ref::<DeviceMatMul>() {
        return Some((OpKind::MatMul, on(&op.device)));
    }
    if let Some(op) = op.downcast_ref::<DeviceAttention>() {
        return Some((OpKind::Attention, on(&op.device)));
    }
    if let Some(op) = op.downcast_ref::<DeviceSoftmax>() {
        return Some((OpKind::Softmax, on(&op.device)));
    }
    if let Some(op) = op.downcast_ref::<DeviceGelu>() {
        return Some((OpKind::Gelu, on(&op.device)));
    }
    if op.is::<CpuLayerNorm>() {
        return Some((OpKind::LayerNorm, None));
    }
    if op.is::<CpuIm2Col>() {
        return Some((OpKind::Im2Col, None));
    }
    None
}

/// `op` as an op that answers for its device calls, when it is one of this crate's device ops.
pub fn as_device_op(op: &dyn tract_core::internal::Op) -> Option<&dyn DeviceOp> {
    if let Some(op) = op.downcast_ref::<DeviceMatMul>() {
        return Some(op);
    }
    if let Some(op) = op.downcast_ref::<DeviceAttention>() {
        return Some(op);
    }
    if let Some(op) = op.downcast_ref::<DeviceSoftmax>() {
        return Some(op);
    }
    if let Some(op) = op.downcast_ref::<DeviceGelu>() {
        return Some(op);
    }
    None
}

pub(crate) fn device_error(
    e: amanuensis_kernels::device::DeviceError,
) -> tract_core::prelude::TractError {
    tract_core::internal::anyhow!(e)
}
