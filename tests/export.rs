//! The CTranslate2 -> ONNX exporter against a plain f64 implementation of OpenAI's
//! `AudioEncoder.forward` and `TextDecoder.forward` (whisper/model.py), on a small random
//! Whisper with the real layout: the exported graphs must compute the same functions, whatever
//! tract does with them.

mod common;

use amanuensis::audio::N_FRAMES;
use amanuensis::backend::Backend;
use amanuensis::model::convert::convert_ct2;
use amanuensis::model::{DecoderFiles, DecoderHints, DecoderModel, Encoder, EncoderOptions};
use common::*;

const N_MELS: usize = 80;
const D: usize = 64;
const HEADS: usize = 2;
const FFN: usize = 256;
const LAYERS: usize = 2;
const CTX: usize = 1500;
const VOCAB: usize = 600;
const TEXT_CTX: usize = 448;

type Weights = Vec<(String, Vec<usize>, Vec<f32>)>;

/// The random Whisper of these tests.
const DIMS: RandomWhisper = RandomWhisper {
    n_mels: N_MELS,
    d: D,
    ffn: FFN,
    layers: LAYERS,
    ctx: CTX,
    vocab: VOCAB,
    text_ctx: TEXT_CTX,
};

fn get<'a>(w: &'a Weights, name: &str) -> &'a [f32] {
    &w.iter()
        .find(|(n, _, _)| n == name)
        .unwrap_or_else(|| panic!("{name}"))
        .2
}

fn gelu(x: f64) -> f64 {
    0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))
}

/// `y[t][o] = b[o] + sum_i x[t][i] w[o][i]` for a `[n_out, n_in]` weight.
fn linear(x: &[Vec<f64>], w: &[f32], b: Option<&[f32]>, n_out: usize) -> Vec<Vec<f64>> {
    let n_in = x[0].len();
    x.iter()
        .map(|row| {
            (0..n_out)
                .map(|o| {
                    let dot: f64 = (0..n_in).map(|i| row[i] * w[o * n_in + i] as f64).sum();
                    dot + b.map_or(0.0, |b| b[o] as f64)
                })
                .collect()
        })
        .collect()
}

fn layer_norm(x: &[Vec<f64>], g: &[f32], b: &[f32]) -> Vec<Vec<f64>> {
    x.iter()
        .map(|row| {
            let n = row.len() as f64;
            let mean = row.iter().sum::<f64>() / n;
            let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
            row.iter()
                .enumerate()
                .map(|(i, v)| (v - mean) / (var + 1e-5).sqrt() * g[i] as f64 + b[i] as f64)
                .collect()
        })
        .collect()
}

/// `x` is `[channels][frames]`; returns `[channels_out][frames / stride]`.
fn conv(x: &[Vec<f64>], w: &[f32], b: &[f32], n_out: usize, stride: usize) -> Vec<Vec<f64>> {
    let (n_in, len) = (x.len(), x[0].len());
    (0..n_out)
        .map(|o| {
            (0..len / stride)
                .map(|t| {
                    let mut acc = b[o] as f64;
                    for i in 0..n_in {
                        for k in 0..3 {
                            let pos = (t * stride + k) as isize - 1;
                            if pos >= 0 && (pos as usize) < len {
                                acc += w[(o * n_in + i) * 3 + k] as f64 * x[i][pos as usize];
                            }
                        }
                    }
                    gelu(acc)
                })
                .collect()
        })
        .collect()
}

