//! The kernel build and the plans agree on shapes. `amanuensis inspect --kernel-shapes`, the
//! list `kernels/aie/build.sh` builds from, gives for every catalog encoder, on XDNA1 and
//! XDNA2, under bf16, bf16x3 and bf16-host, exactly the kernels the plan dispatches (the placement from
//! the encoder's sizes, `placement::whisper_placement`), each with its calls a window, plus
//! the standalone GELUs that `DeviceGelu` would ask for if a GELU were not fused; the device finds
//! each of them in a manifest written from that list; and the real plans of the encoders at
//! hand (tiny.en, base) need exactly the listed kernels.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;

use amanuensis::backend::{Backend, DeviceFamily, Kernels, Precision};
use amanuensis::model::catalog::{CatalogEntry, catalog};
use amanuensis::model::{Encoder, EncoderOptions};
use amanuensis::placement::whisper_placement;
use amanuensis_kernels::device::{Kernel, KernelNeed};
use amanuensis_kernels::emulator::Emulator;
use amanuensis_kernels::gemm::GemmContract;
use amanuensis_kernels::manifest::Manifest;
use amanuensis_ops::{DeviceGelu, DeviceHandle, DeviceOp};
use common::catalog_model;

const FAMILIES: [DeviceFamily; 2] = [DeviceFamily::Xdna1, DeviceFamily::Xdna2];
const PRECISIONS: [Precision; 3] = [Precision::Bf16, Precision::Bf16x3, Precision::Bf16Host];

fn name(p: Precision) -> &'static str {
    match p {
        Precision::Bf16 => "bf16",
        Precision::Bf16x3 => "bf16x3",
        Precision::Bf16Host => "bf16-host",
    }
}

fn contract(family: DeviceFamily, precision: Precision) -> GemmContract {
    Kernels {
        precision,
        ..Kernels::default()
    }
    .contract(family)
}

/// One listed kernel: the need it serves, its calls a window, its name.
struct Listed {
    need: KernelNeed,
    calls: u64,
    name: String,
}

