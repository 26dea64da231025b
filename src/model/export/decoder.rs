//! The Whisper decoder of a CTranslate2 checkpoint as two ONNX graphs with a KV cache.
//!
//! - `cross_kv_model.onnx`: `encoder_hidden_states [batch, n_audio_ctx, d_model]` ->
//!   `present.{i}.encoder.key` / `.value` `[batch, heads, n_audio_ctx, 64]`, the
//!   cross-attention keys and values of every layer, computed once per window.
//! - `decoder_with_past_model.onnx`: optimum's with-past interface. `input_ids [batch, seq]`
//!   (int64), `past_key_values.{i}.decoder.key` / `.value` `[batch, heads, past, 64]` and
//!   `past_key_values.{i}.encoder.key` / `.value` -> `logits [batch, 1, n_vocab]` and
//!   `present.{i}.decoder.key` / `.value` `[batch, heads, past + seq, 64]`.
//!
//! Why this shape, and not optimum's `decoder_model.onnx` beside the with-past graph: the
//! with-past graph also takes an empty cache (`past = 0`), so one graph serves the prompt and
//! every later token, and the decoder's weights (a quarter of them in the token embedding)
//! are read, planned and held once instead of twice; the cross-attention projections, which
//! are the only work that depends on the encoder output alone, run once per window in their
//! own small graph; and the logits are computed for the last position only, since decoding
//! never reads the others, so a prompt of 200 tokens costs one vocabulary projection and not
//! 200. tract plans both graphs once with symbolic `batch`, `seq` and `past`, which its
//! matrix products resolve per call; a fixed-capacity cache would make every step attend to
//! all 448 positions and copy the cache in and out.

use super::builder::{Attr, Dim, GraphBuilder};
use super::encoder::{feed_forward, layer_norm, linear, linear_rows};
use crate::model::convert::DecoderDims;
use crate::model::ct2::{Ct2Error, Ct2Model};

/// Builds `cross_kv_model.onnx` for `dims` (decoder) over encoder features of `n_audio_ctx`
/// positions and `d_model` channels.
pub fn build_cross_kv(
    ct2: &Ct2Model,
    dims: &DecoderDims,
    n_audio_ctx: usize,
) -> Result<GraphBuilder, Ct2Error> {
    let d = dims.d_model;
    let mut g = GraphBuilder::default();
    let x = g.input(
        "encoder_hidden_states",
        &[
            Dim::Param("batch_size"),
            Dim::Fixed(n_audio_ctx as i64),
            Dim::Fixed(d as i64),
        ],
    );
    let heads = dims.n_heads as i64;
    let head_dim = (d / dims.n_heads) as i64;
    let split = g.ints(&[0, -1, heads, head_dim]);
    for layer in 0..dims.n_layers {
        let var = format!("decoder/layer_{layer}/attention/linear_1");
        let scope = format!("/layers.{layer}/encoder_attn");
        for (which, rows, bias) in [("key", 0..d, false), ("value", d..2 * d, true)] {
            let proj = &format!("{scope}/{}_proj", &which[..1]);
            let y = linear_rows(&mut g, ct2, proj, &var, &x, d, 2 * d, rows, bias)?;
            let y = g.node(proj, "Reshape", &[&y, &split], &[]);
            let y = g.node(
                proj,
                "Transpose",
                &[&y],
                &[("perm", Attr::Ints(vec![0, 2, 1, 3]))],
            );
            g.output(
                &y,
                &format!("present.{layer}.encoder.{which}"),
                &[
                    Dim::Param("batch_size"),
                    Dim::Fixed(heads),
                    Dim::Fixed(n_audio_ctx as i64),
                    Dim::Fixed(head_dim),
                ],
            );
        }
    }
    Ok(g)
}

