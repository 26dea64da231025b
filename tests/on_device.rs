//! The device test: the `npu` backend on a real NPU against the `emu` backend, through
//! `amanuensis compare --reference emu --backends npu`.
//!
//! Run it on a Ryzen AI machine with XRT >= 2.17, the amdxdna driver and the kernels built by
//! `kernels/aie/build.sh` (found through `AMANUENSIS_KERNELS` or the usual places):
//!
//! ```text
//! cargo test --release --features xrt --test on_device
//! ```
//!
//! Where no NPU with kernels is found it fails, saying what is missing: a machine without the
//! hardware cannot pass it.
//!
//! The bound. The emulator computes the kernel contract (kernels/NUMERICS.md) to the bit; the
//! one freedom the hardware keeps is the order in which its `mmul` unit adds the 8 exact
//! products of one step inside its float32 accumulator (section 2). That reorders float32
//! additions only: each reordered sum moves by at most `8 * 2^-24` of the sum of the magnitudes
//! it adds, far below the bfloat16 roundings (`2^-8`) both sides share. So the device should
//! give the emulator's bits; if it does not, the features must still agree to a cosine of
//! `0.999999` and a max abs of `1e-3` (outputs of order 1 after the final LayerNorm: about 60
//! float32 ulps at 1.0 through four layers), and the figures are printed.

mod common;

use std::process::Command;

use amanuensis::backend::open_npu;
use common::*;

#[test]
fn npu_gives_emus_features_on_tiny_en() {
    if let Err(why) = open_npu(Default::default()) {
        panic!(
            "no NPU with kernels here ({why}); this test needs a Ryzen AI NPU, XRT >= 2.17 \
             with the amdxdna driver, and kernels built by kernels/aie/build.sh \
             (AMANUENSIS_KERNELS names their directory); `amanuensis doctor` says which is \
             missing"
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("compare.json");
    let out = Command::new(env!("CARGO_BIN_EXE_amanuensis"))
        .args([
            "compare",
            reference("audio/jfk.flac").to_str().unwrap(),
            "--model",
            catalog_model("tiny.en").to_str().unwrap(),
            "--reference",
            "emu",
            "--backends",
            "npu",
            "--strict",
            "--json",
            json.to_str().unwrap(),
        ])
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{stdout}");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let npu = report["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["backend"] == "npu")
        .expect("an npu entry");
    let error = &npu["error_vs_reference"];
    let (max_abs, cosine) = (
        error["max_abs"].as_f64().unwrap(),
        error["cosine"].as_f64().unwrap(),
    );
    if max_abs == 0.0 {
        eprintln!("npu == emu, bit for bit");
        return;
    }
    eprintln!("npu against emu: max abs {max_abs:.3e}, cosine {cosine:.9}");
    assert!(max_abs <= 1e-3 && cosine >= 0.999_999, "{error}");
}
