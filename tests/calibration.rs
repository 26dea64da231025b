//! The placement computed from an encoder's sizes alone is the real plan's (so the
//! predictions for encoders not at hand, small to large-v3, rest on the same counts), and the
//! calibration against whisper-xdna's published windows (`amanuensis inspect --published`).

mod common;

use amanuensis::backend::Backend;
use amanuensis::calibration::{calibration, whisper_xdna};
use amanuensis::model::catalog::catalog;
use amanuensis::model::{Encoder, EncoderOptions};
use amanuensis::placement::{EncoderDims, predict, whisper_calls, whisper_placement};
use amanuensis_kernels::gemm::GemmContract;
use amanuensis_kernels::hw::DeviceFamily;
use common::*;

fn dims(name: &str) -> EncoderDims {
    catalog().iter().find(|e| e.name == name).unwrap().dims()
}

#[test]
fn the_placement_from_sizes_is_the_real_plans() {
    for (name, dir) in [
        ("tiny.en", catalog_model("tiny.en")),
        ("base", catalog_model("base")),
    ] {
        for family in [DeviceFamily::Xdna1, DeviceFamily::Xdna2] {
            let device_family = family;
            let encoder = Encoder::load(
                &dir,
                &EncoderOptions {
                    backend: Backend::Emu,
                    family: Some(family),
                    ..EncoderOptions::default()
                },
            )
            .unwrap();
            let real = encoder.placement();
            let sized = whisper_placement(dims(name), &GemmContract::for_family(device_family));
            let what = format!("{name} on {device_family:?}");
            assert_eq!(sized.traffic, real.traffic, "{what}: traffic");
            assert_eq!(sized.weight_bytes, real.weight_bytes, "{what}: weights");
            assert_eq!(sized.device_flops, real.device_flops, "{what}: FLOPs");
            assert!(
                sized.kernel_order == real.kernel_order,
                "{what}: the kernels' order"
            );
            let (a, b) = (predict(&sized, device_family), predict(real, device_family));
            assert_eq!(a.total_ms, b.total_ms, "{what}: prediction");
        }
    }
}

#[test]
fn whisper_xdnas_runs_are_counted_as_its_code_makes_them() {
    // Runs a window, counted by reading whisper-xdna's src/npu_whisper_encoder.py and
    // src/rawxrt.py: 4 for the stem, then per layer 3 projections, a Q K^T and a P V run a
    // head, one softmax, the output projection, the first FFN product (4 chunks of 1280
    // columns for large's 5120, one otherwise), as many GELU runs, the second FFN product:
    // tiny 4 + 4 x (3 + 6 + 6 + 1 + 1 + 1 + 1 + 1), small 4 + 12 x (3 + 12 + 12 + 1 + 1 + 1 +
    // 1 + 1), large-v3 4 + 32 x (3 + 20 + 20 + 1 + 1 + 4 + 4 + 1).
    for (name, runs) in [("tiny", 84), ("small", 388), ("large-v3", 1732)] {
        assert_eq!(whisper_xdna(dims(name)).runs, runs, "{name}");
    }
}

/// The error of the prediction of whisper-xdna's window under its design, `(predicted -
/// published) / published`, as measured when the model was written: tiny -50.5%, small -27.9%,
/// large-v3 +3.9% (the calibration table of docs/npu.md rounds them to -51%, -28%, +4%).
const MEASURED_ERRORS: [(&str, f64); 3] =
    [("tiny", -0.505), ("small", -0.279), ("large-v3", 0.039)];

/// How far an error may move from its measured value before this test fails: 2 percentage
/// points.
const ERROR_MARGIN: f64 = 0.02;

