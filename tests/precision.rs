//! Precision per op (`--precision PLAN`): every exporter's graph gets its products named by
//! role, each op computes exactly as the contract of its precision does, and the study
//! (`inspect --sensitivity`) measures what it says it measures.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use amanuensis::backend::{Backend, Precision};
use amanuensis::model::{Encoder, EncoderOptions};
use amanuensis::precision::{OpPrecision, PrecisionPlan};
use common::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/exporters")
        .join(name)
}

fn planned(plan: &str) -> EncoderOptions {
    EncoderOptions {
        backend: Backend::Emu,
        precision_plan: Some(plan.parse().unwrap()),
        ..EncoderOptions::default()
    }
}

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

/// The roles a Whisper encoder of `layers` layers has, each once.
fn whisper_roles(layers: usize) -> BTreeSet<String> {
    let mut roles: BTreeSet<String> = ["conv1", "conv2"].map(String::from).into();
    for l in 0..layers {
        for k in ["q", "k", "v", "attention", "out", "fc1", "fc2"] {
            roles.insert(format!("{k}@{l}"));
        }
    }
    roles
}

/// Every exporter's graph (torch.onnx at opsets 17 and 20 and dynamo, optimum at 14, 17 and
/// 18, float16 ones) and the catalog's tiny.en: each product named once by its role, found from
/// the graph's structure (the node names differ between them), and the plan's rules applied:
/// the second layer's (the last's) fc2 on the host, every attention in bf16x3.
#[test]
fn every_export_has_its_products_named_by_role() {
    let mut models: Vec<(String, PathBuf, usize)> = [
        "openai-torchscript-opset17.onnx",
        "openai-torchscript-opset20.onnx",
        "openai-dynamo.onnx",
        "optimum-opset14.onnx",
        "optimum-opset17.onnx",
        "optimum-opset18.onnx",
        "optimum-fp16.onnx",
        "optimum-fp16-io32.onnx",
    ]
    .iter()
    .map(|f| (f.to_string(), fixture(f), 2))
    .collect();
    models.push(("tiny.en".into(), catalog_model("tiny.en"), 4));
    for (name, path, layers) in models {
        let encoder = Encoder::load(&path, &planned("bf16,fc2@-1=f32,attention=bf16x3"))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let choices = &encoder.placement().precisions;
        let roles: Vec<&str> = choices.iter().map(|c| c.role.as_str()).collect();
        let unique: BTreeSet<String> = roles.iter().map(|r| r.to_string()).collect();
        assert_eq!(unique.len(), roles.len(), "{name}: a role twice: {roles:?}");
        assert_eq!(unique, whisper_roles(layers), "{name}");
        for c in choices {
            let expected = if c.role == format!("fc2@{}", layers - 1) {
                "f32"
            } else if c.role.starts_with("attention@") {
                "bf16x3"
            } else {
                "bf16"
            };
            assert_eq!(c.precision, expected, "{name}: {}", c.role);
        }
    }
}

/// A plan of one precision computes what that precision's own plan does, bit for bit: bf16
/// and bf16x3 as the `emu` contracts, f32 as the `cpu` backend (tiny.en, OpenAI's jfk
/// log-mel). Each op of a plan runs on the device of its precision, nothing more.
#[test]
fn a_plan_of_one_precision_is_that_precisions_plan() {
    let dir = catalog_model("tiny.en");
    let (_, mel) = read_npy(&reference("jfk.mel80_openai.npy"));
    let encode =
        |options: &EncoderOptions| Encoder::load(&dir, options).unwrap().encode(&mel).unwrap();
    let contract = |precision| EncoderOptions {
        backend: Backend::Emu,
        precision,
        ..EncoderOptions::default()
    };
    let uniform = |p| EncoderOptions {
        backend: Backend::Emu,
        precision_plan: Some(PrecisionPlan::uniform(p)),
        ..EncoderOptions::default()
    };
    let bf16 = encode(&contract(Precision::Bf16));
    let bf16x3 = encode(&contract(Precision::Bf16x3));
    let cpu = encode(&EncoderOptions {
        backend: Backend::Cpu,
        ..EncoderOptions::default()
    });
    assert!(bits(&encode(&uniform(OpPrecision::Bf16))) == bits(&bf16));
    assert!(bits(&encode(&uniform(OpPrecision::Bf16x3))) == bits(&bf16x3));
    assert!(bits(&encode(&uniform(OpPrecision::F32))) == bits(&cpu));
    // A mixed plan differs from each, and keeps its bf16 ops' traffic only: the stem on the
    // host takes its bytes off the device.
    let mixed = Encoder::load(&dir, &planned("bf16,conv1=f32,conv2=f32")).unwrap();
    let ours = mixed.encode(&mel).unwrap();
    assert!(bits(&ours) != bits(&bf16) && bits(&ours) != bits(&cpu));
    let plain = Encoder::load(&dir, &contract(Precision::Bf16)).unwrap();
    let moved = plain.placement().total_traffic().padded_flops
        - mixed.placement().total_traffic().padded_flops;
    // The stem's two products: [1500 x 240] @ [240 x 384] and [1500 x 1152] @ [1152 x 384] on
    // the contract's padded tiles (at least their FLOPs, 2 a multiply-add).
    assert!(moved >= 2 * 1500 * 384 * (240 + 1152), "{moved}");
}

