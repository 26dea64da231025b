use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use amanuensis::backend::{Backend, DeviceFamily, Kernels, Precision};
use amanuensis::model::Encoder;
use amanuensis::placement::{Prediction, predict};
use amanuensis_kernels::hw;

use super::{PlanArgs, write_json};

/// Show where each op of an encoder runs, the device traffic of one 30 s window, and a
/// predicted device time on an XDNA1 (or, with --device-family xdna2, an XDNA2) NPU.
///
/// For each op kind: nodes on the device and on the CPU; the share of the encoder's FLOPs on
/// the device; dispatches and bytes per window; and, from those counts and named hardware
/// figures, a predicted device time (a prediction, never a measurement). Nodes that the
/// rewrite left on the CPU are listed with the reason.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  amanuensis inspect --model base\n  \
    amanuensis inspect --model ./whisper-small-onnx/ --json small.placement.json\n  \
    amanuensis inspect --published\n  \
    amanuensis inspect --kernel-shapes --model large-v3 --device-family xdna2")]
pub struct InspectArgs {
    #[command(flatten)]
    plan: PlanArgs,

    /// The plan to inspect: `emu` and `npu` give the NPU plan.
    #[arg(long, value_parser = super::named::<Backend>(Backend::NAMES), default_value_t = Backend::Emu)]
    backend: Backend,

    /// Also list every node of the optimised plan with its op.
    #[arg(long)]
    nodes: bool,

    /// Write the report as JSON to this file as well.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,

    /// Instead of a model's report: the prediction beside whisper-xdna's published window
    /// times (tiny, small, large-v3 on an XDNA1), under its design and under this project's,
    /// with the prediction's error on those points. Needs no model file (the catalog's sizes).
    #[arg(long)]
    published: bool,

    /// Instead of a model's report: the kernels kernels/aie/build.sh builds for a catalog
    /// encoder (--model, a catalog name) on --device-family under --precision, as JSON on
    /// standard output: every kernel the plan dispatches, with its calls a window, and the
    /// standalone GELUs a plan needs when a GELU is not fused (0 calls). Needs no model file
    /// (the catalog's sizes).
    #[arg(long, conflicts_with = "published")]
    kernel_shapes: bool,

    /// Instead of a model's report: the predicted NPU time of a pass of the decoder's products
    /// at 1 to 16 rows (sequences decoded together) on both families, under this project's
    /// GEMM design and under one that reads each operand once, for a catalog model (--model).
    /// Needs no model file; predictions, not measurements.
    #[arg(long, conflicts_with_all = ["published", "kernel_shapes"])]
    decoder: bool,

    /// Instead of a model's report: where bfloat16 changes the model's decisions, on these
    /// audio files (every 30 s window). Each group of ops (each kind over all layers, then
    /// each layer) runs in bf16 on `emu` while everything else stays float32 on the host; for
    /// each: the encoder output's error against the cpu plan's, the change of the reference
    /// tokens' log-probabilities under the decoder, the positions whose most likely token
    /// changes, and the windows whose greedy decoding changes. Then the plan of --precision on
    /// the same windows, with its predicted NPU time beside plain bf16's.
    #[arg(long, value_name = "AUDIO", num_args = 1.., conflicts_with_all = ["published", "kernel_shapes", "decoder"])]
    sensitivity: Vec<PathBuf>,

    /// With --sensitivity: also each op of each layer alone.
    #[arg(long, requires = "sensitivity")]
    per_op: bool,

    /// With --sensitivity: no groups, only plain bf16 and the plan of --precision.
    #[arg(long, requires = "sensitivity", conflicts_with = "per_op")]
    plan_only: bool,
}

#[derive(serde::Serialize)]
struct Report<'a> {
    model: String,
    family: &'static str,
    backend: Backend,
    placement: &'a amanuensis::placement::Placement,
    device_flops_share: f64,
    predicted_device_time: Option<Prediction>,
    prediction_basis: PredictionBasis,
    /// The kernels the device must provide, one dispatch shape each (`KernelNeed`'s text).
    kernels: Vec<String>,
}

#[derive(serde::Serialize)]
struct PredictionBasis {
    /// The cores' clock (Hz).
    clock_hz: f64,
    /// Cycles of one k-tile call of the GEMM's per-core tile (`hw::cost::ktile_cycles`).
    ktile_cycles: u64,
    /// One shim DMA channel (bytes/s).
    channel_bytes_per_second: f64,
    /// Memory, each way (bytes/s).
    host_bytes_per_second: f64,
    dispatch_seconds: f64,
}

