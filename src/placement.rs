//! Which op ran where: the placement report of a rewritten encoder, its FLOPs and the device
//! traffic of one window, and a predicted device time from named hardware figures.

use std::collections::BTreeMap;

use amanuensis_kernels::device::{Kernel, KernelNeed, Snapshot, Traffic};
use amanuensis_kernels::hw;
use amanuensis_ops::{DeviceCall, OpKind, as_device_op, classify};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::Cost;

/// Nodes of one op kind on the device and on the CPU.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct KindCount {
    /// The op kind (`MatMul`, `Softmax`, `Gelu`, `LayerNorm`, or tract's op name).
    pub kind: String,
    /// Nodes on the device.
    pub device: usize,
    /// Nodes on the CPU.
    pub cpu: usize,
}

/// A node a rewrite rule left on the CPU, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LeftNode {
    /// The node's name.
    pub node: String,
    /// Its op.
    pub op: String,
    /// Why it stays on the CPU.
    pub reason: String,
}

/// The placement of an encoder's plan.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Placement {
    /// Per op kind, in report order: the offloadable kinds first, then the others by name.
    pub kinds: Vec<KindCount>,
    /// Multiply-accumulate FLOPs (2 per FMA of tract's cost model) of the nodes on the device.
    pub device_flops: u64,
    /// The same over every node.
    pub total_flops: u64,
    /// Nodes a rule declined, with the reason.
    pub left_on_cpu: Vec<LeftNode>,
    /// Device traffic per window, from the ops' layouts: MatMul, Softmax, Gelu.
    pub traffic: BTreeMap<String, Traffic>,
    /// Bytes of weights uploaded once per plan.
    pub weight_bytes: u64,
}

impl Placement {
    /// The share of FLOPs on the device, 0 to 1.
    pub fn device_share(&self) -> f64 {
        if self.total_flops == 0 {
            0.0
        } else {
            self.device_flops as f64 / self.total_flops as f64
        }
    }

    /// Traffic summed over kernels.
    pub fn total_traffic(&self) -> Traffic {
        self.traffic
            .values()
            .fold(Traffic::default(), |a, t| a + *t)
    }

    /// The device traffic as the device's counters would show it after one window.
    pub fn snapshot(&self) -> Snapshot {
        let mut s = Snapshot {
            weight_bytes: self.weight_bytes,
            ..Snapshot::default()
        };
        for kernel in Kernel::ALL {
            if let Some(t) = self.traffic.get(&format!("{kernel:?}")) {
                s.kernels[kernel.index()] = *t;
            }
        }
        s
    }
}

/// The op kind a tract node counts under.
fn tract_kind(name: &str) -> String {
    match name {
        "EinSum" | "Conv" | "MatMul" | "OptMatMul" | "PrefixMatMul" => "MatMul".into(),
        "Softmax" => "Softmax".into(),
        "GeluExact" | "GeluApproximate" => "Gelu".into(),
        "RmsNorm" => "LayerNorm".into(),
        other => other.into(),
    }
}

fn fma_count(model: &TypedModel, node: &TypedNode) -> u64 {
    let Ok(inputs) = model.node_input_facts(node.id) else {
        return 0;
    };
    let Ok(costs) = node.op.cost(&inputs) else {
        return 0;
    };
    costs
        .iter()
        .filter(|(c, _)| matches!(c, Cost::FMA(_)))
        .filter_map(|(_, n)| n.to_i64().ok())
        .map(|n| n.max(0) as u64)
        .sum()
}

fn add_traffic(map: &mut BTreeMap<String, Traffic>, kernel: Kernel, t: Traffic) {
    let e = map.entry(format!("{kernel:?}")).or_default();
    *e = *e + t;
}

