//! Which op ran where: the placement report of a rewritten encoder, its FLOPs and the device
//! traffic of one window, and a predicted device time from named hardware figures.

use std::collections::BTreeMap;

use amanuensis_kernels::contexts::{ContextLimit, created_per_window};
use amanuensis_kernels::device::{AttentionDims, Kernel, KernelNeed, Snapshot, Traffic};
use amanuensis_kernels::gemm::GemmContract;
use amanuensis_kernels::hw::cost::TileEnd;
use amanuensis_kernels::hw::{self, DeviceFamily};
use amanuensis_ops::{DeviceCall, DeviceHandle, OpKind, as_device_op, classify};
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
    /// The kernels one window dispatches to, in the order it does (a head's three attention
    /// kernels in turn, head after head).
    #[serde(skip)]
    pub kernel_order: Vec<KernelNeed>,
    /// Under a precision plan: each product's role and the precision it computes in, in
    /// the order they run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub precisions: Vec<OpChoice>,
}

/// A product of the encoder under a precision plan ([`crate::precision`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OpChoice {
    /// The node's name.
    pub node: String,
    /// Its role (`fc2@3`).
    pub role: String,
    /// `bf16`, `bf16x3` or `f32` (on the host).
    pub precision: String,
}

/// How the kernels are built into xclbins, each of which needs a hardware context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KernelBuild {
    /// One xclbin per dispatch shape (an earlier `kernels/aie/build.sh`, and whisper-xdna).
    PerShape,
    /// One xclbin per kernel kind (GEMM epilogue and output, softmax, GELU), the shape given
    /// by the instruction stream (`kernels/aie/build.sh`).
    PerKind,
}

impl KernelBuild {
    /// The xclbin (so the context) that runs `need`.
    fn context_of(self, need: &KernelNeed) -> KernelNeed {
        match self {
            KernelBuild::PerShape => need.clone(),
            KernelBuild::PerKind => KernelNeed {
                shape: Vec::new(),
                ..need.clone()
            },
        }
    }
}

