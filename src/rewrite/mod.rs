//! Graph rewrites over the decluttered typed model, run once at load time.
//!
//! Each rule lives in its own file and registers itself with [`inventory`] as a [`Pass`]:
//! - `fuse_layer_norm`: every LayerNorm form -> `CpuLayerNorm` (CPU, all backends but
//!   `tract`);
//! - `device_matmul`: every `EinSum` matrix product -> `DeviceMatMul`, a following bias `Add`
//!   and GELU fused into its epilogue;
//! - `device_conv`: the encoder's front 1-D convolutions -> `CpuIm2Col` + `DeviceMatMul`;
//! - `device_softmax`, `device_gelu`: the remaining Softmax and GELU nodes;
//! - `device_attention`: `Q K^T`, softmax and `P V` on the device fused into one op that runs
//!   head by head;
//! - `cpu_add`: the sums of two tensors of one shape (residual connections) -> `CpuAdd`, over
//!   the pool (CPU, in the device plans: `cpu`, `emu`, `npu`);
//! - `cached_attention`: in decoders, `Q K^T`, mask, softmax and `P V` fused into one CPU op
//!   that reads the caches in place;
//! - `cpu_linear`: in decoders, every linear layer (with its bias and GELU) as one CPU op
//!   whose weights are packed once.
//!
//! A node that a rule cannot take stays as it is, on the CPU, and the rule records why; the
//! placement report shows those reasons. A rewrite never makes a model fail.

mod cached_attention;
mod cpu_add;
mod cpu_linear;
mod device_attention;
mod device_conv;
mod device_gelu;
mod device_matmul;
mod device_softmax;
mod fuse_layer_norm;

use std::collections::BTreeMap;
use std::sync::Mutex;

use amanuensis_kernels::low_precision::WeightPrecision;

use amanuensis_ops::DeviceHandle;
use tract_onnx::prelude::Rewriter;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::binary::BinMiniOp;

/// Which plans a pass belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// CPU fusions: every backend but `tract`.
    Cpu,
    /// Offload to the device: `emu` and `npu`.
    Device,
    /// CPU fusions of decoders (which always run on the CPU).
    Decoder,
}

/// What the rules see: the device to offload to, and where they record what they left.
pub struct RewriteContext {
    /// The device, for [`Stage::Device`] passes.
    pub device: Option<DeviceHandle>,
    /// How the CPU's linear layers hold their weights (the decoder's lighter weights).
    pub weights: WeightPrecision,
    left: Mutex<BTreeMap<String, String>>,
}

impl RewriteContext {
    /// A context offloading to `device` (none: CPU fusions only), weights in float32.
    pub fn new(device: Option<DeviceHandle>) -> RewriteContext {
        RewriteContext {
            device,
            weights: WeightPrecision::F32,
            left: Mutex::default(),
        }
    }

    /// Records that `node` stays on the CPU, and why.
    pub fn leave(&self, node: &TypedNode, why: impl Into<String>) {
        self.left
            .lock()
            .unwrap()
            .insert(node.name.clone(), why.into());
    }

    /// Node names left on the CPU by a rule, with the reason.
    pub fn left(&self) -> BTreeMap<String, String> {
        self.left.lock().unwrap().clone()
    }
}

impl Default for RewriteContext {
    fn default() -> Self {
        RewriteContext::new(None)
    }
}

/// A rule over one op type, as tract's [`Rewriter`] takes it.
pub type AddRule = fn(Rewriter<RewriteContext>) -> Rewriter<RewriteContext>;

/// A rewrite pass: a named rule, applied in `order` within its stage.
pub struct Pass {
    /// The pass's name (its file's name).
    pub name: &'static str,
    /// The plans it belongs to.
    pub stage: Stage,
    /// Passes of one stage run in increasing order.
    pub order: u32,
    /// Registers its rules on a rewriter.
    pub add: AddRule,
}

inventory::collect!(Pass);

/// Every registered pass, in the order they run. A test checks the list, so that no pass is
/// dropped by the linker unnoticed.
pub fn passes() -> Vec<&'static Pass> {
    let mut all: Vec<&Pass> = inventory::iter::<Pass>().collect();
    all.sort_by_key(|p| (p.stage, p.order, p.name));
    all
}

/// Runs the passes of `stages` over `model`, one rewriter per pass, to a fixed point each.
pub fn rewrite(
    model: &mut TypedModel,
    ctx: &RewriteContext,
    stages: &[Stage],
) -> Result<(), OffloadError> {
    for pass in passes() {
        if !stages.contains(&pass.stage) {
            continue;
        }
        if pass.stage == Stage::Device && ctx.device.is_none() {
            continue;
        }
        (pass.add)(Rewriter::default())
            .rewrite(ctx, model)
            .map_err(|e| OffloadError::Rewrite(format!("rewrite pass {}: {e:#}", pass.name)))?;
    }
    Ok(())
}

/// The value of a constant input of a node, as float32, if it is one.
/// Why [`offload`] could not give a plan.
#[derive(Debug, thiserror::Error)]
pub enum OffloadError {
    /// tract failed while rewriting (the model is not a decluttered typed model tract can
    /// analyse).
    #[error("rewriting the model: {0}")]
    Rewrite(String),
    /// The device lacks a kernel the plan needs, or refused the weights.
    #[error("the device cannot run this plan: {0}")]
    Device(String),
}

