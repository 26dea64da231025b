//! The Whisper encoder of a CTranslate2 checkpoint as an ONNX graph.

use super::builder::{Attr, Dim, GraphBuilder};
use crate::model::WhisperDims;
use crate::model::ct2::{Ct2Error, Ct2Model};

/// Whisper's LayerNorm epsilon (`torch.nn.LayerNorm` default, as in OpenAI's model.py).
const LAYER_NORM_EPS: f32 = 1e-5;

/// Builds the encoder graph of `ct2` with the graph idioms of optimum's exports: opset 17,
/// `LayerNormalization` nodes, GELU spelled out with `Erf`, linear layers as `MatMul` + `Add`
/// with transposed weights, attention as batched `MatMul`s around a `Softmax`.
///
/// Input `input_features` `[batch_size, n_mels, 3000]`, output `last_hidden_state`
/// `[batch_size, 1500, d_model]`.
pub fn build_encoder(ct2: &Ct2Model, dims: &WhisperDims) -> Result<GraphBuilder, Ct2Error> {
    let d = dims.d_model;
    let mut g = GraphBuilder::default();
    let n_ctx = dims.n_audio_ctx;
    let x = g.input(
        "input_features",
        &[
            Dim::Param("batch_size"),
            Dim::Fixed(dims.n_mels as i64),
            Dim::Fixed(2 * n_ctx as i64),
        ],
    );

    let conv1_w = g.weight(
        "encoder.conv1.weight",
        &[d, dims.n_mels, 3],
        ct2.weight("encoder/conv1/weight", &[d, dims.n_mels, 3])?,
    );
    let conv1_b = g.weight(
        "encoder.conv1.bias",
        &[d],
        ct2.weight("encoder/conv1/bias", &[d])?,
    );
    let conv2_w = g.weight(
        "encoder.conv2.weight",
        &[d, d, 3],
        ct2.weight("encoder/conv2/weight", &[d, d, 3])?,
    );
    let conv2_b = g.weight(
        "encoder.conv2.bias",
        &[d],
        ct2.weight("encoder/conv2/bias", &[d])?,
    );
    let conv = |g: &mut GraphBuilder, scope: &str, x: &str, w: &str, b: &str, stride: i64| {
        g.node(
            scope,
            "Conv",
            &[x, w, b],
            &[
                ("dilations", Attr::Ints(vec![1])),
                ("group", Attr::Int(1)),
                ("kernel_shape", Attr::Ints(vec![3])),
                ("pads", Attr::Ints(vec![1, 1])),
                ("strides", Attr::Ints(vec![stride])),
            ],
        )
    };
    let x = conv(&mut g, "/conv1", &x, &conv1_w, &conv1_b, 1);
    let x = gelu(&mut g, "/conv1", &x);
    let x = conv(&mut g, "/conv2", &x, &conv2_w, &conv2_b, 2);
    let x = gelu(&mut g, "/conv2", &x);
    let x = g.node(
        "",
        "Transpose",
        &[&x],
        &[("perm", Attr::Ints(vec![0, 2, 1]))],
    );
    let pos = g.weight(
        "encoder.embed_positions.weight",
        &[n_ctx, d],
        ct2.weight("encoder/position_encodings/encodings", &[n_ctx, d])?,
    );
    let mut x = g.node("", "Add", &[&x, &pos], &[]);

    for layer in 0..dims.n_layers {
        let p = format!("encoder/layer_{layer}");
        let scope = format!("/layers.{layer}");
        let h = layer_norm(
            &mut g,
            ct2,
            &format!("{scope}/self_attn_layer_norm"),
            &format!("{p}/self_attention/layer_norm"),
            &x,
            d,
        )?;
        let a = self_attention(
            &mut g,
            ct2,
            dims,
            &format!("{scope}/self_attn"),
            &format!("{p}/self_attention"),
            &h,
        )?;
        x = g.node(&scope, "Add", &[&x, &a], &[]);
        x = feed_forward(&mut g, ct2, &scope, &p, &x, d, dims.n_ffn)?;
    }
    let x = layer_norm(&mut g, ct2, "/layer_norm", "encoder/layer_norm", &x, d)?;
    g.output(
        &x,
        "last_hidden_state",
        &[
            Dim::Param("batch_size"),
            Dim::Fixed(n_ctx as i64),
            Dim::Fixed(d as i64),
        ],
    );
    Ok(g)
}