/// The report of `amanuensis inspect --kernel-shapes`, as build.sh reads it.
fn emitted(model: &str, family: DeviceFamily, precision: Precision) -> serde_json::Value {
    let family_name = match family {
        DeviceFamily::Xdna1 => "xdna1",
        DeviceFamily::Xdna2 => "xdna2",
    };
    let out = Command::new(env!("CARGO_BIN_EXE_amanuensis"))
        .args(["inspect", "--kernel-shapes", "--model", model])
        .args([
            "--device-family",
            family_name,
            "--precision",
            name(precision),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The kernels of a report, read back into the needs the plan's ops state.
fn listed(report: &serde_json::Value) -> Vec<Listed> {
    let text = |k: &serde_json::Value, field: &str| k[field].as_str().unwrap().to_string();
    report["kernels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            let shape = k["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            let kernel = match text(k, "kind").as_str() {
                "gemm" => Kernel::MatMul,
                "softmax" => Kernel::Softmax,
                "gelu" => Kernel::Gelu,
                other => panic!("unknown kind {other}"),
            };
            let (bias, gelu) = match text(k, "epilogue").as_str() {
                "bias_gelu" => (true, true),
                "bias" => (true, false),
                "none" => (false, false),
                other => panic!("unknown epilogue {other}"),
            };
            Listed {
                need: KernelNeed {
                    kernel,
                    shape,
                    bias,
                    gelu,
                    bf16_out: text(k, "output") == "bf16",
                },
                calls: k["calls_per_window"].as_u64().unwrap(),
                name: text(k, "name"),
            }
        })
        .collect()
}

/// The plan's dispatches, counted per kernel.
fn counted(order: &[KernelNeed]) -> BTreeMap<KernelNeed, u64> {
    let mut calls = BTreeMap::new();
    for need in order {
        *calls.entry(need.clone()).or_default() += 1;
    }
    calls
}

/// A manifest as build.sh writes it from the listing (no files behind it).
fn manifest(kernels: &[Listed], report: &serde_json::Value) -> Manifest {
    let tile = &report["tile"];
    let mut text = String::from("format = 2\ntarget = \"npu1_4col\"\n");
    for (i, k) in report["kernels"].as_array().unwrap().iter().enumerate() {
        text += &format!(
            "[[kernel]]\nkind = {}\nepilogue = {}\noutput = {}\nxclbin = \"k.xclbin\"\n\
             kernel_name = \"MLIR_AIE\"\ninstructions = \"{}.insts.bin\"\nshape = {}\n\
             tile = {tile}\nsha256 = {{ xclbin = \"0\", instructions = \"0\" }}\n",
            k["kind"], k["epilogue"], k["output"], kernels[i].name, k["shape"]
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("manifest.toml");
    std::fs::write(&path, text).unwrap();
    Manifest::read(&path).unwrap()
}

#[test]
fn every_catalog_encoder_lists_what_its_plan_dispatches() {
    for entry in catalog() {
        for family in FAMILIES {
            for precision in PRECISIONS {
                lists_what_the_plan_dispatches(entry, family, precision);
            }
        }
    }
}

fn lists_what_the_plan_dispatches(
    entry: &CatalogEntry,
    family: DeviceFamily,
    precision: Precision,
) {
    let what = format!("{} on {family:?} under {}", entry.name, name(precision));
    let report = emitted(&entry.name, family, precision);
    let contract = contract(family, precision);
    let dims = &report["dims"];
    assert_eq!(
        [
            &dims["n_mels"],
            &dims["d_model"],
            &dims["layers"],
            &dims["heads"]
        ]
        .map(|v| v.as_u64()),
        [entry.n_mels, entry.d_model, entry.layers, entry.heads].map(|v| Some(v as u64)),
        "{what}: sizes"
    );
    let tile = [contract.tile.m, contract.tile.k, contract.tile.n];
    assert_eq!(report["tile"], serde_json::json!(tile), "{what}: tile");
    let kernels = listed(&report);
    let mut names: Vec<&str> = kernels.iter().map(|k| k.name.as_str()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), kernels.len(), "{what}: a name per kernel");

    // What the plan dispatches, each kernel with its calls a window.
    let dispatched: BTreeMap<KernelNeed, u64> = kernels
        .iter()
        .filter(|k| k.calls > 0)
        .map(|k| (k.need.clone(), k.calls))
        .collect();
    let plan = counted(&whisper_placement(entry.dims(), &contract).kernel_order);
    assert_eq!(dispatched, plan, "{what}: the plan's kernels and calls");

    // The standalone GELUs: DeviceGelu's call over each product's output a GELU follows, when
    // the GELU runs on the device.
    let standalone: Vec<&KernelNeed> = kernels
        .iter()
        .filter(|k| k.calls == 0)
        .map(|k| &k.need)
        .collect();
    let gelu = DeviceGelu {
        device: DeviceHandle::new(Arc::new(Emulator::new(contract))),
    };
    let d = entry.d_model;
    let mut expected: Vec<KernelNeed> = Vec::new();
    for shape in [[3000, d], [1500, d], [1500, 4 * d]] {
        for call in gelu.device_calls(&shape) {
            if !expected.contains(&call.need) {
                expected.push(call.need);
            }
        }
    }
    assert_eq!(
        standalone,
        expected.iter().collect::<Vec<_>>(),
        "{what}: standalone GELUs"
    );
    assert_eq!(
        expected.is_empty(),
        precision != Precision::Bf16,
        "{what}: GELU on the device under bf16 only"
    );

    // The device finds every kernel of the plan in a manifest written from the list, each
    // at its own entry.
    let m = manifest(&kernels, &report);
    for (i, k) in kernels.iter().enumerate() {
        assert_eq!(m.position(&k.need), Some(i), "{what}: {}", k.need);
    }
}

#[test]
fn the_real_plans_need_the_listed_kernels() {
    for model in ["tiny.en", "base"] {
        let dir = catalog_model(model);
        for family in FAMILIES {
            for precision in PRECISIONS {
                let what = format!("{model} on {family:?} under {}", name(precision));
                let emu = Encoder::load(
                    &dir,
                    &EncoderOptions {
                        backend: Backend::Emu,
                        family: Some(family),
                        precision,
                        ..EncoderOptions::default()
                    },
                )
                .unwrap();
                let kernels = listed(&emitted(model, family, precision));
                let dispatched: Vec<&KernelNeed> = kernels
                    .iter()
                    .filter(|k| k.calls > 0)
                    .map(|k| &k.need)
                    .collect();
                let mut sorted = dispatched.clone();
                sorted.sort();
                assert_eq!(
                    sorted,
                    emu.kernel_needs().iter().collect::<Vec<_>>(),
                    "{what}: the plan's kernel needs"
                );
                let calls: BTreeMap<KernelNeed, u64> = kernels
                    .iter()
                    .filter(|k| k.calls > 0)
                    .map(|k| (k.need.clone(), k.calls))
                    .collect();
                assert_eq!(
                    calls,
                    counted(&emu.placement().kernel_order),
                    "{what}: calls a window"
                );
            }
        }
    }
}
