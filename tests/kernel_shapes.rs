//! The host and the kernel build agree on shapes: every dispatch the NPU plan of tiny.en
//! requests, laid out for XDNA1 and for XDNA2, is among the kernels `kernels/aie/shapes.py`
//! (what `kernels/aie/build.sh` builds) lists for tiny and that target. Needs python3.

mod common;

use std::process::Command;

use amanuensis::backend::{Backend, Family};
use amanuensis::model::{Encoder, EncoderOptions};
use amanuensis_kernels::device::Kernel;
use common::reference;

#[test]
fn every_dispatch_of_the_plan_is_a_kernel_the_build_makes() {
    for (family, target) in [(Family::Xdna1, "npu"), (Family::Xdna2, "npu2")] {
        dispatches_are_built(family, target);
    }
}

fn dispatches_are_built(family: Family, target: &str) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels/aie/shapes.py");
    let out = Command::new("python3")
        .arg("-B")
        .arg(&script)
        .args(["tiny", "--json", "--target", target])
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
        &reference("tiny.en"),
        &EncoderOptions {
            backend: Backend::Emu,
            family: Some(family),
            ..EncoderOptions::default()
        },
    )
    .unwrap();
    let needs = emu.kernel_needs();
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
            "the {target} plan needs {need}, which shapes.py does not list:\n{built:#?}"
        );
    }
}