/// Multi-head attention of `q` over `k` and `v` (`[positions][D]`), the query at row `i`
/// seeing keys `0 ..= offset + i` when `causal_offset` is given.
fn attention(
    q: &[Vec<f64>],
    k: &[Vec<f64>],
    v: &[Vec<f64>],
    causal_offset: Option<usize>,
) -> Vec<Vec<f64>> {
    let dh = D / HEADS;
    let mut o = vec![vec![0.0; D]; q.len()];
    for head in 0..HEADS {
        let h0 = head * dh;
        for (t, row) in q.iter().enumerate() {
            let visible = causal_offset.map_or(k.len(), |off| off + t + 1);
            let scores: Vec<f64> = (0..visible)
                .map(|s| {
                    (0..dh).map(|j| row[h0 + j] * k[s][h0 + j]).sum::<f64>() / (dh as f64).sqrt()
                })
                .collect();
            let max = scores.iter().cloned().fold(f64::MIN, f64::max);
            let exp: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
            let sum: f64 = exp.iter().sum();
            for j in 0..dh {
                o[t][h0 + j] = (0..visible).map(|s| exp[s] / sum * v[s][h0 + j]).sum();
            }
        }
    }
    o
}

fn add_into(h: &mut [Vec<f64>], x: &[Vec<f64>]) {
    h.iter_mut()
        .zip(x)
        .for_each(|(h, x)| h.iter_mut().zip(x).for_each(|(h, x)| *h += x));
}

/// OpenAI's `TextDecoder.forward` in f64 over encoder `features` (`[CTX][D]`): the logits of
/// every position of `tokens`.
fn reference_decoder(w: &Weights, features: &[f32], tokens: &[u32]) -> Vec<Vec<f64>> {
    let xa: Vec<Vec<f64>> = features
        .chunks(D)
        .map(|r| r.iter().map(|&v| v as f64).collect())
        .collect();
    let (emb, pos) = (
        get(w, "decoder/embeddings/weight"),
        get(w, "decoder/position_encodings/encodings"),
    );
    let mut h: Vec<Vec<f64>> = tokens
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            (0..D)
                .map(|c| emb[t as usize * D + c] as f64 + pos[i * D + c] as f64)
                .collect()
        })
        .collect();
    for l in 0..LAYERS {
        let p = format!("decoder/layer_{l}");
        let g = |n: &str| get(w, &format!("{p}/{n}"));
        let a = layer_norm(
            &h,
            g("self_attention/layer_norm/gamma"),
            g("self_attention/layer_norm/beta"),
        );
        let qkv = linear(
            &a,
            g("self_attention/linear_0/weight"),
            Some(g("self_attention/linear_0/bias")),
            3 * D,
        );
        let part = |r: std::ops::Range<usize>| -> Vec<Vec<f64>> {
            qkv.iter().map(|row| row[r.clone()].to_vec()).collect()
        };
        let o = attention(&part(0..D), &part(D..2 * D), &part(2 * D..3 * D), Some(0));
        add_into(
            &mut h,
            &linear(
                &o,
                g("self_attention/linear_1/weight"),
                Some(g("self_attention/linear_1/bias")),
                D,
            ),
        );
        let a = layer_norm(
            &h,
            g("attention/layer_norm/gamma"),
            g("attention/layer_norm/beta"),
        );
        let q = linear(
            &a,
            g("attention/linear_0/weight"),
            Some(g("attention/linear_0/bias")),
            D,
        );
        let kv = linear(
            &xa,
            g("attention/linear_1/weight"),
            Some(g("attention/linear_1/bias")),
            2 * D,
        );
        let k: Vec<Vec<f64>> = kv.iter().map(|r| r[..D].to_vec()).collect();
        let v: Vec<Vec<f64>> = kv.iter().map(|r| r[D..].to_vec()).collect();
        let o = attention(&q, &k, &v, None);
        add_into(
            &mut h,
            &linear(
                &o,
                g("attention/linear_2/weight"),
                Some(g("attention/linear_2/bias")),
                D,
            ),
        );
        let a = layer_norm(&h, g("ffn/layer_norm/gamma"), g("ffn/layer_norm/beta"));
        let f = linear(
            &a,
            g("ffn/linear_0/weight"),
            Some(g("ffn/linear_0/bias")),
            FFN,
        );
        let f: Vec<Vec<f64>> = f
            .into_iter()
            .map(|r| r.into_iter().map(gelu).collect())
            .collect();
        add_into(
            &mut h,
            &linear(
                &f,
                g("ffn/linear_1/weight"),
                Some(g("ffn/linear_1/bias")),
                D,
            ),
        );
    }
    let h = layer_norm(
        &h,
        get(w, "decoder/layer_norm/gamma"),
        get(w, "decoder/layer_norm/beta"),
    );
    linear(&h, emb, None, VOCAB)
}