#[test]
fn the_published_points_are_predicted_within_their_stated_error() {
    // The model is deterministic and nothing in it is fitted to these three points, so its
    // error on them is a property of the model, not noise: the bounds below hold it at the
    // errors the documentation states, to within ERROR_MARGIN. A change to a constant, a count of
    // runs or the context model that moves an error by more than 2 points fails here, and
    // the calibration table of docs/npu.md (and MEASURED_ERRORS) must then be brought up to
    // date. The bounds
    // say nothing about whisper-xdna's hardware beyond these three points: the model counts
    // the NPU only and the published windows are wall times with the CPU's share in them,
    // which is why tiny and small are under-predicted and only large-v3, where the device's
    // work dominates, lands near its published time.
    let table = calibration();
    let models: Vec<&str> = table.iter().map(|row| row.model.as_str()).collect();
    assert_eq!(
        models,
        ["tiny", "small", "large-v3"],
        "the published points"
    );
    for (row, &(model, measured)) in table.iter().zip(&MEASURED_ERRORS) {
        assert_eq!(row.model, model);
        let error = (row.theirs.total_ms - row.published_ms) / row.published_ms;
        println!(
            "{model}: published {:.0} ms, predicted {:.0} ms, error {:+.1}% (stated {:+.1}%, \
             bound +-{:.0} points); ours XDNA1 {:.0} ms, XDNA2 {:.0} ms",
            row.published_ms,
            row.theirs.total_ms,
            100.0 * error,
            100.0 * measured,
            100.0 * ERROR_MARGIN,
            row.ours_xdna1_ms,
            row.ours_xdna2_ms
        );
        assert!(
            (error - measured).abs() <= ERROR_MARGIN,
            "{model}: the prediction's error is {:+.1}%, docs/npu.md states {:+.1}% (bound +-{:.0} \
             points): update its calibration table and MEASURED_ERRORS",
            100.0 * error,
            100.0 * measured,
            100.0 * ERROR_MARGIN
        );
    }
    // What docs/npu.md draws from the table: the NPU-only model under-predicts the small
    // encoders, whose windows hold the largest share of CPU work, by less as the encoder
    // grows, and predicts no window beyond its published time by more than 10%.
    let errors: Vec<f64> = table.iter().map(|row| row.error).collect();
    assert!(errors[0] < errors[1] && errors[1] < errors[2], "{errors:?}");
    assert!(errors[0] < 0.0 && errors[1] < 0.0, "{errors:?}");
    assert!(errors.iter().all(|&e| e <= 0.10), "{errors:?}");
}

/// This project's predicted windows (docs/npu.md, "Beside published measurements"): on XDNA1
/// below whisper-xdna's measured window at every published size, and the parts the
/// documentation states, to within 2% of each (the model is deterministic: the bound keeps
/// the table true, it measures no noise). On large-v3 the DMA term is at most the compute
/// term on XDNA1 and above it on XDNA2, as the documentation says and explains; on XDNA1 it
/// stays below with the cores' wait for their C tiles left out of compute, too.
#[test]
fn this_designs_windows_are_below_the_published_ones() {
    // (model, XDNA1 total, XDNA2 total, XDNA1 DMA / compute, XDNA2 DMA / compute), as
    // docs/npu.md's tables give them.
    let stated = [
        ("tiny", 91.0, 52.0, 0.86, 1.13),
        ("small", 592.0, 312.0, 0.92, 1.19),
        ("large-v3", 2876.0, 1461.0, 0.94, 1.27),
    ];
    let close = |a: f64, b: f64| (a - b).abs() <= 0.02 * b;
    let table = calibration();
    for (row, (model, x1, x2, r1, r2)) in table.iter().zip(stated) {
        assert_eq!(row.model, model);
        let (a, b) = (&row.ours_xdna1, &row.ours_xdna2);
        let (ra, rb) = (a.transfer_ms / a.compute_ms, b.transfer_ms / b.compute_ms);
        println!(
            "{model}: XDNA1 {:.0} ms (published {:.0}), DMA/compute {ra:.2}; XDNA2 {:.0} ms, \
             DMA/compute {rb:.2}",
            a.total_ms, row.published_ms, b.total_ms
        );
        assert!(
            a.total_ms < row.published_ms,
            "{model}: XDNA1 above the published window"
        );
        assert!(
            close(a.total_ms, x1) && close(b.total_ms, x2),
            "{model}: {:.0} and {:.0} ms, docs/npu.md states {x1} and {x2}",
            a.total_ms,
            b.total_ms
        );
        assert!(
            close(ra, r1) && close(rb, r2),
            "{model}: DMA/compute {ra:.2} and {rb:.2}, docs/npu.md states {r1} and {r2}"
        );
    }
    let large = table.last().unwrap();
    assert!(large.ours_xdna1.transfer_ms <= large.ours_xdna1.compute_ms);
    assert!(large.ours_xdna2.transfer_ms > large.ours_xdna2.compute_ms);
    // The wait: each float32 output tile's 8 KiB through the core's 32-bit channel, for
    // every dispatch of the window.
    let mut wait_cycles = 0u64;
    for (_, calls) in whisper_calls(dims("large-v3"), &GemmContract::XDNA1) {
        for call in calls {
            if call.need.kernel != amanuensis_kernels::device::Kernel::MatMul {
                continue;
            }
            let [m, _, n] = call.need.shape[..] else {
                unreachable!()
            };
            let tiles = (m / 256) * (n / 128);
            // The bfloat16 kernel takes its C objects after its k-tiles: no wait.
            if !call.need.bf16_out {
                wait_cycles += call.traffic.dispatches * (tiles * 64 * 32 * 4 / 4) as u64;
            }
        }
    }
    let without_wait = large.ours_xdna1.compute_ms - wait_cycles as f64 / 1e6;
    println!(
        "large-v3 XDNA1: compute {:.0} ms, of which {:.0} ms waiting for C tiles; DMA {:.0} ms",
        large.ours_xdna1.compute_ms,
        wait_cycles as f64 / 1e6,
        large.ours_xdna1.transfer_ms
    );
    assert!(large.ours_xdna1.transfer_ms <= without_wait);
}

