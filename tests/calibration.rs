//! The placement computed from an encoder's sizes alone is the real plan's (so the
//! predictions for encoders not at hand, small to large-v3, rest on the same counts), and the
//! calibration against whisper-xdna's published windows (`amanuensis inspect --published`).

mod common;

use amanuensis::backend::{Backend, Family};
use amanuensis::calibration::{calibration, whisper_xdna};
use amanuensis::model::catalog::catalog;
use amanuensis::model::{Encoder, EncoderOptions};
use amanuensis::placement::{EncoderDims, predict, whisper_placement};
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
        for (family, device_family) in [
            (Family::Xdna1, DeviceFamily::Xdna1),
            (Family::Xdna2, DeviceFamily::Xdna2),
        ] {
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
    // head, one softmax, the output projection, the first FFN product (4 chunks for large),
    // as many GELU runs, the second FFN product.
    for (name, runs) in [("tiny", 84), ("small", 388), ("large-v3", 1732)] {
        assert_eq!(whisper_xdna(dims(name)).runs, runs, "{name}");
    }
}

#[test]
fn the_published_points_are_predicted_with_their_error() {
    let table = calibration();
    assert_eq!(table.len(), 3, "tiny, small and large-v3");
    for row in &table {
        let t = row.theirs;
        let parts =
            t.gemm_ms + t.attention_ms + t.row_ops_ms + t.run_ms + t.switch_ms + t.context_ms;
        assert!((parts - t.total_ms).abs() < 1e-9 && t.total_ms > 0.0);
        assert!(row.error.is_finite() && row.ours_xdna1_ms > 0.0 && row.ours_xdna2_ms > 0.0);
        println!(
            "{}: published {:.0} ms, predicted {:.0} ms ({:+.0}%); ours XDNA1 {:.0} ms, XDNA2 {:.0} ms",
            row.model,
            row.published_ms,
            t.total_ms,
            100.0 * row.error,
            row.ours_xdna1_ms,
            row.ours_xdna2_ms
        );
    }
}