pub fn run(args: InspectArgs) -> Result<()> {
    if args.published {
        return published(args.json.as_deref());
    }
    if args.kernel_shapes {
        return kernel_shapes(&args);
    }
    if args.decoder {
        return decoder(&args);
    }
    if !args.sensitivity.is_empty() {
        return sensitivity(&args);
    }
    let options = args.plan.options(args.backend)?;
    let model_dir = args.plan.model_dir()?;
    let encoder = Encoder::load(&model_dir, &options)?;
    let resolved = encoder.backend();
    if let Some(note) = &resolved.note {
        eprintln!("{note}");
    }
    let dims = encoder.dims();
    let p = encoder.placement();
    let offloads = resolved.device.is_some();
    println!(
        "model: {} ({}: {} mels, d_model {}, {} layers, {} heads)",
        encoder.files().encoder.display(),
        dims.family(),
        dims.n_mels,
        dims.d_model,
        dims.n_layers,
        dims.n_heads
    );
    println!("backend: {}", resolved.backend);
    println!();
    println!("{:<22} {:>8} {:>8}", "op kind", "device", "cpu");
    for k in &p.kinds {
        println!("{:<22} {:>8} {:>8}", k.kind, k.device, k.cpu);
    }
    if !p.precisions.is_empty() {
        println!();
        println!("precision plan: {}", args.plan.precision);
        for precision in ["bf16", "bf16x3", "f32"] {
            let roles: Vec<&str> = p
                .precisions
                .iter()
                .filter(|c| c.precision == precision)
                .map(|c| c.role.as_str())
                .collect();
            if !roles.is_empty() {
                let place = if precision == "f32" {
                    "on the host"
                } else {
                    "on the NPU"
                };
                println!(
                    "  {precision} {place} ({}): {}",
                    roles.len(),
                    roles.join(" ")
                );
            }
        }
    }
    println!();
    println!(
        "FLOPs on the device: {:.2}% ({:.2} of {:.2} GFLOP per window)",
        100.0 * p.device_share(),
        p.device_flops as f64 / 1e9,
        p.total_flops as f64 / 1e9
    );
    if p.left_on_cpu.is_empty() {
        println!("left on the CPU by the rewrite: none");
    } else {
        println!("left on the CPU by the rewrite:");
        for l in &p.left_on_cpu {
            println!("  {} ({}): {}", l.node, l.op, l.reason);
        }
    }
    let family = encoder
        .backend()
        .device
        .as_ref()
        .map_or(hw::DeviceFamily::Xdna1, |d| d.contract().family());
    let prediction = offloads.then(|| predict(p, family));
    let kernels: Vec<String> = if offloads {
        encoder
            .kernel_needs()
            .iter()
            .map(ToString::to_string)
            .collect()
    } else {
        Vec::new()
    };
    if offloads {
        println!();
        println!(
            "device traffic per 30 s window (from the kernels' layouts): in and out once per \
             call; DMA as the GEMM design reads and writes its operands (GemmContract::dataflow)"
        );
        println!(
            "{:<10} {:>7} {:>11} {:>10} {:>10} {:>10} {:>14}",
            "kernel", "calls", "dispatches", "MiB in", "MiB out", "MiB DMA", "GFLOP (padded)"
        );
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        for (name, t) in &p.traffic {
            println!(
                "{:<10} {:>7} {:>11} {:>10.1} {:>10.1} {:>10.1} {:>14}",
                name,
                t.calls,
                t.dispatches,
                mib(t.bytes_in),
                mib(t.bytes_out),
                mib(t.dma_bytes),
                if t.flops > 0 {
                    format!(
                        "{:.2} ({:.2})",
                        t.flops as f64 / 1e9,
                        t.padded_flops as f64 / 1e9
                    )
                } else {
                    String::new()
                }
            );
        }
        println!(
            "weights uploaded once per plan: {:.1} MiB",
            mib(p.weight_bytes)
        );
        println!();
        println!(
            "kernels this plan needs ({} dispatch shapes, one instruction stream each in the xclbin \
             of its kind; kernels/aie/build.sh builds them):",
            kernels.len()
        );
        for k in &kernels {
            println!("  {k}");
        }
        let pr = prediction.unwrap();
        let limit = amanuensis_kernels::contexts::ContextLimit::for_family(family);
        println!();
        println!(
            "predicted {} device time per window (a prediction from the counts above, not a \
             measurement): {:.1} ms = GEMMs {:.1} ms (compute {:.1} ms and DMA {:.1} ms, \
             overlapped) + softmax/GELU {:.1} ms + dispatches {:.1} ms + {} hardware contexts \
             created {:.1} ms",
            pr.family,
            pr.total_ms,
            pr.gemm_ms,
            pr.compute_ms,
            pr.transfer_ms,
            pr.stream_ms,
            pr.dispatch_ms,
            pr.contexts_per_window,
            pr.context_ms
        );
        println!(
            "  the GEMMs' compute from the kernels' loops at {:.1} GHz, their DMA from the bytes \
             the design moves at {:.0} GB/s a shim channel and {:.0} GB/s each way with memory; \
             {:.0} us per dispatch, {:.1} ms per context created (kernels/src/hw.rs gives the \
             sources and the estimates)",
            hw::cost::clock_hz(family) / 1e9,
            hw::cost::channel_bytes_per_s(family) / 1e9,
            family.host_bytes_per_s() / 1e9,
            hw::XDNA1_DISPATCH_SECONDS * 1e6,
            hw::XDNA1_CONTEXT_CREATE_SECONDS * 1e3
        );
        if encoder
            .backend()
            .device
            .as_ref()
            .is_some_and(|d| !d.contract().softmax_gelu_on_device())
        {
            println!(
                "  bf16x3: softmax and GELU run in float32 on the CPU (kernels/NUMERICS.md 7); \
                 that CPU work and the host's splitting of the operands are not in this \
                 prediction"
            );
        }
        println!(
            "  contexts: one xclbin per kernel kind (kernels/aie/build.sh) needs {} of {}'s {} \
             and creates {} per window once running; one xclbin per dispatch shape would create \
             {} per window",
            pr.contexts,
            pr.family,
            limit.max,
            pr.contexts_per_window,
            pr.per_shape_contexts_per_window
        );
    }
    if args.nodes {
        println!();
        println!("nodes of the optimised plan:");
        for node in encoder.model().nodes() {
            println!("  #{:<4} {:<24} {}", node.id, node.op.name(), node.name);
        }
    }
    if let Some(path) = &args.json {
        let report = Report {
            model: encoder.files().encoder.display().to_string(),
            family: dims.family(),
            backend: resolved.backend,
            placement: p,
            device_flops_share: p.device_share(),
            predicted_device_time: prediction,
            prediction_basis: PredictionBasis {
                clock_hz: hw::cost::clock_hz(family),
                ktile_cycles: hw::cost::ktile_cycles(family, (64, 64, 32)),
                channel_bytes_per_second: hw::cost::channel_bytes_per_s(family),
                host_bytes_per_second: family.host_bytes_per_s(),
                dispatch_seconds: hw::XDNA1_DISPATCH_SECONDS,
            },
            kernels,
        };
        write_json(path, &report)?;
    }
    Ok(())
}

