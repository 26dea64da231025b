//! The prediction beside published measurements of another NPU Whisper encoder.
//!
//! whisper-xdna (github.com/drakosha/whisper-xdna, read at commit d43cb82) runs Whisper's
//! encoder on an XDNA1 NPU (Ryzen 7 PRO 8845HS, 4 columns, XRT 2.21, bfloat16 operands with
//! float32 sums) and publishes the time of one 30 s window (its README, lines 450-452; raw XRT
//! with runlists, one window at a time): tiny 484 ms, small 1507 ms, large-v3 3990 ms (and
//! 3346 ms for large-v3-turbo, whose encoder is large-v3's). Its design is not this project's:
//! one xclbin per GEMM shape, cached under the 6 contexts an XDNA1 holds; per layer the Q, K
//! and V projections as 3 GEMM runs, attention as one `Q K^T` run a head, one softmax run over
//! every head and one `P V` run a head, the output projection, the first FFN product (in
//! chunks of 1280 columns past 4096), GELU as runs of its own, the second FFN product;
//! LayerNorm, residual additions and the heads' transposes on the CPU (its
//! `src/npu_whisper_encoder.py` and `src/rawxrt.py`).
//!
//! [`whisper_xdna`] predicts those windows with the terms of [`crate::placement::predict`]
//! (compute, fixed cost per run, hardware contexts) plus the row operations and overlay
//! switches that design has, each constant taken from whisper-xdna's own published figures
//! ([`XDNA_GEMM_FLOPS`] and the others, each with its source); nothing is fitted to the
//! published windows. The model predicts the NPU's time only: whisper-xdna's figures are wall
//! times that include the CPU's share of the encoder (LayerNorm, transposes, the GEMMs'
//! argument copies), which it does not publish apart. The difference is the error this
//! prediction makes on those points; `amanuensis inspect --published` prints it.

use amanuensis_kernels::contexts::{ContextLimit, created_per_window};
use amanuensis_kernels::gemm::GemmContract;
use amanuensis_kernels::hw::DeviceFamily;

use crate::placement::{EncoderDims, Prediction, predict, whisper_placement};

/// whisper-xdna's GEMM rate: the mean of its three published best rates on large shapes,
/// 1761, 1514 and 1409 GFLOP/s (README lines 238-243).
pub const XDNA_GEMM_FLOPS: f64 = (1761e9 + 1514e9 + 1409e9) / 3.0;
/// Its rate on attention's products ("skinny attention", 386 GFLOP/s, README line 243).
pub const XDNA_ATTENTION_FLOPS: f64 = 386e9;
/// Its GELU runs: 882 ms over large's pass of 32 layers x 1500 x 5120 values (16 tiles,
/// `src/rowops.py` line 31), per value.
pub const XDNA_GELU_SECONDS_PER_VALUE: f64 = 0.882 / (32.0 * 1500.0 * 5120.0);
/// Its softmax runs: 562 ms over large's pass of 32 layers x 20 heads x 1500 x 1500 scores
/// (`src/rowops.py` line 31), per score.
pub const XDNA_SOFTMAX_SECONDS_PER_VALUE: f64 = 0.562 / (32.0 * 20.0 * 1500.0 * 1500.0);
/// Fixed cost of one run: a 512 x 512 x 512 GEMM takes 0.267 ms through pyxrt (README lines
/// 498-499), of which its 268 MFLOP at [`XDNA_GEMM_FLOPS`] are 0.17 ms.
pub const XDNA_RUN_SECONDS: f64 = 0.267e-3 - 2.0 * 512.0 * 512.0 * 512.0 / XDNA_GEMM_FLOPS;
/// One overlay switch: 2.81 ms per pair (README lines 324-327).
pub const XDNA_SWITCH_SECONDS: f64 = 2.81e-3 / 2.0;
/// One hardware context created (README line 493).
pub const XDNA_CONTEXT_SECONDS: f64 = 2.5e-3;

/// whisper-xdna's published window times (README lines 450-452) and the catalog names of
/// the encoders they were measured with.
pub const PUBLISHED: [(&str, f64); 3] = [("tiny", 484.0), ("small", 1507.0), ("large-v3", 3990.0)];