/// The NPU rewrite applied to any tract model: every matrix product (with its bias and GELU),
/// softmax and GELU that `device` can run is moved onto it, attention chains are fused, and
/// LayerNorms become one CPU op each; a node a rule cannot take (another type, a symbolic
/// shape, weights per batch index, a softmax over another axis) stays on the CPU, and the
/// placement says why. The plan is checked against the device's kernels before its weights
/// are uploaded; nothing reaches the device when the check fails.
///
/// `model` is a typed, decluttered model with concrete shapes (set the input facts and call
/// `into_typed` and `into_decluttered`; rules leave symbolic shapes on the CPU). The result is
/// ready for `into_optimized` and a plan; the placement reports FLOPs and device traffic per
/// evaluation.
pub fn offload(
    model: TypedModel,
    device: DeviceHandle,
) -> Result<(TypedModel, crate::placement::Placement), OffloadError> {
    offload_with(model, device, None)
}

/// [`offload`], then each product moved to the device of its precision under a plan
/// ([`crate::precision::apply`]), before the devices check the plan and take the weights.
pub fn offload_with(
    mut model: TypedModel,
    device: DeviceHandle,
    precision: Option<(
        &crate::precision::PrecisionPlan,
        &crate::precision::PrecisionDevices,
    )>,
) -> Result<(TypedModel, crate::placement::Placement), OffloadError> {
    let ctx = RewriteContext::new(Some(device.clone()));
    rewrite(&mut model, &ctx, &[Stage::Cpu, Stage::Device])?;
    let precisions = match precision {
        Some((plan, devices)) => crate::precision::apply(&mut model, plan, devices)
            .map_err(|e| OffloadError::Rewrite(format!("{e:#}")))?,
        None => Vec::new(),
    };
    for (device, needs) in crate::placement::kernel_needs_by_device(&model) {
        device
            .check_plan(&needs)
            .map_err(|e| OffloadError::Device(e.to_string()))?;
    }
    amanuensis_ops::upload_weights(&model).map_err(|e| OffloadError::Device(format!("{e:#}")))?;
    let mut placement = crate::placement::placement(&model, &ctx.left());
    placement.precisions = precisions;
    Ok((model, placement))
}

pub(crate) fn const_f32(model: &TypedModel, outlet: OutletId) -> Option<Arc<Tensor>> {
    let fact = model.outlet_fact(outlet).ok()?;
    let k = fact.konst.clone()?;
    if k.datum_type() == f32::datum_type() {
        Some(k)
    } else {
        None
    }
}

/// The concrete shape of an outlet, if every dimension is known.
pub(crate) fn concrete_shape(model: &TypedModel, outlet: OutletId) -> Option<Vec<usize>> {
    model
        .outlet_fact(outlet)
        .ok()?
        .shape
        .as_concrete()
        .map(|s| s.to_vec())
}

/// If `node`'s only successor is a binary op of type `B` whose other input is a float32
/// constant, that successor and the constant.
pub(crate) fn succ_bin_with_const<'m, B: BinMiniOp>(
    model: &'m TypedModel,
    node: &TypedNode,
) -> Option<(&'m TypedNode, Arc<Tensor>)> {
    use tract_onnx::tract_core::ops::binary::TypedBinOp;
    let succ = model.single_succ(node.id).ok()??;
    let op = succ.op_as::<TypedBinOp>()?;
    if !op.0.is::<B>() || succ.inputs.len() != 2 {
        return None;
    }
    let ours = OutletId::new(node.id, 0);
    let other = *succ.inputs.iter().find(|i| **i != ours)?;
    Some((succ, const_f32(model, other)?))
}

/// Whether `node` swaps the last two axes of a rank-3 tensor (`[1, a, b]` <-> `[1, b, a]`):
/// the transpose between a convolution's NCW and a product's NWC.
pub(crate) fn swaps_last_two(node: &TypedNode) -> bool {
    use tract_onnx::tract_core::ops::change_axes::AxisOp;
    matches!(
        node.op_as::<AxisOp>(),
        Some(AxisOp::Move(1, 2) | AxisOp::Move(2, 1))
    )
}

/// Whether `node` is a GELU that `device` computes: the NPU kernel's form stands for both of
/// tract's GELU ops (exact, and the tanh approximation); the CPU device computes the exact
/// form only, so a tanh GELU stays tract's there.
pub(crate) fn is_gelu(device: &DeviceHandle, node: &TypedNode) -> bool {
    use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
    use tract_onnx::tract_core::ops::nn::{GeluApproximate, GeluExact};
    node.op_as::<ElementWiseOp>().is_some_and(|op| {
        op.0.is::<GeluExact>() || (!device.is_cpu() && op.0.is::<GeluApproximate>())
    })
}

/// If `t` varies along the last axis only (every other dimension 1) and has `d` values, its
/// values.
pub(crate) fn per_column(t: &Tensor, d: usize) -> Option<Vec<f32>> {
    let shape = t.shape();
    let last_only = shape.iter().rev().skip(1).all(|&s| s == 1);
    if !last_only || t.len() != d {
        return None;
    }
    Some(t.try_as_plain_ram().ok()?.as_slice::<f32>().ok()?.to_vec())
}