/// The GEMM cost model applied to mlir-aie's whole-array design on large-v3's products,
/// beside whisper-xdna's measured rates on large shapes (1.41 to 1.76 TFLOP/s, mean 1.56):
/// docs/npu.md states 1.29 to 1.32 TFLOP/s, 15-17% below the mean; held to within 2 points.
#[test]
fn the_gemm_model_on_the_whole_array_design_is_within_its_stated_error() {
    use amanuensis::calibration::{XDNA_GEMM_FLOPS, whole_array_rates};
    let rates = whole_array_rates(dims("large-v3"));
    assert_eq!(rates.len(), 3);
    for ((m, k, n), rate) in rates {
        let error = rate / XDNA_GEMM_FLOPS - 1.0;
        println!(
            "{m}x{k}x{n}: {:.2} TFLOP/s, {:+.1}% against whisper-xdna's mean",
            rate / 1e12,
            100.0 * error
        );
        assert!(
            (-0.19..=-0.13).contains(&error),
            "{m}x{k}x{n}: {:+.1}% against whisper-xdna's measured mean, docs/npu.md states -15% \
             to -17%",
            100.0 * error
        );
        assert!(
            rate < 1.41e12,
            "below the lowest measured rate, as docs/npu.md says"
        );
    }
}

/// What reading each operand once would gain (docs/npu.md, "Predicted device time"): the
/// bound's bytes are the operands' own, and its windows are the documented ones (within 2%),
/// a few percent below the design's: the products it would speed up are compute-bound or
/// bound by writing the scores and reading them back. On large-v3 it would bring XDNA2's DMA
/// term below its compute term.
#[test]
fn reading_each_operand_once_would_gain_little() {
    use amanuensis::calibration::{gemm_parts, operands_once_window};
    // large-v3's projections on XDNA1: 96 calls (3 x 32 layers) of A [1536, 1280] and B
    // [1280, 1280] in bfloat16, each in 2 dispatches of 768 rows, whose bias is 5 B objects
    // of 64 x 32 values in each of the 4 columns.
    let parts = gemm_parts(dims("large-v3"), DeviceFamily::Xdna1);
    let qkv = parts.iter().find(|p| p.name == "q k v").unwrap();
    let operands = 96 * (1536 * 1280 * 2 + 1280 * 1280 * 2);
    let bias = 96 * 2 * 4 * 5 * 64 * 32 * 2;
    assert_eq!(qkv.once_read_bytes, operands + bias);
    assert!(qkv.read_bytes > 4 * qkv.once_read_bytes);
    // (model, XDNA1 window and DMA / compute, XDNA2 window and DMA / compute), as
    // docs/npu.md's table gives them.
    let stated = [
        ("tiny", 90.0, 0.73, 51.0, 1.06),
        ("small", 583.0, 0.59, 308.0, 0.96),
        ("large-v3", 2839.0, 0.46, 1417.0, 0.79),
    ];
    let close = |a: f64, b: f64| (a - b).abs() <= 0.02 * b;
    for (row, (model, x1, r1, x2, r2)) in calibration().iter().zip(stated) {
        assert_eq!(row.model, model);
        for (now, family, total, ratio) in [
            (&row.ours_xdna1, DeviceFamily::Xdna1, x1, r1),
            (&row.ours_xdna2, DeviceFamily::Xdna2, x2, r2),
        ] {
            let [window, dma, compute] = operands_once_window(dims(model), family, now);
            println!(
                "{model} {family:?}: {window:.0} ms reading each operand once ({:.0} ms now, \
                 {:+.1}%), DMA/compute {:.2} ({:.2} now)",
                now.total_ms,
                100.0 * (window / now.total_ms - 1.0),
                dma / compute,
                now.transfer_ms / now.compute_ms
            );
            assert!(window <= now.total_ms && dma <= now.transfer_ms);
            assert!(
                close(window, total) && close(dma / compute, ratio),
                "{model} {family:?}: {window:.0} ms and DMA/compute {:.2}, docs/npu.md states \
                 {total} and {ratio}",
                dma / compute
            );
        }
    }
}