/// A prediction of whisper-xdna's window, in parts (ms).
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct XdnaPrediction {
    /// GEMMs (convolutions, projections, FFN) at [`XDNA_GEMM_FLOPS`].
    pub gemm_ms: f64,
    /// Attention's two products at [`XDNA_ATTENTION_FLOPS`].
    pub attention_ms: f64,
    /// GELU and softmax runs.
    pub row_ops_ms: f64,
    /// Runs of the window, each at [`XDNA_RUN_SECONDS`].
    pub runs: u64,
    /// Their fixed cost.
    pub run_ms: f64,
    /// Overlay switches (a run whose xclbin is not the previous run's).
    pub switches: u64,
    /// Their cost.
    pub switch_ms: f64,
    /// Contexts created per window once running (LRU under 6).
    pub contexts: u64,
    /// Their cost.
    pub context_ms: f64,
    /// The sum.
    pub total_ms: f64,
}

/// whisper-xdna's xclbins in the order one window runs them (one entry a run).
fn xdna_runs(dims: EncoderDims) -> Vec<String> {
    let d = dims.d_model;
    let ffn = 4 * d;
    // The first FFN product in chunks of 1280 columns past 4096 (large), each chunk then
    // sharing the projections' xclbin; otherwise one run of its own shape.
    let chunks = if ffn > 4096 { ffn.div_ceil(1280) } else { 1 };
    let fc1 = if chunks > 1 {
        "projection".to_string()
    } else {
        format!("fc1 {ffn}")
    };
    let mut runs = vec![
        "conv1".to_string(),
        "gelu".to_string(),
        "conv2".to_string(),
        "gelu".to_string(),
    ];
    for _ in 0..dims.layers {
        runs.extend(std::iter::repeat_n("projection".to_string(), 3));
        runs.extend(std::iter::repeat_n("q k^t".to_string(), dims.heads));
        runs.push("softmax".to_string());
        runs.extend(std::iter::repeat_n("p v".to_string(), dims.heads));
        runs.push("projection".to_string());
        runs.extend(std::iter::repeat_n(fc1.clone(), chunks));
        runs.extend(std::iter::repeat_n("gelu ffn".to_string(), chunks));
        runs.push("fc2".to_string());
    }
    runs
}

/// whisper-xdna's window on an encoder of `dims`, predicted.
pub fn whisper_xdna(dims: EncoderDims) -> XdnaPrediction {
    let (d, layers, heads) = (dims.d_model as f64, dims.layers as f64, dims.heads as f64);
    let (frames, positions) = (3000.0, 1500.0);
    let gemm_flops = 2.0 * frames * (3.0 * dims.n_mels as f64) * d
        + 2.0 * positions * 3.0 * d * d
        + layers * 2.0 * positions * (4.0 * d * d + 8.0 * d * d);
    let attention_flops = layers * heads * 2.0 * 2.0 * positions * positions * 64.0;
    let gelu_values = frames * d + positions * d + layers * positions * 4.0 * d;
    let softmax_values = layers * heads * positions * positions;
    let runs = xdna_runs(dims);
    let switches = runs.windows(2).filter(|w| w[0] != w[1]).count() as u64 + 1;
    let limit = ContextLimit {
        max: 6,
        drain_when_full: false,
    };
    let contexts = created_per_window(&runs, limit, 3)[2];
    let gemm_ms = gemm_flops / XDNA_GEMM_FLOPS * 1e3;
    let attention_ms = attention_flops / XDNA_ATTENTION_FLOPS * 1e3;
    let row_ops_ms = (gelu_values * XDNA_GELU_SECONDS_PER_VALUE
        + softmax_values * XDNA_SOFTMAX_SECONDS_PER_VALUE)
        * 1e3;
    let run_ms = runs.len() as f64 * XDNA_RUN_SECONDS * 1e3;
    let switch_ms = switches as f64 * XDNA_SWITCH_SECONDS * 1e3;
    let context_ms = contexts as f64 * XDNA_CONTEXT_SECONDS * 1e3;
    XdnaPrediction {
        gemm_ms,
        attention_ms,
        row_ops_ms,
        runs: runs.len() as u64,
        run_ms,
        switches,
        switch_ms,
        contexts,
        context_ms,
        total_ms: gemm_ms + attention_ms + row_ops_ms + run_ms + switch_ms + context_ms,
    }
}