fn reference_encoder(w: &Weights, mel: &[f32]) -> Vec<f32> {
    let x: Vec<Vec<f64>> = (0..N_MELS)
        .map(|m| {
            mel[m * N_FRAMES..(m + 1) * N_FRAMES]
                .iter()
                .map(|&v| v as f64)
                .collect()
        })
        .collect();
    let x = conv(
        &x,
        get(w, "encoder/conv1/weight"),
        get(w, "encoder/conv1/bias"),
        D,
        1,
    );
    let x = conv(
        &x,
        get(w, "encoder/conv2/weight"),
        get(w, "encoder/conv2/bias"),
        D,
        2,
    );
    let pos = get(w, "encoder/position_encodings/encodings");
    let mut h: Vec<Vec<f64>> = (0..CTX)
        .map(|t| (0..D).map(|c| x[c][t] + pos[t * D + c] as f64).collect())
        .collect();
    let dh = D / HEADS;
    for l in 0..LAYERS {
        let p = format!("encoder/layer_{l}");
        let a = layer_norm(
            &h,
            get(w, &format!("{p}/self_attention/layer_norm/gamma")),
            get(w, &format!("{p}/self_attention/layer_norm/beta")),
        );
        let qkv = linear(
            &a,
            get(w, &format!("{p}/self_attention/linear_0/weight")),
            Some(get(w, &format!("{p}/self_attention/linear_0/bias"))),
            3 * D,
        );
        let mut o = vec![vec![0.0; D]; CTX];
        for head in 0..HEADS {
            let (q0, k0, v0) = (head * dh, D + head * dh, 2 * D + head * dh);
            for t in 0..CTX {
                let scores: Vec<f64> = (0..CTX)
                    .map(|s| {
                        (0..dh)
                            .map(|j| qkv[t][q0 + j] * qkv[s][k0 + j])
                            .sum::<f64>()
                            / (dh as f64).sqrt()
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::MIN, f64::max);
                let exp: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let sum: f64 = exp.iter().sum();
                for j in 0..dh {
                    o[t][head * dh + j] = (0..CTX).map(|s| exp[s] / sum * qkv[s][v0 + j]).sum();
                }
            }
        }
        // Whisper's key projection has no bias: CTranslate2 stores the fused bias with zeros
        // there, and the reference uses the stored values as they are, like the exporter.
        let out = linear(
            &o,
            get(w, &format!("{p}/self_attention/linear_1/weight")),
            Some(get(w, &format!("{p}/self_attention/linear_1/bias"))),
            D,
        );
        h.iter_mut()
            .zip(&out)
            .for_each(|(h, o)| h.iter_mut().zip(o).for_each(|(h, o)| *h += o));
        let a = layer_norm(
            &h,
            get(w, &format!("{p}/ffn/layer_norm/gamma")),
            get(w, &format!("{p}/ffn/layer_norm/beta")),
        );
        let f = linear(
            &a,
            get(w, &format!("{p}/ffn/linear_0/weight")),
            Some(get(w, &format!("{p}/ffn/linear_0/bias"))),
            FFN,
        );
        let f: Vec<Vec<f64>> = f
            .into_iter()
            .map(|r| r.into_iter().map(gelu).collect())
            .collect();
        let f = linear(
            &f,
            get(w, &format!("{p}/ffn/linear_1/weight")),
            Some(get(w, &format!("{p}/ffn/linear_1/bias"))),
            D,
        );
        h.iter_mut()
            .zip(&f)
            .for_each(|(h, f)| h.iter_mut().zip(f).for_each(|(h, f)| *h += f));
    }
    let h = layer_norm(
        &h,
        get(w, "encoder/layer_norm/gamma"),
        get(w, "encoder/layer_norm/beta"),
    );
    h.into_iter().flatten().map(|v| v as f32).collect()
}

fn random_weights_with_whisper_key_bias() -> Weights {
    let mut rng = Rng(0x5eed);
    let mut weights = random_whisper(&mut rng, &DIMS);
    // CTranslate2 keeps zeros where the key projection's bias would be.
    let bias = weights
        .iter_mut()
        .filter(|(n, _, _)| n.ends_with("self_attention/linear_0/bias"));
    for (_, _, b) in bias {
        b[D..2 * D].iter_mut().for_each(|v| *v = 0.0);
    }
    for (_, _, b) in weights
        .iter_mut()
        .filter(|(n, _, _)| n.ends_with("/attention/linear_1/bias"))
    {
        b[..D].iter_mut().for_each(|v| *v = 0.0);
    }
    weights
}

/// Converts `vars`, runs the exported encoder on a random mel and compares it with the f64
/// reference on `weights` (the float values the checkpoint stands for).
fn check_conversion(vars: &[Ct2Var], weights: &Weights) {
    let tmp = tempfile::tempdir().unwrap();
    let ct2 = tmp.path().join("ct2");
    std::fs::create_dir(&ct2).unwrap();
    write_ct2(&ct2.join("model.bin"), vars);
    let out = tmp.path().join("onnx");
    let converted = convert_ct2(&ct2, &out).unwrap();
    assert_eq!(
        (
            converted.dims.d_model,
            converted.dims.n_heads,
            converted.dims.n_layers
        ),
        (D, HEADS, LAYERS)
    );
    for file in [
        "encoder_model.onnx",
        "config.json",
        "preprocessor_config.json",
    ] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    let encoder = Encoder::load(
        &out,
        &EncoderOptions {
            threads: 1,
            ..EncoderOptions::default()
        },
    )
    .unwrap();
    let mel = Rng(7).vec(N_MELS * N_FRAMES, 1.0);
    let ours = encoder.encode(&mel).unwrap();
    let expected = reference_encoder(weights, &mel);
    // The NPU plan of the project's own export: the same placement as every exporter's.
    let emu = Encoder::load(
        &out,
        &EncoderOptions {
            threads: 1,
            backend: Backend::Emu,
            ..EncoderOptions::default()
        },
    )
    .unwrap();
    assert_eq!(offloadable(emu.placement()), expected_npu_placement(LAYERS));
    assert!(
        emu.placement().left_on_cpu.is_empty(),
        "{:?}",
        emu.placement().left_on_cpu
    );
    // float32 through two layers of a LayerNorm-normalised network: about 1e-6.
    assert_close(
        "exported encoder vs f64 reference",
        &ours,
        &expected,
        1e-4,
        0.999_999,
    );

    // The decoder: a prompt in one forward through an empty cache, then a token at a time.
    let files = DecoderFiles::locate(&out).unwrap();
    assert!(matches!(files, DecoderFiles::CrossKv { .. }), "{files:?}");
    let hints = DecoderHints {
        d_model: D,
        n_audio_ctx: CTX,
        n_heads: None,
    };
    let decoder = DecoderModel::load(files, hints, 1).unwrap();
    assert_eq!(
        (
            decoder.shape().n_vocab,
            decoder.shape().n_layers,
            decoder.shape().n_heads
        ),
        (VOCAB, LAYERS, HEADS)
    );
    let (prompt, steps) = ([5u32, 17, 300], [42u32, 599, 0]);
    let mut session = decoder.session(&ours).unwrap();
    let mut got = session.forward(&[prompt.to_vec()]).unwrap();
    for &t in &steps {
        got.extend(session.forward(&[vec![t]]).unwrap());
    }
    let all: Vec<u32> = prompt.iter().chain(&steps).copied().collect();
    let reference = reference_decoder(weights, &ours, &all);
    let expected: Vec<f32> = reference[prompt.len() - 1..]
        .iter()
        .flatten()
        .map(|&v| v as f32)
        .collect();
    // float32 through two layers and the vocabulary projection, logits of order 1: measured
    // 1.7e-6 (float weights) and 1.9e-6 (int8); the bound is twice that.
    assert_close(
        "exported decoder vs f64 reference",
        &got,
        &expected,
        4e-6,
        0.999_999_9,
    );
}

#[test]
fn exported_encoder_computes_openais_encoder() {
    let weights = random_weights_with_whisper_key_bias();
    let mut vars: Vec<Ct2Var> = weights.iter().map(|(n, s, d)| ct2_f32(n, s, d)).collect();
    vars.push(ct2_i16_scalar("encoder/num_heads", HEADS as i16));
    check_conversion(&vars, &weights);
}

/// An int8 checkpoint (CTranslate2's `quantization="int8"`: every linear weight scaled per row
/// by 127 / max|w| and rounded, the scale stored as `<name>_scale`) converts to the float
/// weights it stands for, `q / scale`.
#[test]
fn int8_checkpoints_are_dequantised() {
    let mut weights = random_weights_with_whisper_key_bias();
    let mut vars = Vec::new();
    for (name, shape, data) in weights.iter_mut() {
        let linear = name.contains("/linear_") && name.ends_with("/weight");
        if !linear {
            vars.push(ct2_f32(name, shape, data));
            continue;
        }
        let row = shape[1];
        let (mut q, mut scales) = (Vec::new(), Vec::new());
        for r in data.chunks_mut(row) {
            let amax = r.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let scale = 127.0 / amax;
            for v in r.iter_mut() {
                let qv = (*v * scale).round() as i8;
                q.push(qv);
                *v = qv as f32 / scale;
            }
            scales.push(scale);
        }
        vars.push(ct2_i8(name, shape, &q));
        vars.push(ct2_f32(&format!("{name}_scale"), &[shape[0]], &scales));
    }
    vars.push(ct2_i16_scalar("encoder/num_heads", HEADS as i16));
    check_conversion(&vars, &weights);
}

/// After a failed conversion, `dir` holds the checkpoint's folder `ct2` and nothing else.
fn assert_only_the_checkpoint_is_left(dir: &std::path::Path) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["ct2"], "the failed conversion left files behind");
}