/// Plans that cannot be read, or name layers the encoder lacks, are refused with a message
/// naming the fix.
#[test]
fn bad_plans_are_refused_with_the_fix() {
    for (plan, says) in [
        ("bf16,fc3=bf16x3", "not an op kind"),
        ("bf16,fc2=bf8", "not a precision"),
        ("bf16,fc2@x=f32", "not a layer"),
        ("bf16,fc2", "not a rule"),
    ] {
        let err = plan.parse::<PrecisionPlan>().unwrap_err();
        assert!(err.contains(says), "{plan}: {err}");
    }
    // A layer the encoder does not have (tiny.en has 4) is refused when the plan is applied.
    let dir = catalog_model("tiny.en");
    for plan in ["bf16,fc2@4=f32", "bf16,q@-5=bf16x3"] {
        let err = Encoder::load(&dir, &planned(plan)).unwrap_err().to_string();
        assert!(
            err.contains("has 4 layers (0 to 3, or -1 to -4)"),
            "{plan}: {err}"
        );
    }
}

/// `inspect --sensitivity` on jfk (tiny.en, one window): its plain-bf16 row's features error
/// is the relative L2 distance between `emu`'s and `cpu`'s encodings of that window computed
/// here from the two encoders; bf16x3's error and log-probability changes are of float32's
/// order and bf16's of bfloat16's, and neither changes jfk's greedy decoding.
#[test]
fn the_sensitivity_study_measures_the_encoders() {
    let dir = catalog_model("tiny.en");
    let jfk = reference_dir().join("audio/jfk.flac");
    let json = tempfile::NamedTempFile::new().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_amanuensis"))
        .args(["inspect", "--model"])
        .arg(&dir)
        .arg("--sensitivity")
        .arg(&jfk)
        .args(["--plan-only", "--precision", "bf16x3", "--json"])
        .arg(json.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value =
        serde_json::from_slice(&std::fs::read(json.path()).unwrap()).unwrap();
    let error = |row: usize, field: &str| rows[row]["windows"][0][1][field].as_f64().unwrap();
    assert_eq!(rows[0]["plan"], "bf16");
    assert_eq!(rows[1]["plan"], "bf16x3");

    // The window as the study makes it: jfk's 11 s padded with silence to 30 s.
    let (samples, _) =
        amanuensis::audio::load_audio(&amanuensis::audio::Input::Path(jfk.clone())).unwrap();
    let mut window = samples;
    window.resize(amanuensis::audio::N_SAMPLES, 0.0);
    let mel = amanuensis::audio::LogMel::new(80).compute(&window);
    let encode = |backend| {
        let options = EncoderOptions {
            backend,
            ..EncoderOptions::default()
        };
        Encoder::load(&dir, &options).unwrap().encode(&mel).unwrap()
    };
    let (cpu, emu) = (encode(Backend::Cpu), encode(Backend::Emu));
    let distance: f64 = cpu
        .iter()
        .zip(&emu)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum();
    let norm: f64 = cpu.iter().map(|a| (*a as f64).powi(2)).sum();
    let expected = (distance / norm).sqrt();
    assert!(
        (error(0, "features_rel") - expected).abs() <= 1e-9 * expected,
        "{} against {expected}",
        error(0, "features_rel")
    );
    // Measured: bf16 6.9e-3 relative, log-probabilities moved 0.008 at most; bf16x3 7.6e-6
    // and 1.2e-5 (about 2^-16 per operand through four layers).
    assert!((1e-3..2e-2).contains(&error(0, "features_rel")));
    assert!((1e-3..2e-2).contains(&error(0, "logprob_max")));
    assert!(
        error(1, "features_rel") < 2e-5,
        "{}",
        error(1, "features_rel")
    );
    assert!(
        error(1, "logprob_max") < 5e-5,
        "{}",
        error(1, "logprob_max")
    );
    for row in 0..2 {
        assert_eq!(rows[row]["windows"][0][1]["same_tokens"], true);
        assert_eq!(rows[row]["windows"][0][1]["flips"], 0);
    }
}