/// This project's GEMM cost model ([`amanuensis_kernels::hw::cost`],
/// [`GemmContract::dataflow_with_group`]) applied to mlir-aie's whole-array design, which
/// whisper-xdna's GEMMs follow: groups of one output tile, so A crosses once per column tile.
/// One row per product shape of an encoder layer of `dims` (the projections, the two FFN
/// products), on XDNA1: the useful FLOP/s the model predicts for one call, dispatches
/// included. whisper-xdna measured 1.41 to 1.76 TFLOP/s on large shapes
/// ([`XDNA_GEMM_FLOPS`] is their mean): the model's compute was derived from the kernels'
/// loops and the array's figures, not from those measurements, so the difference is its
/// error on another design.
pub fn whole_array_rates(dims: EncoderDims) -> Vec<((usize, usize, usize), f64)> {
    use amanuensis_kernels::hw::{self, cost::TileEnd};
    let contract = GemmContract::XDNA1;
    let d = dims.d_model;
    [(1500, d, d), (1500, d, 4 * d), (1500, 4 * d, d)]
        .into_iter()
        .map(|(m, k, n)| {
            let layout = contract.layout(m, k, n);
            let flow = contract.dataflow_with_group(&layout, TileEnd::None, 1);
            let seconds = flow.seconds + layout.dispatches as f64 * hw::XDNA1_DISPATCH_SECONDS;
            ((m, k, n), layout.flops() as f64 / seconds)
        })
        .collect()
}

/// One product of a window under this project's design (the sum over its calls), beside the
/// same product with each operand read from memory once ([`GemmContract::dataflow_operands_once`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GemmPart {
    /// The product's name ("q k v", "attention Q K^T", ...).
    pub name: &'static str,
    /// The cores' compute (ms).
    pub compute_ms: f64,
    /// The DMA alone: per dispatch the longer of reading and writing (ms).
    pub dma_ms: f64,
    /// The two overlapped, fill and drain included (ms).
    pub gemm_ms: f64,
    /// Bytes the DMAs read (A, B, the bias).
    pub read_bytes: u64,
    /// Bytes the DMAs write (C).
    pub write_bytes: u64,
    /// Bytes of A and B themselves: what reading each once reads, the bias included.
    pub once_read_bytes: u64,
    /// The DMA alone with each operand read once (ms).
    pub once_dma_ms: f64,
    /// The product's time with each operand read once (ms).
    pub once_gemm_ms: f64,
}