/// Builds `decoder_with_past_model.onnx` for `dims` over encoder features of `n_audio_ctx`
/// positions.
pub fn build_decoder(
    ct2: &Ct2Model,
    dims: &DecoderDims,
    n_audio_ctx: usize,
) -> Result<GraphBuilder, Ct2Error> {
    let d = dims.d_model;
    let heads = dims.n_heads as i64;
    let head_dim = (d / dims.n_heads) as i64;
    let mut g = GraphBuilder::default();
    let ids = g.input_i64("input_ids", &[Dim::Param("batch_size"), Dim::Param("seq")]);
    let kv_dims = |past: &'static str| {
        [
            Dim::Param("batch_size"),
            Dim::Fixed(heads),
            Dim::Param(past),
            Dim::Fixed(head_dim),
        ]
    };
    let mut past = Vec::new();
    for layer in 0..dims.n_layers {
        let mut names = Vec::new();
        for (stack, len) in [("decoder", "past"), ("encoder", "encoder_sequence_length")] {
            for which in ["key", "value"] {
                let dims = if stack == "encoder" {
                    let mut d = kv_dims(len);
                    d[2] = Dim::Fixed(n_audio_ctx as i64);
                    d
                } else {
                    kv_dims(len)
                };
                names.push(g.input(&format!("past_key_values.{layer}.{stack}.{which}"), &dims));
            }
        }
        past.push(names);
    }

    // Positions past .. past + seq: the cached length, then the new tokens.
    let past_len = g.node(
        "",
        "Shape",
        &[&past[0][0]],
        &[("start", Attr::Int(2)), ("end", Attr::Int(3))],
    );
    let seq_len = g.node(
        "",
        "Shape",
        &[&ids],
        &[("start", Attr::Int(1)), ("end", Attr::Int(2))],
    );
    let total_len = g.node("", "Add", &[&past_len, &seq_len], &[]);
    let axis0 = g.ints(&[0]);
    let n_ctx = dims.n_text_ctx;
    let positions = g.weight(
        "decoder.embed_positions.weight",
        &[n_ctx, d],
        ct2.weight("decoder/position_encodings/encodings", &[n_ctx, d])?,
    );
    let pos = g.node(
        "/embed_positions",
        "Slice",
        &[&positions, &past_len, &total_len, &axis0],
        &[],
    );
    let embedding = g.weight(
        "decoder.embed_tokens.weight",
        &[dims.n_vocab, d],
        ct2.weight("decoder/embeddings/weight", &[dims.n_vocab, d])?,
    );
    let tok = g.node(
        "/embed_tokens",
        "Gather",
        &[&embedding, &ids],
        &[("axis", Attr::Int(0))],
    );
    let mut x = g.node("", "Add", &[&tok, &pos], &[]);

    // The causal mask [seq, past + seq]: query i (at position past + i) sees keys 0 ..= past + i.
    let scalar = |g: &mut GraphBuilder, v: &str| {
        let axes = g.ints(&[0]);
        g.node("/mask", "Squeeze", &[v, &axes], &[])
    };
    let (p0, t0) = (scalar(&mut g, &past_len), scalar(&mut g, &total_len));
    let (zero, one) = (g.int_scalar(0), g.int_scalar(1));
    let rows = g.node("/mask", "Range", &[&p0, &t0, &one], &[]);
    let cols = g.node("/mask", "Range", &[&zero, &t0, &one], &[]);
    let axis1 = g.ints(&[1]);
    let rows = g.node("/mask", "Unsqueeze", &[&rows, &axis1], &[]);
    let cols = g.node("/mask", "Unsqueeze", &[&cols, &axis0], &[]);
    let future = g.node("/mask", "Greater", &[&cols, &rows], &[]);
    let (neg_inf, fzero) = (g.scalar(f32::NEG_INFINITY), g.scalar(0.0));
    let mask = g.node("/mask", "Where", &[&future, &neg_inf, &fzero], &[]);

    let split = g.ints(&[0, 0, heads, head_dim]);
    let merge = g.ints(&[0, 0, d as i64]);
    let scale = g.scalar((head_dim as f32).powf(-0.5));
    for (layer, past) in past.iter().enumerate() {
        let p = format!("decoder/layer_{layer}");
        let scope = format!("/layers.{layer}");
        let per_head = |g: &mut GraphBuilder, scope: &str, x: &str| {
            let x = g.node(scope, "Reshape", &[x, &split], &[]);
            g.node(
                scope,
                "Transpose",
                &[&x],
                &[("perm", Attr::Ints(vec![0, 2, 1, 3]))],
            )
        };
        let attend =
            |g: &mut GraphBuilder, scope: &str, q: &str, k: &str, v: &str, mask: Option<&str>| {
                let kt = g.node(
                    scope,
                    "Transpose",
                    &[k],
                    &[("perm", Attr::Ints(vec![0, 1, 3, 2]))],
                );
                let mut scores = g.node(scope, "MatMul", &[q, &kt], &[]);
                if let Some(mask) = mask {
                    scores = g.node(scope, "Add", &[&scores, mask], &[]);
                }
                let probs = g.node(scope, "Softmax", &[&scores], &[("axis", Attr::Int(-1))]);
                let o = g.node(scope, "MatMul", &[&probs, v], &[]);
                let o = g.node(
                    scope,
                    "Transpose",
                    &[&o],
                    &[("perm", Attr::Ints(vec![0, 2, 1, 3]))],
                );
                g.node(scope, "Reshape", &[&o, &merge], &[])
            };

        // Self-attention over the cache and the new tokens.
        let sa = format!("{scope}/self_attn");
        let h = layer_norm(
            &mut g,
            ct2,
            &format!("{scope}/self_attn_layer_norm"),
            &format!("{p}/self_attention/layer_norm"),
            &x,
            d,
        )?;
        let fused = format!("{p}/self_attention/linear_0");
        let q = linear_rows(
            &mut g,
            ct2,
            &format!("{sa}/q_proj"),
            &fused,
            &h,
            d,
            3 * d,
            0..d,
            true,
        )?;
        let k = linear_rows(
            &mut g,
            ct2,
            &format!("{sa}/k_proj"),
            &fused,
            &h,
            d,
            3 * d,
            d..2 * d,
            false,
        )?;
        let v = linear_rows(
            &mut g,
            ct2,
            &format!("{sa}/v_proj"),
            &fused,
            &h,
            d,
            3 * d,
            2 * d..3 * d,
            true,
        )?;
        let q = g.node(&sa, "Mul", &[&q, &scale], &[]);
        let q = per_head(&mut g, &sa, &q);
        let k = per_head(&mut g, &sa, &k);
        let v = per_head(&mut g, &sa, &v);
        let k = g.node(&sa, "Concat", &[&past[0], &k], &[("axis", Attr::Int(2))]);
        let v = g.node(&sa, "Concat", &[&past[1], &v], &[("axis", Attr::Int(2))]);
        for (value, which) in [(&k, "key"), (&v, "value")] {
            g.output(
                value,
                &format!("present.{layer}.decoder.{which}"),
                &[
                    Dim::Param("batch_size"),
                    Dim::Fixed(heads),
                    Dim::Param("past + seq"),
                    Dim::Fixed(head_dim),
                ],
            );
        }
        let o = attend(&mut g, &sa, &q, &k, &v, Some(&mask));
        let o = linear(
            &mut g,
            ct2,
            &format!("{sa}/out_proj"),
            &format!("{p}/self_attention/linear_1"),
            &o,
            d,
            d,
            true,
        )?;
        x = g.node(&scope, "Add", &[&x, &o], &[]);

        // Cross-attention over the window's features.
        let ca = format!("{scope}/encoder_attn");
        let h = layer_norm(
            &mut g,
            ct2,
            &format!("{scope}/encoder_attn_layer_norm"),
            &format!("{p}/attention/layer_norm"),
            &x,
            d,
        )?;
        let q = linear(
            &mut g,
            ct2,
            &format!("{ca}/q_proj"),
            &format!("{p}/attention/linear_0"),
            &h,
            d,
            d,
            true,
        )?;
        let q = g.node(&ca, "Mul", &[&q, &scale], &[]);
        let q = per_head(&mut g, &ca, &q);
        let o = attend(&mut g, &ca, &q, &past[2], &past[3], None);
        let o = linear(
            &mut g,
            ct2,
            &format!("{ca}/out_proj"),
            &format!("{p}/attention/linear_2"),
            &o,
            d,
            d,
            true,
        )?;
        x = g.node(&scope, "Add", &[&x, &o], &[]);

        let ffn = ct2.shape(&format!("{p}/ffn/linear_0/weight"))?[0];
        x = feed_forward(&mut g, ct2, &scope, &p, &x, d, ffn)?;
    }
    // The last position only, normalised, against the (tied) token embedding.
    let last = g.ints(&[-1]);
    let end = g.ints(&[i64::MAX]);
    let x = g.node("", "Slice", &[&x, &last, &end, &axis1], &[]);
    let x = layer_norm(&mut g, ct2, "/layer_norm", "decoder/layer_norm", &x, d)?;
    let rows = g.ints(&[-1, d as i64]);
    let x = g.node("/proj_out", "Reshape", &[&x, &rows], &[]);
    // The projection reads the embedding through a Transpose, which tract folds into a
    // constant of its own at load: a constant shared with the Gather above would be packed
    // for the product at every step (30 ms a token for tiny) instead of once.
    let projection = g.node(
        "/proj_out",
        "Transpose",
        &[&embedding],
        &[("perm", Attr::Ints(vec![1, 0]))],
    );
    let logits = g.node("/proj_out", "MatMul", &[&x, &projection], &[]);
    let shape = g.ints(&[-1, 1, dims.n_vocab as i64]);
    let logits = g.node("/proj_out", "Reshape", &[&logits, &shape], &[]);
    g.output(
        &logits,
        "logits",
        &[
            Dim::Param("batch_size"),
            Dim::Fixed(1),
            Dim::Fixed(dims.n_vocab as i64),
        ],
    );
    Ok(g)
}
