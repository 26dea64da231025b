//! The host and the kernel build agree on shapes: every dispatch the NPU plan of tiny.en
//! requests, laid out for XDNA1 and for XDNA2, is among the kernels `kernels/aie/shapes.py`
//! (what `kernels/aie/build.sh` builds) lists for tiny and that target. Needs python3.

mod common;

use std::process::Command;

use amanuensis::backend::{Backend, Family, Precision};
use amanuensis::model::{Encoder, EncoderOptions};
use amanuensis_kernels::device::Kernel;
use common::reference;

#[test]
fn every_dispatch_of_the_plan_is_a_kernel_the_build_makes() {
    for (family, target) in [(Family::Xdna1, "npu"), (Family::Xdna2, "npu2")] {
        dispatches_are_built(family, target, Precision::Bf16);
        dispatches_are_built(family, target, Precision::Bf16x3);
    }
}

fn dispatches_are_built(family: Family, target: &str, precision: Precision) {
    let precision_name = match precision {
        Precision::Bf16 => "bf16",
        Precision::Bf16x3 => "bf16x3",
    };
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels/aie/shapes.py");
    let out = Command::new("python3")
        .arg("-B")
        .arg(&script)
        .args(["tiny", "--json", "--target", target])
        .args(["--precision", precision_name])
        .output()
        .expect("python3 runs kernels/aie/shapes.py: install python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let built: Vec<(String, Vec<usize>, String, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let shape = v["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            (
                v["kind"].as_str().unwrap().to_string(),
                shape,
                v["epilogue"].as_str().unwrap().to_string(),
                v["output"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let emu = Encoder::load(
        &catalog_model("tiny.en"),
        &EncoderOptions {
            backend: Backend::Emu,
            family: Some(family),
            precision,
            ..EncoderOptions::default()
        },
    )
    .unwrap();
    let needs = emu.kernel_needs();
    if precision == Precision::Bf16x3 {
        // The GEMMs only, K three times as long: softmax and GELU run on the host.
        assert!(needs.len() >= 6, "{needs:?}");
        assert!(
            needs
                .iter()
                .all(|n| n.kernel == Kernel::MatMul && !n.gelu && !n.bf16_out),
            "{needs:?}"
        );
    } else {
        bf16_needs_keep_attention_on_the_device(needs);
    }
    for need in needs {
        let kind = match need.kernel {
            Kernel::MatMul => "gemm",
            Kernel::Softmax => "softmax",
            Kernel::Gelu => "gelu",
        };
        let epilogue = match (need.kernel, need.bias, need.gelu) {
            (Kernel::MatMul, _, true) => "bias_gelu",
            (Kernel::MatMul, true, false) => "bias",
            _ => "none",
        };
        let output = if need.bf16_out { "bf16" } else { "f32" };
        assert!(
            built.iter().any(|(k, s, e, o)| k == kind
                && *s == need.shape
                && e == epilogue
                && (kind != "gemm" || o == output)),
            "the {target} {precision_name} plan needs {need}, which shapes.py does not list:\n\
             {built:#?}"
        );
    }
}

fn bf16_needs_keep_attention_on_the_device(needs: &[amanuensis_kernels::device::KernelNeed]) {
    assert!(needs.len() >= 8, "{needs:?}");
    // Attention runs as one call a head: its scores leave the first product in bfloat16 and
    // the softmax reads them in place, at the product's padded width.
    assert!(needs.iter().any(|n| n.bf16_out), "{needs:?}");
    assert!(
        needs
            .iter()
            .any(|n| n.kernel == Kernel::Softmax && n.shape[..2] == [1500, 1500]),
        "{needs:?}"
    );
}