impl Placement {
    /// Hardware contexts created in the first window and in each window after (the steady
    /// state), with kernels built as `build`, under a budget of `limit`.
    pub fn contexts_per_window(&self, build: KernelBuild, limit: ContextLimit) -> (u64, u64) {
        let order: Vec<KernelNeed> = self
            .kernel_order
            .iter()
            .map(|need| build.context_of(need))
            .collect();
        let made = created_per_window(&order, limit, 3);
        (made[0], made[2])
    }
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
    // In the order a window evaluates the nodes, for the order of the kernels.
    let order = model
        .eval_order()
        .unwrap_or_else(|_| (0..model.nodes().len()).collect());
    for node in order.iter().map(|&id| &model.nodes()[id]) {
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
        let calls = device_calls(model, node);
        // A softmax or GELU op of the device that makes no device call runs on the host (the
        // float32 ones of bf16x3: GemmContract::softmax_gelu_on_device).
        let softmax_on_device = calls.iter().any(|c| c.need.kernel == Kernel::Softmax);
        // A fused attention counts as the two products and the softmax it runs.
        let counted: &[(&str, usize, bool)] = if kind == "Attention" {
            &[("MatMul", 2, on_device), ("Softmax", 1, softmax_on_device)]
        } else if kind == "Softmax" || kind == "Gelu" {
            &[(kind.as_str(), 1, on_device && !calls.is_empty())]
        } else {
            &[(kind.as_str(), 1, on_device)]
        };
        for &(kind, count, on_device) in counted {
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
        for call in &calls {
            add_traffic(&mut p.traffic, call.need.kernel, call.traffic);
            p.weight_bytes += call.upload_bytes;
        }
        push_order(&mut p.kernel_order, &calls);
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

/// Appends one node's dispatches to `order`: calls made as many times each (a head's three
/// attention kernels) in turn, call after call; otherwise each call's repeats together.
fn push_order(order: &mut Vec<KernelNeed>, calls: &[DeviceCall]) {
    let counts: Vec<u64> = calls.iter().map(|c| c.traffic.calls).collect();
    if counts.windows(2).all(|w| w[0] == w[1]) {
        for _ in 0..counts.first().copied().unwrap_or(0) {
            order.extend(calls.iter().map(|c| c.need.clone()));
        }
    } else {
        for call in calls {
            order.extend(std::iter::repeat_n(
                call.need.clone(),
                call.traffic.calls as usize,
            ));
        }
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

/// [`kernel_needs`] by the device that runs them (a precision plan puts ops on several): the
/// plan each device checks. The device's own answer, so that an op on the CPU device adds
/// none.
pub fn kernel_needs_by_device(model: &TypedModel) -> Vec<(DeviceHandle, Vec<KernelNeed>)> {
    let mut by_device: Vec<(DeviceHandle, Vec<KernelNeed>)> = Vec::new();
    for node in model.nodes() {
        let Some(op) = as_device_op(node.op.as_op()) else {
            continue;
        };
        let needs: Vec<KernelNeed> = device_calls(model, node)
            .into_iter()
            .map(|call| call.need)
            .collect();
        if needs.is_empty() {
            continue;
        }
        let device = op.device();
        match by_device.iter_mut().find(|(d, _)| d == device) {
            Some((_, all)) => all.extend(needs),
            None => by_device.push((device.clone(), needs)),
        }
    }
    for (_, needs) in &mut by_device {
        needs.sort();
        needs.dedup();
    }
    by_device
}

/// The sizes of a Whisper encoder, as the catalog gives them (`models/catalog.toml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct EncoderDims {
    /// Mel bins of its input.
    pub n_mels: usize,
    /// Width of its activations.
    pub d_model: usize,
    /// Transformer layers.
    pub layers: usize,
    /// Attention heads (64 values each).
    pub heads: usize,
}

/// The placement of a Whisper encoder of `dims` on a device of `contract`, from the sizes
/// alone, without a model file: the device calls of one window in the order the rewritten
/// plan makes them (the stem's two convolutions with GELU in their epilogue, then per layer
/// the Q, K and V projections, attention head by head, the output projection and the two FFN
/// products), their traffic, the weights uploaded and the device's FLOPs (`total_flops` counts
/// the device's only). `tests/calibration.rs` holds it to the placement of the real plans of
/// tiny.en and base.
pub fn whisper_placement(dims: EncoderDims, contract: &GemmContract) -> Placement {
    let mut p = Placement::default();
    for (_, calls) in whisper_calls(dims, contract) {
        for call in &calls {
            add_traffic(&mut p.traffic, call.need.kernel, call.traffic);
            p.weight_bytes += call.upload_bytes;
            p.device_flops += call.traffic.flops;
        }
        push_order(&mut p.kernel_order, &calls);
    }
    p.total_flops = p.device_flops;
    p
}

/// The device calls of one window of a Whisper encoder of `dims` in the order the plan makes
/// them, each group named by its product (`conv1`, `conv2`, `q k v`, `attention`, `out`,
/// `fc1`, `fc2`): what [`whisper_placement`] adds up.
pub fn whisper_calls(
    dims: EncoderDims,
    contract: &GemmContract,
) -> Vec<(&'static str, Vec<DeviceCall>)> {
    const HEAD: usize = 64;
    let d = dims.d_model;
    let gemm = |(m, k, n), gelu| DeviceCall::gemm_with_weights(contract, (m, k, n), 1, true, gelu);
    let mut calls = vec![
        (
            "conv1",
            vec![gemm((WHISPER_FRAMES, 3 * dims.n_mels, d), true)],
        ),
        ("conv2", vec![gemm((WHISPER_POSITIONS, 3 * d, d), true)]),
    ];
    let head = AttentionDims {
        m: WHISPER_POSITIONS,
        d: HEAD,
        n: WHISPER_POSITIONS,
        dv: HEAD,
    };
    for _ in 0..dims.layers {
        for _ in 0..3 {
            calls.push(("q k v", vec![gemm((WHISPER_POSITIONS, d, d), false)]));
        }
        calls.push((
            "attention",
            DeviceCall::attention(contract, head, dims.heads),
        ));
        calls.push(("out", vec![gemm((WHISPER_POSITIONS, d, d), false)]));
        calls.push(("fc1", vec![gemm((WHISPER_POSITIONS, d, 4 * d), true)]));
        calls.push(("fc2", vec![gemm((WHISPER_POSITIONS, 4 * d, d), false)]));
    }
    calls
}

/// Whisper's sizes behind [`whisper_placement`]: mel frames of a window, and positions after
/// the stride-2 convolution (every Whisper encoder).
const WHISPER_FRAMES: usize = 3000;
const WHISPER_POSITIONS: usize = 1500;

/// One kernel the device must provide for a Whisper encoder, as `kernels/aie/build.sh` builds
/// it and `kernels/src/manifest.rs` finds it: a kernel kind at one dispatch shape. `amanuensis
/// inspect --kernel-shapes` prints these as JSON for the build.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KernelShape {
    /// The manifest's `kind`: `gemm`, `softmax` or `gelu`.
    pub kind: &'static str,
    /// The build's name for it (`gemm_1536x512x512_bias`, `softmax_1500x1500x1536`,
    /// `gelu_512000`): its instruction stream is `<name>.insts.bin`.
    pub name: String,
    /// The shape of one dispatch, the manifest's `shape`: GEMM padded M chunk, K, N; softmax
    /// rows, values of a row, row stride; GELU values.
    pub shape: Vec<usize>,
    /// The GEMM's epilogue, the manifest's `epilogue`: `none`, `bias` or `bias_gelu` (`none`
    /// for the other kinds).
    pub epilogue: &'static str,
    /// The GEMM's output type, the manifest's `output`: `f32`, or `bf16` for attention's
    /// scores left on the device (`f32` for the other kinds).
    pub output: &'static str,
    /// Calls of one window of the plan (each one dispatch or more, as the layout cuts M); 0
    /// for a standalone GELU, built for a plan whose GELU is not fused into its product.
    pub calls_per_window: u64,
}

impl KernelShape {
    /// The entry for `need`, called `calls_per_window` times a window.
    pub fn new(need: &KernelNeed, calls_per_window: u64) -> KernelShape {
        let dims = need
            .shape
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("x");
        let (kind, epilogue, output, name) = match need.kernel {
            Kernel::MatMul => {
                let epilogue = match (need.bias, need.gelu) {
                    (_, true) => "bias_gelu",
                    (true, false) => "bias",
                    (false, false) => "none",
                };
                let (output, suffix) = if need.bf16_out {
                    ("bf16", "_bf16")
                } else {
                    ("f32", "")
                };
                let name = format!("gemm_{dims}_{epilogue}{suffix}");
                ("gemm", epilogue, output, name)
            }
            Kernel::Softmax => ("softmax", "none", "f32", format!("softmax_{dims}")),
            Kernel::Gelu => ("gelu", "none", "f32", format!("gelu_{dims}")),
        };
        KernelShape {
            kind,
            name,
            shape: need.shape.clone(),
            epilogue,
            output,
            calls_per_window,
        }
    }
}

/// The kernels to build for a Whisper encoder of `dims` on a device of `contract`: every
/// kernel its plan dispatches ([`whisper_placement`]'s kernel order, each once, in the order
/// of its first call, with its calls a window), then a standalone GELU for each product a
/// GELU follows (the two convolutions and the first FFN product) at the dispatch shape
/// `DeviceGelu` asks for, for a plan whose rewrite could not fuse that GELU into the product's
/// epilogue (none where the contract runs GELU on the host). This is the list
/// `kernels/aie/build.sh` builds; `tests/kernel_shapes.rs` holds it to the plans.
pub fn whisper_kernels(dims: EncoderDims, contract: &GemmContract) -> Vec<KernelShape> {
    let placement = whisper_placement(dims, contract);
    let mut needs: Vec<(&KernelNeed, u64)> = Vec::new();
    for need in &placement.kernel_order {
        match needs.iter_mut().find(|(n, _)| *n == need) {
            Some((_, calls)) => *calls += 1,
            None => needs.push((need, 1)),
        }
    }
    let mut kernels: Vec<KernelShape> = needs
        .into_iter()
        .map(|(need, calls)| KernelShape::new(need, calls))
        .collect();
    let d = dims.d_model;
    for (rows, cols) in [
        (WHISPER_FRAMES, d),
        (WHISPER_POSITIONS, d),
        (WHISPER_POSITIONS, 4 * d),
    ] {
        // DeviceGelu's call: every value of the product's output as one row.
        let Some(call) = DeviceCall::stream(contract, Kernel::Gelu, rows * cols, 1, 1) else {
            continue;
        };
        let gelu = KernelShape::new(&call.need, 0);
        if !kernels.iter().any(|k| k.name == gelu.name) {
            kernels.push(gelu);
        }
    }
    kernels
}

/// A predicted NPU device time for one pass of a Whisper decoder's products (every layer's
/// self-attention Q, K, V and output projections, cross-attention Q and output projections,
/// two feed-forward products, and the vocabulary's), `rows` tokens at once (a batch of
/// sequences), from the GEMM design's cost ([`GemmContract::dataflow`]): never a measurement.
/// The attention itself, the small ops and the decoding rules stay on the CPU and are not
/// counted.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct DecoderPassPrediction {
    /// The NPU family predicted for.
    pub family: &'static str,
    /// Token rows a pass.
    pub rows: usize,
    /// GEMM dispatches a pass.
    pub dispatches: usize,
    /// The products' weights in bfloat16 (bytes), which every pass must read.
    pub weight_bytes: usize,
    /// The cores' compute, padding included (ms).
    pub compute_ms: f64,
    /// The design's DMA alone (ms): B read once per 256-row block, A once per group of
    /// column tiles, C written once.
    pub transfer_ms: f64,
    /// Dispatches' fixed cost (ms).
    pub dispatch_ms: f64,
    /// The design's time, compute and DMA overlapped, plus the dispatches (ms).
    pub total_ms: f64,
    /// Reading the weights alone at the host's rate, with the dispatches: the floor of any
    /// design that streams the weights every pass (ms).
    pub weights_floor_ms: f64,
}

/// [`DecoderPassPrediction`] of a decoder of `dims` with `vocab` tokens on `contract`'s array.
pub fn predict_decoder_pass(
    dims: EncoderDims,
    vocab: usize,
    rows: usize,
    contract: &GemmContract,
) -> DecoderPassPrediction {
    let d = dims.d_model;
    // (K, N, the tiles' end): every product has a bias or the plan's bias of zeros; the first
    // feed-forward product ends in GELU.
    let mut products = Vec::new();
    for _ in 0..dims.layers {
        products.extend([(d, d, TileEnd::Bias); 6]);
        products.extend([(d, 4 * d, TileEnd::BiasGelu), (4 * d, d, TileEnd::Bias)]);
    }
    products.push((d, vocab, TileEnd::Bias));
    let family = contract.family();
    let (mut compute, mut dma, mut time, mut dispatches, mut weights) = (0.0, 0.0, 0.0, 0, 0);
    for (k, n, end) in products {
        let layout = contract.layout(rows, k, n);
        let flow = contract.dataflow(&layout, end);
        compute += flow.compute_seconds;
        dma += flow.dma_seconds;
        time += flow.seconds;
        dispatches += layout.dispatches;
        weights += 2 * k * n;
    }
    let dispatch_ms = dispatches as f64 * hw::XDNA1_DISPATCH_SECONDS * 1e3;
    DecoderPassPrediction {
        family: family.name(),
        rows,
        dispatches,
        weight_bytes: weights,
        compute_ms: compute * 1e3,
        transfer_ms: dma * 1e3,
        dispatch_ms,
        total_ms: time * 1e3 + dispatch_ms,
        weights_floor_ms: weights as f64 / family.host_bytes_per_s() * 1e3 + dispatch_ms,
    }
}

/// A predicted NPU device time for one window, from the traffic, the GEMM design's cost
/// ([`amanuensis_kernels::hw::cost`]) and named hardware figures: never a measurement.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Prediction {
    /// The NPU family predicted for (`XDNA1`, `XDNA2`).
    pub family: &'static str,
    /// The GEMMs' compute: the cycles of one core from the kernels' loops, padding included
    /// (ms).
    pub compute_ms: f64,
    /// The GEMMs' DMA alone: per dispatch the longer of reading (A, B, the bias) and writing
    /// (C) at the shim channels' and the host's rates (ms).
    pub transfer_ms: f64,
    /// The GEMMs as the design runs them: per dispatch the longest of compute, reading and
    /// writing, which overlap, plus the first objects' fill and the last drain (ms).
    pub gemm_ms: f64,
    /// Softmax and GELU kernels: per dispatch the longer of their cores' cycles (from the
    /// kernels' loops, [`amanuensis_kernels::hw::cost::softmax_cycles`]) and their bytes each
    /// way at the host's rate (ms).
    pub stream_ms: f64,
    /// Fixed cost of the dispatches (ms).
    pub dispatch_ms: f64,
    /// Hardware contexts created per window once running, with `kernels/aie/build.sh`'s one
    /// xclbin per kernel kind: none once the first window has created them all, unless the
    /// budget cannot hold the plan's kinds.
    pub contexts_per_window: u64,
    /// Their creation (ms).
    pub context_ms: f64,
    /// The sum of the GEMMs, the streams, the dispatches and the contexts (ms).
    pub total_ms: f64,
    /// Contexts the plan needs (one per kernel kind), all created in the first window.
    pub contexts: u64,
    /// Contexts per window with one xclbin per dispatch shape instead (an earlier build's
    /// layout, and whisper-xdna's): the budget's cache then churns.
    pub per_shape_contexts_per_window: u64,
}

/// Predicts the device time of one window from `placement`'s traffic and kernel order, on
/// an NPU of `family`.
pub fn predict(placement: &Placement, family: DeviceFamily) -> Prediction {
    let counts = placement.snapshot();
    let (t, gemm) = (counts.total(), *counts.get(Kernel::MatMul));
    let compute_ms = gemm.core_cycles as f64 / hw::cost::clock_hz(family) * 1e3;
    let transfer_ms = gemm.dma_ns as f64 * 1e-6;
    let gemm_ms = gemm.model_ns as f64 * 1e-6;
    let stream_ms = (t.model_ns - gemm.model_ns) as f64 * 1e-6;
    let dispatch_ms = t.dispatches as f64 * hw::XDNA1_DISPATCH_SECONDS * 1e3;
    let limit = ContextLimit::for_family(family);
    let (contexts, contexts_per_window) =
        placement.contexts_per_window(KernelBuild::PerKind, limit);
    let (_, per_shape_contexts_per_window) =
        placement.contexts_per_window(KernelBuild::PerShape, limit);
    let context_ms = contexts_per_window as f64 * hw::XDNA1_CONTEXT_CREATE_SECONDS * 1e3;
    Prediction {
        family: family.name(),
        compute_ms,
        transfer_ms,
        gemm_ms,
        stream_ms,
        dispatch_ms,
        contexts_per_window,
        context_ms,
        total_ms: gemm_ms + stream_ms + dispatch_ms + context_ms,
        contexts,
        per_shape_contexts_per_window,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A decoder pass reads every product's weights: 14 d^2 a layer (six d x d projections,
    /// two feed-forward products of 4 d^2) and the vocabulary's d x vocab, in bfloat16; a
    /// design that reads each operand once takes at least their time at the host's rate, and
    /// padding rows to the array's block makes a few rows cost what one costs.
    #[test]
    fn decoder_pass_reads_every_weight() {
        let dims = EncoderDims {
            n_mels: 80,
            d_model: 384,
            layers: 4,
            heads: 6,
        };
        for family in [DeviceFamily::Xdna1, DeviceFamily::Xdna2] {
            let contract = GemmContract::for_family(family);
            let one = predict_decoder_pass(dims, 51_864, 1, &contract);
            assert_eq!(one.weight_bytes, 2 * (4 * 14 * 384 * 384 + 384 * 51_864));
            assert!(one.dispatches > 4 * 8, "{}", one.dispatches);
            let floor = one.weight_bytes as f64 / family.host_bytes_per_s() * 1e3;
            assert!(one.weights_floor_ms > floor && one.total_ms >= one.weights_floor_ms);
            let eight = predict_decoder_pass(dims, 51_864, 8, &contract);
            assert_eq!(eight.compute_ms, one.compute_ms);
        }
    }
}