/// The placement of `model` (the rewritten, not yet optimised encoder); `left` holds the
/// rules' reasons by node name.
pub fn placement(model: &TypedModel, left: &BTreeMap<String, String>) -> Placement {
    let mut kinds: BTreeMap<String, KindCount> = BTreeMap::new();
    let mut p = Placement::default();
    for node in model.nodes() {
        let op = node.op.as_op();
        let flops = 2 * fma_count(model, node);
        p.total_flops += flops;
        let (kind, on_device) = match classify(op) {
            Some((kind, device)) => (format!("{kind:?}"), device.is_some()),
            None => (tract_kind(&op.name()), false),
        };
        if node.op_is::<tract_onnx::tract_core::ops::source::TypedSource>()
            || node.op_is::<tract_onnx::tract_core::ops::konst::Const>()
        {
            continue;
        }
        if on_device {
            p.device_flops += flops;
        }
        // A fused attention counts as the two products and the softmax it runs.
        let counted: &[(&str, usize)] = if kind == "Attention" {
            &[("MatMul", 2), ("Softmax", 1)]
        } else {
            &[(kind.as_str(), 1)]
        };
        for &(kind, count) in counted {
            let entry = kinds.entry(kind.to_string()).or_insert_with(|| KindCount {
                kind: kind.to_string(),
                ..KindCount::default()
            });
            if on_device {
                entry.device += count;
            } else {
                entry.cpu += count;
            }
        }
        if let Some(reason) = left.get(&node.name) {
            p.left_on_cpu.push(LeftNode {
                node: node.name.clone(),
                op: op.name().to_string(),
                reason: reason.clone(),
            });
        }
        for call in device_calls(model, node) {
            add_traffic(&mut p.traffic, call.need.kernel, call.traffic);
            p.weight_bytes += call.upload_bytes;
        }
    }
    // Report order: the offloadable kinds, then the rest by name.
    let order = [
        OpKind::MatMul,
        OpKind::Softmax,
        OpKind::Gelu,
        OpKind::LayerNorm,
        OpKind::Im2Col,
    ];
    for k in order {
        if let Some(c) = kinds.remove(&format!("{k:?}")) {
            p.kinds.push(c);
        }
    }
    p.kinds.extend(kinds.into_values());
    p
}

fn concrete(model: &TypedModel, node: &TypedNode) -> Option<Vec<usize>> {
    model
        .outlet_fact(node.id.into())
        .ok()?
        .shape
        .as_concrete()
        .map(|s| s.to_vec())
}

/// The device calls of `node`, as its op answers for them ([`DeviceOp`]); none for a CPU
/// node. The placement's traffic and the plan's kernel needs both come from here.
fn device_calls(model: &TypedModel, node: &TypedNode) -> Vec<DeviceCall> {
    match (as_device_op(node.op.as_op()), concrete(model, node)) {
        (Some(op), Some(shape)) => op.device_calls(&shape),
        _ => Vec::new(),
    }
}

/// The kernels a device needs to run `model` (the rewritten encoder), one entry per distinct
/// dispatch: what [`amanuensis_kernels::device::Device::check_plan`] checks before a plan is
/// used.
pub fn kernel_needs(model: &TypedModel) -> Vec<KernelNeed> {
    let mut needs: Vec<KernelNeed> = model
        .nodes()
        .iter()
        .flat_map(|node| device_calls(model, node))
        .map(|call| call.need)
        .collect();
    needs.sort();
    needs.dedup();
    needs
}

/// A predicted XDNA1 device time for one window, from the traffic and named hardware
/// figures: never a measurement.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Prediction {
    /// Time in the GEMM kernels at the sustained rate, padding included (ms).
    pub compute_ms: f64,
    /// Time of the array's DMA traffic with memory, operands re-read per block included (ms).
    pub transfer_ms: f64,
    /// Fixed cost of the dispatches (ms).
    pub dispatch_ms: f64,
    /// The sum (ms): the three do not overlap in this model, an upper estimate.
    pub total_ms: f64,
}

/// Predicts the device time of one window from `placement`'s traffic.
pub fn predict(placement: &Placement) -> Prediction {
    let t = placement.total_traffic();
    let compute_ms = t.padded_flops as f64 / hw::XDNA1_SUSTAINED_BF16_FLOPS * 1e3;
    let transfer_ms = t.dma_bytes as f64 / hw::XDNA1_HOST_BYTES_PER_S * 1e3;
    let dispatch_ms = t.dispatches as f64 * hw::XDNA1_DISPATCH_SECONDS * 1e3;
    Prediction {
        compute_ms,
        transfer_ms,
        dispatch_ms,
        total_ms: compute_ms + transfer_ms + dispatch_ms,
    }
}
