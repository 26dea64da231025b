//! What the decoder holds, on the optimum fixtures of tests/data/exporters/decoders (one small
//! random decoder: vocabulary 1000, d_model 64, 2 heads, 2 layers; see tests/decoders.rs for
//! how they were made and what they compute).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use amanuensis_ops::CpuLinear;
use tract_linalg::multithread::Executor;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::konst::Const;

use super::WeightPrecision;
use super::cache::gather_rows;
use super::constants::{constant_bytes, share_constants};
use super::graph::Graph;
use super::kind::DecoderKind;
use super::load::{prepare, read_proto};
use super::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/exporters/decoders")
        .join(name)
}

fn hints() -> DecoderHints {
    DecoderHints {
        d_model: 64,
        n_audio_ctx: 1500,
        n_heads: None,
    }
}

fn load(name: &str) -> DecoderModel {
    let files = DecoderFiles::locate(&fixture(name)).unwrap();
    DecoderModel::load(files, hints(), 1).unwrap()
}

fn features() -> Vec<f32> {
    (0..1500 * 64)
        .map(|i| ((i * 7919) % 2001) as f32 / 1000.0 - 1.0)
        .collect()
}

/// The weights a graph's plan holds: its fused products' packed matrices (by their `Arc`) and
/// its constants of a KiB or more (by their allocation).
fn weights(graph: &Graph) -> (HashSet<usize>, HashSet<usize>) {
    let mut products = HashSet::new();
    let mut constants = HashSet::new();
    for node in graph.plan.model().nodes() {
        if let Some(linear) = node.op_as::<CpuLinear>() {
            products.insert(Arc::as_ptr(&linear.weights) as usize);
        }
        if let Some(konst) = node.op_as::<Const>() {
            for (address, bytes) in constants::allocations(konst.val()) {
                if bytes >= 1024 {
                    constants.insert(address);
                }
            }
        }
    }
    (products, constants)
}

/// optimum's merged decoder holds each weight once: its with-past branch takes a prompt, so
/// its other branch is cut down to the cross-attention keys and values (two products a
/// layer); on the code before this, that branch was a second whole decoder (21 products).
#[test]
fn a_merged_decoder_holds_each_weight_once() {
    for name in ["optimum-merged-opset18", "optimum-split-opset18"] {
        let model = load(name);
        let graphs = model.kind.graphs();
        assert_eq!(graphs.len(), 2, "{name}");
        let (cross, step) = (graphs[0], graphs[1]);
        assert!(
            cross.io.logits.is_none(),
            "{name}: the first graph was kept whole"
        );
        let (cross_products, cross_constants) = weights(cross);
        let (step_products, step_constants) = weights(step);
        assert_eq!(cross_products.len(), 2 * model.shape.n_layers, "{name}");
        assert!(cross_products.is_disjoint(&step_products), "{name}");
        assert!(cross_constants.is_disjoint(&step_constants), "{name}");
    }
}

/// When both graphs stay (a with-past graph that cannot take a prompt), the constants tract
/// holds for them are held once: about the bytes of one graph's, not two.
#[test]
fn two_graphs_hold_their_common_constants_once() {
    let dir = fixture("optimum-split-opset18");
    let prepared = |file: &str| {
        let path = dir.join(file);
        prepare(
            &path,
            read_proto(&path).unwrap(),
            &hints(),
            WeightPrecision::F32,
        )
        .unwrap()
    };
    let (mut first, mut step) = (
        prepared("decoder_model.onnx"),
        prepared("decoder_with_past_model.onnx"),
    );
    let alone = constant_bytes([first.model_mut() as &TypedModel]);
    let apart = constant_bytes([first.model_mut() as &TypedModel, step.model_mut()]);
    assert!(
        apart > alone * 19 / 10,
        "{apart} bytes, {alone} for one graph"
    );
    share_constants(&mut [first.model_mut(), step.model_mut()]).unwrap();
    let shared = constant_bytes([first.model_mut() as &TypedModel, step.model_mut()]);
    assert!(
        shared < alone * 11 / 10,
        "{shared} bytes, {alone} for one graph"
    );
    let executor = Executor::SingleThread;
    let split = super::split::Split::new(
        first.plan(&executor).unwrap(),
        step.plan(&executor).unwrap(),
        &hints(),
    )
    .unwrap();
    let features = features();
    let want = {
        let model = load("optimum-split-opset18");
        let mut session = model.session(&features).unwrap();
        session.forward(&[vec![5, 6, 7]]).unwrap()
    };
    let model = DecoderModel {
        files: DecoderFiles::Split {
            first: dir.join("decoder_model.onnx"),
            step: dir.join("decoder_with_past_model.onnx"),
        },
        shape: split.shape(),
        kind: Box::new(split),
        executor: tract_linalg::multithread::Executor::SingleThread,
        alignment: std::sync::Mutex::new(None),
    };
    let got = model
        .session(&features)
        .unwrap()
        .forward(&[vec![5, 6, 7]])
        .unwrap();
    let err = want
        .iter()
        .zip(&got)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(
        err < 1e-5,
        "the two graphs' prompt differs from the step's by {err}"
    );
}

/// Beam search's reorders, in place, give the logits bit for bit that gathering every row into
/// new tensors (the code before this) gives; and a permutation keeps the cache's buffers.
#[test]
fn reordering_in_place_is_bit_identical_to_gathering() {
    let model = load("optimum-merged-opset18");
    let features = features();
    let mut in_place = model.session(&features).unwrap();
    let mut gathered = model.session(&features).unwrap();
    let prompt = vec![vec![10, 11, 12, 13]];
    assert_eq!(
        in_place.forward(&prompt).unwrap(),
        gathered.forward(&prompt).unwrap()
    );
    let sources: [&[usize]; 5] = [
        &[0, 0, 0, 0],
        &[3, 1, 1, 0],
        &[1, 0, 3, 2],
        &[2, 2, 2, 1],
        &[0, 3, 1, 1],
    ];
    for (step, source) in sources.iter().enumerate() {
        let key = |s: &DecoderSession| {
            s.state
                .past
                .as_ref()
                .unwrap()
                .get(0, cache_name::Part::Key)
                .as_bytes()
                .as_ptr()
        };
        let before = key(&in_place);
        in_place.reorder(source).unwrap();
        if step > 0 {
            assert_eq!(
                key(&in_place),
                before,
                "step {step}: the cache was reallocated"
            );
        }
        let state = &mut gathered.state;
        for slot in state.past.as_mut().unwrap().slots_mut() {
            *slot = gather_rows(slot, source).unwrap().into_tvalue();
        }
        state.history = source.iter().map(|&s| state.history[s].clone()).collect();
        state.rows = source.len();
        let tokens: Vec<Vec<u32>> = (0..4).map(|r| vec![(20 + 7 * step + r) as u32]).collect();
        let (a, b) = (
            in_place.forward(&tokens).unwrap(),
            gathered.forward(&tokens).unwrap(),
        );
        assert!(
            a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
            "step {step}: logits differ"
        );
    }
}