/// `inspect --published`: [`amanuensis::calibration::calibration`] as a table.
fn published(json: Option<&std::path::Path>) -> Result<()> {
    use amanuensis::calibration as c;
    let table = c::calibration();
    println!(
        "whisper-xdna's published window times (github.com/drakosha/whisper-xdna README, Ryzen 7 \
         PRO 8845HS, XDNA1, raw XRT) beside this project's prediction of them under its design, \
         and this project's prediction for its own kernels (one xclbin per kind); predictions, \
         not measurements:"
    );
    println!(
        "{:<9} {:>10} {:>10} {:>7} | {:>6} {:>6} {:>6} {:>5} {:>6} {:>6} {:>5} {:>7} | {:>9} {:>9}",
        "model",
        "published",
        "predicted",
        "error",
        "GEMM",
        "attn",
        "rowops",
        "runs",
        "run ms",
        "switch",
        "ctx",
        "ctx ms",
        "ours XDNA1",
        "ours XDNA2"
    );
    for row in &table {
        let t = &row.theirs;
        println!(
            "{:<9} {:>8.0}ms {:>8.0}ms {:>+6.0}% | {:>6.0} {:>6.0} {:>6.0} {:>5} {:>6.0} {:>6.0} {:>5} {:>7.0} | {:>8.0}ms {:>8.0}ms",
            row.model,
            row.published_ms,
            t.total_ms,
            100.0 * row.error,
            t.gemm_ms,
            t.attention_ms,
            t.row_ops_ms,
            t.runs,
            t.run_ms,
            t.switch_ms,
            t.contexts,
            t.context_ms,
            row.ours_xdna1_ms,
            row.ours_xdna2_ms
        );
    }
    println!(
        "  their design's constants, all from whisper-xdna's own figures (src/calibration.rs \
         names each source): GEMM {:.2} TFLOP/s, attention products {:.3} TFLOP/s, GELU {:.2} \
         ns and softmax {:.2} ns a value, {:.3} ms a run, {:.2} ms a switch of xclbin, {:.1} ms a \
         context; columns GEMM to ctx ms are the prediction's parts (ms); the prediction counts \
         the NPU only, the published times include the CPU's share of the encoder",
        c::XDNA_GEMM_FLOPS / 1e12,
        c::XDNA_ATTENTION_FLOPS / 1e12,
        c::XDNA_GELU_SECONDS_PER_VALUE * 1e9,
        c::XDNA_SOFTMAX_SECONDS_PER_VALUE * 1e9,
        c::XDNA_RUN_SECONDS * 1e3,
        c::XDNA_SWITCH_SECONDS * 1e3,
        c::XDNA_CONTEXT_SECONDS * 1e3
    );
    println!();
    let dims = amanuensis::model::catalog::lookup("large-v3")
        .expect("large-v3 is in the catalog")
        .dims();
    let rates: Vec<String> = c::whole_array_rates(dims)
        .iter()
        .map(|((m, k, n), r)| format!("{m}x{k}x{n} {:.2}", r / 1e12))
        .collect();
    println!(
        "the GEMM cost model applied to mlir-aie's whole-array design (A read once per column \
         tile, as whisper-xdna's GEMMs), large-v3's products on XDNA1, TFLOP/s: {} (whisper-xdna \
         measured 1.41 to 1.76 on large shapes, mean {:.2})",
        rates.join(", "),
        c::XDNA_GEMM_FLOPS / 1e12
    );
    for family in [DeviceFamily::Xdna1, DeviceFamily::Xdna2] {
        println!();
        println!(
            "large-v3's products on {} under this project's design, a window: ms, and MB the \
             DMAs read and write; then the same products with A and B each read from memory \
             once on the same cores and DMA lanes (a bound, not a design)",
            family.name()
        );
        println!(
            "  {:<16} {:>8} {:>8} {:>8} {:>8} {:>8} | {:>8} {:>8} {:>8} {:>6}",
            "product",
            "compute",
            "DMA",
            "GEMM",
            "MB in",
            "MB out",
            "MB once",
            "DMA",
            "GEMM",
            "reads"
        );
        for p in c::gemm_parts(dims, family) {
            println!(
                "  {:<16} {:>8.1} {:>8.1} {:>8.1} {:>8.0} {:>8.0} | {:>8.0} {:>8.1} {:>8.1} {:>5.1}x",
                p.name,
                p.compute_ms,
                p.dma_ms,
                p.gemm_ms,
                p.read_bytes as f64 / 1e6,
                p.write_bytes as f64 / 1e6,
                p.once_read_bytes as f64 / 1e6,
                p.once_dma_ms,
                p.once_gemm_ms,
                p.read_bytes as f64 / p.once_read_bytes as f64
            );
        }
    }
    println!();
    println!(
        "this project's prediction in parts, ms (GEMM compute from the kernels' loops, GEMM DMA \
         from the bytes the design moves; the GEMMs overlap the two per dispatch):"
    );
    println!(
        "{:<9} {:<6} {:>8} {:>8} {:>8} {:>9} {:>9} {:>8} {:>8} | {:>8} {:>8} {:>8}",
        "model",
        "family",
        "compute",
        "DMA",
        "GEMMs",
        "softmax",
        "dispatch",
        "total",
        "DMA/cmp",
        "once DMA",
        "total",
        "DMA/cmp"
    );
    for row in &table {
        let dims = amanuensis::model::catalog::lookup(&row.model)
            .expect("the calibration's models are in the catalog")
            .dims();
        for (p, family) in [
            (&row.ours_xdna1, DeviceFamily::Xdna1),
            (&row.ours_xdna2, DeviceFamily::Xdna2),
        ] {
            let [once_total, once_dma, compute] = c::operands_once_window(dims, family, p);
            println!(
                "{:<9} {:<6} {:>8.0} {:>8.0} {:>8.0} {:>9.0} {:>9.0} {:>8.0} {:>8.2} | {:>8.0} {:>8.0} {:>8.2}",
                row.model,
                p.family,
                p.compute_ms,
                p.transfer_ms,
                p.gemm_ms,
                p.stream_ms,
                p.dispatch_ms,
                p.total_ms,
                p.transfer_ms / p.compute_ms,
                once_dma,
                once_total,
                once_dma / compute
            );
        }
    }
    println!(
        "  once DMA, total, DMA/cmp: the same window with every GEMM reading A and B from memory \
         once, the bias, C, fill and drain as the design has them (a bound, not a design)"
    );
    if let Some(path) = json {
        write_json(path, &table)?;
    }
    Ok(())
}