/// This project's design on each product of one window of an encoder of `dims` on `family`
/// ([`crate::placement::whisper_calls`], [`GemmContract::dataflow`]), and the same products
/// with each operand read once, in the order of the window.
pub fn gemm_parts(dims: EncoderDims, family: DeviceFamily) -> Vec<GemmPart> {
    use amanuensis_kernels::device::Kernel;
    use amanuensis_kernels::gemm::GemmLayout;
    let contract = GemmContract::for_family(family);
    let clock = amanuensis_kernels::hw::cost::clock_hz(family);
    let mut parts: Vec<GemmPart> = Vec::new();
    for (name, calls) in crate::placement::whisper_calls(dims, &contract) {
        for call in calls.iter().filter(|c| c.need.kernel == Kernel::MatMul) {
            let name = match (name, call.need.bf16_out) {
                (_, true) => "attention Q K^T",
                ("attention", false) => "attention P V",
                (name, false) => name,
            };
            let t = call.traffic;
            // The layout of one call, from the dispatch shape the call names.
            let [m_chunk, k_pad, n_pad] = call.need.shape[..] else {
                unreachable!("a product's dispatch shape is [m, k, n]")
            };
            let dispatches = (t.dispatches / t.calls) as usize;
            let layout = GemmLayout {
                m: m_chunk * dispatches,
                k: k_pad,
                n: n_pad,
                m_pad: m_chunk * dispatches,
                k_pad,
                n_pad,
                m_chunk,
                dispatches,
                precision: contract.precision,
            };
            let end = call.need.tile_end();
            let design = contract.dataflow(&layout, end);
            assert!(
                design.bytes() as u64 * t.calls == t.dma_bytes
                    && design.core_cycles * t.calls == t.core_cycles,
                "{name}: the layout rebuilt from the dispatch shape is not the call's"
            );
            let once = contract.dataflow_operands_once(&layout, end);
            let calls = t.calls as f64;
            let part = GemmPart {
                name,
                compute_ms: t.core_cycles as f64 / clock * 1e3,
                dma_ms: t.dma_ns as f64 * 1e-6,
                gemm_ms: t.model_ns as f64 * 1e-6,
                read_bytes: t.dma_bytes - t.dma_out_bytes,
                write_bytes: t.dma_out_bytes,
                once_read_bytes: (once.a_bytes + once.b_bytes + once.bias_bytes) as u64 * t.calls,
                once_dma_ms: once.dma_seconds * calls * 1e3,
                once_gemm_ms: once.seconds * calls * 1e3,
            };
            match parts.iter_mut().find(|p| p.name == name) {
                Some(sum) => {
                    sum.compute_ms += part.compute_ms;
                    sum.dma_ms += part.dma_ms;
                    sum.gemm_ms += part.gemm_ms;
                    sum.read_bytes += part.read_bytes;
                    sum.write_bytes += part.write_bytes;
                    sum.once_read_bytes += part.once_read_bytes;
                    sum.once_dma_ms += part.once_dma_ms;
                    sum.once_gemm_ms += part.once_gemm_ms;
                }
                None => parts.push(part),
            }
        }
    }
    parts
}

/// What reading each operand once would make of `now`, the prediction of a window of an
/// encoder of `dims` on `family`: the window (ms), the GEMMs' DMA term (ms), and the GEMMs'
/// compute term (ms); everything but the GEMMs as `now` has it.
pub fn operands_once_window(dims: EncoderDims, family: DeviceFamily, now: &Prediction) -> [f64; 3] {
    let parts = gemm_parts(dims, family);
    let saved: f64 = parts.iter().map(|p| p.gemm_ms - p.once_gemm_ms).sum();
    let dma: f64 = parts.iter().map(|p| p.once_dma_ms).sum();
    [now.total_ms - saved, dma, now.compute_ms]
}

/// One row of the calibration table: a published window, the prediction of it, and this
/// project's prediction for the same encoder.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Calibration {
    /// The catalog name of the encoder.
    pub model: String,
    /// whisper-xdna's published window (ms).
    pub published_ms: f64,
    /// The prediction of that window under whisper-xdna's design.
    pub theirs: XdnaPrediction,
    /// `(predicted - published) / published`.
    pub error: f64,
    /// This project's prediction for the same encoder on XDNA1 (one xclbin per kernel kind).
    pub ours_xdna1_ms: f64,
    /// The same on XDNA2.
    pub ours_xdna2_ms: f64,
    /// This project's XDNA1 prediction in parts.
    pub ours_xdna1: Prediction,
    /// This project's XDNA2 prediction in parts.
    pub ours_xdna2: Prediction,
}

/// The calibration table for the published points, the encoders' sizes from the catalog.
pub fn calibration() -> Vec<Calibration> {
    PUBLISHED
        .iter()
        .filter_map(|&(model, published_ms)| {
            let dims = crate::model::catalog::catalog()
                .iter()
                .find(|e| e.name == model)?
                .dims();
            let theirs = whisper_xdna(dims);
            let ours = |family: DeviceFamily| {
                let placement = whisper_placement(dims, &GemmContract::for_family(family));
                predict(&placement, family)
            };
            let (ours_xdna1, ours_xdna2) = (ours(DeviceFamily::Xdna1), ours(DeviceFamily::Xdna2));
            Some(Calibration {
                model: model.to_string(),
                published_ms,
                theirs,
                error: (theirs.total_ms - published_ms) / published_ms,
                ours_xdna1_ms: ours_xdna1.total_ms,
                ours_xdna2_ms: ours_xdna2.total_ms,
                ours_xdna1,
                ours_xdna2,
            })
        })
        .collect()
}
