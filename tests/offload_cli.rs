//! `inspect`, `compare`, `doctor` and the backend switches as a user runs them, on the
//! catalog's tiny.en.

mod common;

use std::process::{Command, Output};

use common::*;

fn amanuensis(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_amanuensis"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn model() -> String {
    catalog_model("tiny.en").display().to_string()
}

/// `inspect` prints the placement table, the FLOP share, the traffic and a prediction
/// labelled as one, and writes the same as JSON.
#[test]
fn inspect_reports_placement_traffic_and_a_labelled_prediction() {
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("placement.json");
    let out = amanuensis(&[
        "inspect",
        "--model",
        &model(),
        "--json",
        json.to_str().unwrap(),
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for needle in [
        "backend: emu",
        "MatMul",
        "Softmax",
        "LayerNorm",
        "FLOPs on the device: 99.",
        "left on the CPU by the rewrite: none",
        "dispatches",
        "not a measurement",
        "kernels this plan needs (8 dispatch shapes",
        "Softmax [1500, 1500, 1536]",
        "MatMul [1536, 64, 1536] to bf16",
    ] {
        assert!(stdout.contains(needle), "lacks {needle:?}:\n{stdout}");
    }
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert!(report["device_flops_share"].as_f64().unwrap() >= 0.99);
    // tiny.en: the four projections share one kernel (K with a zero bias); no kernel for
    // a projection without a bias is asked for.
    let kernels: Vec<&str> = report["kernels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert_eq!(kernels.len(), 8, "{kernels:?}");
    assert!(
        kernels.contains(&"MatMul [1536, 384, 384] with bias")
            && !kernels.contains(&"MatMul [1536, 384, 384]"),
        "{kernels:?}"
    );
    let matmul = report["placement"]["kinds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kind"] == "MatMul")
        .unwrap();
    assert_eq!(
        (matmul["device"].as_u64(), matmul["cpu"].as_u64()),
        (Some(34), Some(0))
    );
    assert!(
        report["predicted_device_time"]["total_ms"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    // The contexts: one xclbin per kind needs 5 and creates none once running; per-shape
    // xclbins would create 12 a window on XDNA1 (the fake device counts the same,
    // tests/fake_npu.rs), none on XDNA2, whose 16 hold the plan's 8.
    let xdna1 = &report["predicted_device_time"];
    assert_eq!(xdna1["family"], "XDNA1");
    assert_eq!(xdna1["contexts"], 5);
    assert_eq!(xdna1["contexts_per_window"], 0);
    assert_eq!(xdna1["per_shape_contexts_per_window"], 12);
    let out = amanuensis(&[
        "inspect",
        "--model",
        &model(),
        "--device-family",
        "xdna2",
        "--json",
        json.to_str().unwrap(),
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.contains("predicted XDNA2 device time") && stdout.contains("of XDNA2's 16"),
        "{stdout}"
    );
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["predicted_device_time"]["contexts_per_window"], 0);
    assert_eq!(
        report["predicted_device_time"]["per_shape_contexts_per_window"],
        0
    );
}

/// `compare` runs cpu and emu on the same windows and prints time, realtime factor, the
/// error table (block by block too) and the time per op kind; JSON holds the same.
#[test]
fn compare_prints_time_error_and_op_tables() {
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("compare.json");
    let audio = reference("audio/jfk.flac");
    let out = amanuensis(&[
        "compare",
        audio.to_str().unwrap(),
        "--model",
        &model(),
        "--backends",
        "tract,emu",
        "--json",
        json.to_str().unwrap(),
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for needle in [
        "ms/window",
        "realtime",
        "cosine",
        "rel L2",
        "(ref)",
        "emu / cpu time",
        "block by block",
        "EmuMatMul",
        "CpuLayerNorm",
    ] {
        assert!(stdout.contains(needle), "lacks {needle:?}:\n{stdout}");
    }
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let backends = report["backends"].as_array().unwrap();
    let names: Vec<&str> = backends
        .iter()
        .map(|b| b["backend"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["cpu", "tract", "emu"]);
    let emu = &backends[2];
    assert!(emu["error_vs_reference"]["cosine"].as_f64().unwrap() >= 0.9999);
    assert_eq!(emu["layers_vs_reference"].as_array().unwrap().len(), 9);
    assert!(backends[0]["error_vs_reference"].is_null());
}

/// Without NPU kernels (none on the search path, whatever the hardware): `npu` fails in one
/// line naming the alternatives, `auto` says it falls back, `--strict` refuses, and no output
/// is left behind.
#[test]
fn missing_npu_is_said_in_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let out_path = tmp.path().join("out.npy");
    let sample = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/speech.wav");
    let encode = |backend: &str, strict: bool| {
        let mut args = vec![
            "encode",
            sample.to_str().unwrap(),
            "--model",
            catalog_model("tiny.en").to_str().unwrap(),
            "--backend",
            backend,
            "-o",
            out_path.to_str().unwrap(),
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
        if strict {
            args.push("--strict".into());
        }
        // No kernel directory anywhere it looks: the npu backend is unavailable on any
        // machine, a Ryzen AI one included.
        Command::new(env!("CARGO_BIN_EXE_amanuensis"))
            .args(&args)
            .env_remove("AMANUENSIS_KERNELS")
            .env("HOME", tmp.path())
            .output()
            .unwrap()
    };
    let out = encode("npu", false);
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("npu backend is not available") && err.contains("--backend emu"));
    assert!(!out_path.exists());

    let out = encode("auto", true);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("--strict"));
    assert!(!out_path.exists());

    let out = encode("auto", false);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("backend auto: cpu ("), "{err}");
    assert!(err.contains("backend: cpu"), "{err}");
    assert!(out_path.exists());
}

/// `doctor` without kernels: the XRT it was built with (or that none was), the NPU device XRT
/// finds (or none, in XRT's own words), no kernels with where it looked, and auto -> cpu.
#[test]
fn doctor_says_what_is_here_and_what_auto_picks() {
    // No kernel directory: neither $AMANUENSIS_KERNELS nor one under $HOME.
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_amanuensis"))
        .arg("doctor")
        .env_remove("AMANUENSIS_KERNELS")
        .env("HOME", home.path())
        .output()
        .expect("the binary runs");
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    if cfg!(feature = "xrt") {
        assert!(stdout.contains("XRT: 2."), "{stdout}");
        assert!(stdout.contains("hw_context"), "{stdout}");
    } else {
        assert!(stdout.contains("XRT: not built in"), "{stdout}");
    }
    // The device line says what XRT finds here, as this process finds it.
    let device = match xrt_sys::Device::open(0) {
        Ok(_) => "NPU devices: device 0: ".to_string(),
        Err(e) => format!("NPU devices: none ({e})"),
    };
    assert!(stdout.contains(&device), "lacks {device:?}:\n{stdout}");
    // No kernels are found (none in $HOME, none named): auto takes the CPU on any machine.
    for needle in [
        "NPU kernels: no NPU kernels found (looked in",
        "backend auto: cpu (",
        "CPU: ",
    ] {
        assert!(stdout.contains(needle), "lacks {needle:?}:\n{stdout}");
    }
}

/// `inspect --published` needs no model: whisper-xdna's three published windows, the
/// prediction of each under its design with the error, and this project's predictions, the
/// same figures in JSON.
#[test]
fn inspect_published_prints_the_calibration_table() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("published.json");
    let out = amanuensis(&["inspect", "--published", "--json", json.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for needle in [
        "whisper-xdna",
        "tiny",
        "small",
        "large-v3",
        "484ms",
        "1507ms",
        "3990ms",
        "not measurements",
    ] {
        assert!(stdout.contains(needle), "lacks {needle:?}:\n{stdout}");
    }
    let table: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let rows = table.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    for row in rows {
        let predicted = row["theirs"]["total_ms"].as_f64().unwrap();
        let published = row["published_ms"].as_f64().unwrap();
        let error = row["error"].as_f64().unwrap();
        assert!((error - (predicted - published) / published).abs() < 1e-12);
        assert!(row["ours_xdna1_ms"].as_f64().unwrap() > row["ours_xdna2_ms"].as_f64().unwrap());
    }
}