/// `inspect --kernel-shapes`: what `kernels/aie/build.sh` consumes.
#[derive(serde::Serialize)]
struct KernelShapes<'a> {
    /// The catalog name.
    model: &'a str,
    dims: amanuensis::placement::EncoderDims,
    family: DeviceFamily,
    precision: Precision,
    /// The per-core GEMM tile (m, k, n) of the family's contract.
    tile: [usize; 3],
    kernels: Vec<amanuensis::placement::KernelShape>,
}

/// `inspect --kernel-shapes`: [`amanuensis::placement::whisper_kernels`] as JSON.
fn decoder(args: &InspectArgs) -> Result<()> {
    let model = args.plan.model.as_str();
    let Some(entry) = amanuensis::model::catalog::lookup(model) else {
        anyhow::bail!(
            "--decoder takes a catalog name, whose sizes models/catalog.toml gives; {model:?} is \
             not one of {}",
            amanuensis::model::catalog::known_names()
        );
    };
    // The vocabularies of OpenAI's checkpoints: English-only 51864 tokens, multilingual 51865,
    // large-v3 (128 mel bins) 51866.
    let vocab = if model.ends_with(".en") {
        51_864
    } else if entry.n_mels == 128 {
        51_866
    } else {
        51_865
    };
    println!(
        "{model}: the decoder's products a pass on the NPU (predicted from named hardware \
         figures, not measured; attention and the rest stay on the CPU), ms"
    );
    println!(
        "{:<6} {:>4} {:>10} {:>8} {:>8} {:>9} {:>8} {:>14} {:>10}",
        "family",
        "rows",
        "dispatches",
        "compute",
        "DMA",
        "dispatch",
        "total",
        "weights floor",
        "weights MB"
    );
    let mut rows_out = Vec::new();
    for family in [DeviceFamily::Xdna1, DeviceFamily::Xdna2] {
        let contract = Kernels::default().contract(family);
        for rows in [1, 2, 4, 8, 16] {
            let p =
                amanuensis::placement::predict_decoder_pass(entry.dims(), vocab, rows, &contract);
            println!(
                "{:<6} {rows:>4} {:>10} {:>8.2} {:>8.2} {:>9.2} {:>8.2} {:>14.2} {:>10.1}",
                p.family,
                p.dispatches,
                p.compute_ms,
                p.transfer_ms,
                p.dispatch_ms,
                p.total_ms,
                p.weights_floor_ms,
                p.weight_bytes as f64 / 1e6
            );
            rows_out.push(p);
        }
    }
    if let Some(path) = &args.json {
        write_json(path, &rows_out)?;
    }
    Ok(())
}