/// GELU as torch.onnx writes `nn.GELU()` below opset 20: `x * (1 + erf(x / sqrt 2)) * 0.5`.
/// A layer's feed-forward block with its residual: `x + fc2(gelu(fc1(layer_norm(x))))`,
/// the ONNX nodes under `scope`, the weights of CTranslate2's `{p}/ffn`.
pub(crate) fn feed_forward(
    g: &mut GraphBuilder,
    ct2: &Ct2Model,
    scope: &str,
    p: &str,
    x: &str,
    d: usize,
    ffn: usize,
) -> Result<String, Ct2Error> {
    let h = layer_norm(
        g,
        ct2,
        &format!("{scope}/final_layer_norm"),
        &format!("{p}/ffn/layer_norm"),
        x,
        d,
    )?;
    let h = linear(
        g,
        ct2,
        &format!("{scope}/fc1"),
        &format!("{p}/ffn/linear_0"),
        &h,
        d,
        ffn,
        true,
    )?;
    let h = gelu(g, &format!("{scope}/activation_fn"), &h);
    let h = linear(
        g,
        ct2,
        &format!("{scope}/fc2"),
        &format!("{p}/ffn/linear_1"),
        &h,
        ffn,
        d,
        true,
    )?;
    Ok(g.node(scope, "Add", &[x, &h], &[]))
}

pub(crate) fn gelu(g: &mut GraphBuilder, scope: &str, x: &str) -> String {
    let sqrt2 = g.scalar(std::f32::consts::SQRT_2);
    let one = g.scalar(1.0);
    let half = g.scalar(0.5);
    let t = g.node(scope, "Div", &[x, &sqrt2], &[]);
    let t = g.node(scope, "Erf", &[&t], &[]);
    let t = g.node(scope, "Add", &[&t, &one], &[]);
    let t = g.node(scope, "Mul", &[x, &t], &[]);
    g.node(scope, "Mul", &[&t, &half], &[])
}

pub(crate) fn layer_norm(
    g: &mut GraphBuilder,
    ct2: &Ct2Model,
    scope: &str,
    var: &str,
    x: &str,
    d: usize,
) -> Result<String, Ct2Error> {
    let name = scope.trim_start_matches('/').replace('/', ".");
    let gamma = g.weight(
        &format!("{name}.weight"),
        &[d],
        ct2.weight(&format!("{var}/gamma"), &[d])?,
    );
    let beta = g.weight(
        &format!("{name}.bias"),
        &[d],
        ct2.weight(&format!("{var}/beta"), &[d])?,
    );
    Ok(g.node(
        scope,
        "LayerNormalization",
        &[x, &gamma, &beta],
        &[
            ("axis", Attr::Int(-1)),
            ("epsilon", Attr::Float(LAYER_NORM_EPS)),
        ],
    ))
}

/// Transposes a `[rows, cols]` row-major matrix.
fn transpose(w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0; w.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = w[r * cols + c];
        }
    }
    t
}