/// A checkpoint whose CTranslate2 `config.json` is not JSON is refused, naming the file,
/// before anything is written.
#[test]
fn a_malformed_checkpoint_config_is_refused_by_name() {
    let weights = random_weights_with_whisper_key_bias();
    let mut vars: Vec<Ct2Var> = weights.iter().map(|(n, s, d)| ct2_f32(n, s, d)).collect();
    vars.push(ct2_i16_scalar("encoder/num_heads", HEADS as i16));
    let tmp = tempfile::tempdir().unwrap();
    let ct2 = tmp.path().join("ct2");
    std::fs::create_dir(&ct2).unwrap();
    write_ct2(&ct2.join("model.bin"), &vars);
    std::fs::write(ct2.join("config.json"), b"{\"suppress_ids\": [1, 2").unwrap();
    let err = format!(
        "{:#}",
        convert_ct2(&ct2, &tmp.path().join("out")).unwrap_err()
    );
    assert!(
        err.contains("config.json") && err.contains("not valid JSON"),
        "{err}"
    );
    assert_only_the_checkpoint_is_left(tmp.path());
}

#[test]
fn conversion_refuses_to_overwrite_and_leaves_nothing_on_failure() {
    let tmp = tempfile::tempdir().unwrap();
    let ct2 = tmp.path().join("ct2");
    std::fs::create_dir(&ct2).unwrap();
    std::fs::write(ct2.join("model.bin"), b"not a checkpoint").unwrap();
    let out = tmp.path().join("out");
    let err = convert_ct2(&ct2, &out).unwrap_err().to_string();
    assert!(
        err.contains("model.bin") && err.contains("not a CTranslate2"),
        "{err}"
    );
    assert_only_the_checkpoint_is_left(tmp.path());

    std::fs::create_dir(&out).unwrap();
    let err = convert_ct2(&ct2, &out).unwrap_err().to_string();
    assert!(err.contains("already exists"), "{err}");
}