fn kernel_shapes(args: &InspectArgs) -> Result<()> {
    let model = args.plan.model.as_str();
    let Some(entry) = amanuensis::model::catalog::lookup(model) else {
        anyhow::bail!(
            "--kernel-shapes takes a catalog name, whose sizes models/catalog.toml gives; \
             {model:?} is not one of {}",
            amanuensis::model::catalog::known_names()
        );
    };
    let family = args.plan.device_family.unwrap_or(DeviceFamily::Xdna1);
    let Some(precision) = args.plan.precision.contract_precision() else {
        anyhow::bail!(
            "--kernel-shapes takes --precision bf16 or bf16x3 (a plan of several precisions \
             needs the kernels of both)"
        );
    };
    let contract = Kernels {
        precision,
        ..Kernels::default()
    }
    .contract(family);
    let report = KernelShapes {
        model,
        dims: entry.dims(),
        family,
        precision,
        tile: [contract.tile.m, contract.tile.k, contract.tile.n],
        kernels: amanuensis::placement::whisper_kernels(entry.dims(), &contract),
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    if let Some(path) = &args.json {
        write_json(path, &report)?;
    }
    Ok(())
}

/// One line of `inspect --sensitivity`: a plan and its errors over every window.
#[derive(serde::Serialize)]
struct SensitivityRow {
    group: String,
    plan: String,
    windows: Vec<(String, amanuensis::precision::study::WindowError)>,
    /// Predicted NPU time of a window on XDNA1 and XDNA2, ms.
    predicted_ms: [f64; 2],
}

/// `inspect --sensitivity`: [`amanuensis::precision::study`] over the groups, then the plan
/// of `--precision`.
fn sensitivity(args: &InspectArgs) -> Result<()> {
    use amanuensis::precision::study::{Study, groups, isolating};
    use amanuensis::precision::{Layers, OpKind, OpPrecision, PrecisionPlan};
    let threads = args.plan.options(Backend::Cpu)?.threads;
    let model_dir = args.plan.model_dir()?;
    let files: Vec<&std::path::Path> = args.sensitivity.iter().map(|p| p.as_path()).collect();
    let study = Study::prepare(&model_dir, &files, threads)?;
    let n_layers = study.n_layers();
    eprintln!(
        "{} windows{}",
        study.windows.len(),
        if args.plan_only {
            ""
        } else {
            "; each group of ops in bf16 alone, the rest float32 on the host"
        }
    );
    println!(
        "{:<24} {:>10} {:>9} {:>9} {:>10} {:>7} {:>8}",
        "group", "features", "max", "dlogp", "dlogp max", "flips", "changed"
    );
    let mut plans: Vec<(String, PrecisionPlan)> = vec![
        ("all bf16".into(), PrecisionPlan::uniform(OpPrecision::Bf16)),
        (
            "all bf16x3".into(),
            PrecisionPlan::uniform(OpPrecision::Bf16x3),
        ),
    ];
    if args.plan_only {
        plans.truncate(1);
    }
    for (name, kind, layers) in groups(n_layers).into_iter().filter(|_| !args.plan_only) {
        plans.push((name, isolating(kind, layers, OpPrecision::Bf16)));
    }
    if args.per_op {
        for l in 0..n_layers {
            for k in OpKind::ALL.iter().filter(|k| k.in_layer()) {
                plans.push((
                    format!("{k}@{l}"),
                    isolating(Some(*k), Layers::Index(l), OpPrecision::Bf16),
                ));
            }
        }
    }
    plans.push((
        format!("--precision {}", args.plan.precision),
        args.plan.precision.clone(),
    ));
    let mut rows = Vec::new();
    for (group, plan) in plans {
        let encoder = study.encoder(&plan, threads)?;
        let errors = study.measure(&encoder)?;
        let n = errors.len().max(1) as f64;
        let flips: usize = errors.iter().map(|e| e.flips).sum();
        let positions: usize = errors.iter().map(|e| e.positions).sum();
        let changed = errors.iter().filter(|e| !e.same_tokens).count();
        println!(
            "{:<24} {:>10.2e} {:>9.3} {:>9.2e} {:>10.3} {:>7} {:>8}",
            group,
            errors.iter().map(|e| e.features_rel).sum::<f64>() / n,
            errors.iter().map(|e| e.features_max).fold(0.0, f64::max),
            errors.iter().map(|e| e.logprob_mean).sum::<f64>() / n,
            errors.iter().map(|e| e.logprob_max).fold(0.0, f64::max),
            format!("{flips}/{positions}"),
            format!("{changed}/{}", errors.len()),
        );
        let predicted_ms = [DeviceFamily::Xdna1, DeviceFamily::Xdna2].map(|family| {
            study
                .encoder_for(&plan, family, threads)
                .map(|e| predict(e.placement(), family).total_ms)
                .unwrap_or(f64::NAN)
        });
        rows.push(SensitivityRow {
            group,
            plan: plan.to_string(),
            windows: study
                .windows
                .iter()
                .map(|w| w.name.clone())
                .zip(errors)
                .collect(),
            predicted_ms,
        });
    }
    let last = rows.last().expect("the --precision plan");
    let bf16 = &rows[0];
    println!();
    println!(
        "--precision {}: predicted NPU time a window {:.1} ms on XDNA1 ({:.2}x plain bf16's {:.1}), \
         {:.1} ms on XDNA2 ({:.2}x of {:.1}); predictions, not measurements",
        args.plan.precision,
        last.predicted_ms[0],
        last.predicted_ms[0] / bf16.predicted_ms[0],
        bf16.predicted_ms[0],
        last.predicted_ms[1],
        last.predicted_ms[1] / bf16.predicted_ms[1],
        bf16.predicted_ms[1],
    );
    for (name, e) in &last.windows {
        if !e.same_tokens {
            println!("  greedy decoding changed under it: {name}");
        }
    }
    if let Some(path) = &args.json {
        write_json(path, &rows)?;
    }
    Ok(())
}