/// `x @ W^T + b` for a CT2 linear layer `W: [n_out, n_in]`, from rows `rows` of a possibly
/// fused weight.
#[allow(clippy::too_many_arguments)]
pub(crate) fn linear_rows(
    g: &mut GraphBuilder,
    ct2: &Ct2Model,
    scope: &str,
    var: &str,
    x: &str,
    n_in: usize,
    fused_out: usize,
    rows: std::ops::Range<usize>,
    bias: bool,
) -> Result<String, Ct2Error> {
    let name = scope.trim_start_matches('/').replace('/', ".");
    let w = ct2.weight(&format!("{var}/weight"), &[fused_out, n_in])?;
    let n_out = rows.len();
    let w = transpose(&w[rows.start * n_in..rows.end * n_in], n_out, n_in);
    let w = g.weight(&format!("{name}.weight_t"), &[n_in, n_out], w);
    let y = g.node(scope, "MatMul", &[x, &w], &[]);
    if !bias {
        return Ok(y);
    }
    let b = ct2.weight(&format!("{var}/bias"), &[fused_out])?;
    let b = g.weight(&format!("{name}.bias"), &[n_out], b[rows].to_vec());
    Ok(g.node(scope, "Add", &[&y, &b], &[]))
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn linear(
    g: &mut GraphBuilder,
    ct2: &Ct2Model,
    scope: &str,
    var: &str,
    x: &str,
    n_in: usize,
    n_out: usize,
    bias: bool,
) -> Result<String, Ct2Error> {
    linear_rows(g, ct2, scope, var, x, n_in, n_out, 0..n_out, bias)
}

/// Multi-head self-attention from CT2's fused `linear_0` (Q, K, V rows; K has no bias in
/// Whisper, CT2 stores zeros there) and `linear_1` (output projection).
fn self_attention(
    g: &mut GraphBuilder,
    ct2: &Ct2Model,
    dims: &WhisperDims,
    scope: &str,
    var: &str,
    x: &str,
) -> Result<String, Ct2Error> {
    let d = dims.d_model;
    let heads = dims.n_heads as i64;
    let head_dim = (d / dims.n_heads) as i64;
    let fused = format!("{var}/linear_0");
    let q = linear_rows(
        g,
        ct2,
        &format!("{scope}/q_proj"),
        &fused,
        x,
        d,
        3 * d,
        0..d,
        true,
    )?;
    let k = linear_rows(
        g,
        ct2,
        &format!("{scope}/k_proj"),
        &fused,
        x,
        d,
        3 * d,
        d..2 * d,
        false,
    )?;
    let v = linear_rows(
        g,
        ct2,
        &format!("{scope}/v_proj"),
        &fused,
        x,
        d,
        3 * d,
        2 * d..3 * d,
        true,
    )?;
    let split = g.ints(&[0, -1, heads, head_dim]);
    let scale = g.scalar((head_dim as f32).powf(-0.5));
    let q = g.node(scope, "Mul", &[&q, &scale], &[]);
    // [batch, time, d] -> [batch, heads, time, head_dim] (K: [batch, heads, head_dim, time]).
    let mut per_head = |x: &str, perm: [i64; 4]| {
        let x = g.node(scope, "Reshape", &[x, &split], &[]);
        g.node(
            scope,
            "Transpose",
            &[&x],
            &[("perm", Attr::Ints(perm.to_vec()))],
        )
    };
    let q = per_head(&q, [0, 2, 1, 3]);
    let k = per_head(&k, [0, 2, 3, 1]);
    let v = per_head(&v, [0, 2, 1, 3]);
    let scores = g.node(scope, "MatMul", &[&q, &k], &[]);
    let probs = g.node(scope, "Softmax", &[&scores], &[("axis", Attr::Int(-1))]);
    let o = g.node(scope, "MatMul", &[&probs, &v], &[]);
    let o = g.node(
        scope,
        "Transpose",
        &[&o],
        &[("perm", Attr::Ints(vec![0, 2, 1, 3]))],
    );
    let merge = g.ints(&[0, -1, d as i64]);
    let o = g.node(scope, "Reshape", &[&o, &merge], &[]);
    linear(
        g,
        ct2,
        &format!("{scope}/out_proj"),
        &format!("{var}/linear_1"),
        &o,
        d,
        d,
        true,
    )
}
