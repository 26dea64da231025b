//! Hugging Face Whisper checkpoints (`config.json`, `model.safetensors` or its shards with
//! `model.safetensors.index.json`, float32, float16 or bfloat16) converted to the same ONNX
//! layout as CTranslate2 checkpoints, without Python.
//!
//! The tensors are renamed to CTranslate2's Whisper specification, which the exporter reads:
//! `model.encoder.layers.{i}.self_attn.{q,k,v}_proj` fused into
//! `encoder/layer_{i}/self_attention/linear_0` (the key projection has no bias: zeros, as
//! CTranslate2's converter writes), the decoder's cross-attention keys and values into
//! `attention/linear_1`, LayerNorm `weight`/`bias` into `gamma`/`beta`, and so on (the mapping
//! of CTranslate2's `transformers` converter, `WhisperLoader`). The generation settings come
//! from `generation_config.json` (suppressed tokens, alignment heads, language ids).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use serde_json::json;

use super::convert::{ConvertError, Converted, convert_model};
use super::ct2::{Ct2Dtype, Ct2Model, Ct2Variable};

type Result<T> = std::result::Result<T, ConvertError>;

/// A JSON file of the checkpoint.
fn read_json(path: &Path) -> Result<serde_json::Value> {
    let bytes =
        std::fs::read(path).map_err(|e| ConvertError::input(path, format!("cannot read: {e}")))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ConvertError::input(path, format!("not valid JSON ({e})")))
}

/// The safetensors files of the checkpoint in `dir`: the shards its index names, else
/// `model.safetensors`.
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let value = read_json(&index)?;
        let map = value["weight_map"].as_object().ok_or_else(|| {
            ConvertError::input(&index, "no weight_map naming the shard of each tensor")
        })?;
        let mut files: Vec<PathBuf> = map
            .values()
            .filter_map(|v| v.as_str())
            .map(|f| dir.join(f))
            .collect();
        files.sort();
        files.dedup();
        if files.is_empty() {
            return Err(ConvertError::input(&index, "it lists no shard"));
        }
        return Ok(files);
    }
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    Err(ConvertError::input(
        dir,
        "no model.safetensors and no model.safetensors.index.json; a Hugging Face checkpoint \
         directory holds one of them (a PyTorch-only pytorch_model.bin must be saved again \
         with safe_serialization=True)",
    ))
}

/// Every tensor of `files`, by name.
fn read_tensors(files: &[PathBuf]) -> Result<HashMap<String, Ct2Variable>> {
    let mut tensors = HashMap::new();
    for file in files {
        let bytes = std::fs::read(file)
            .map_err(|e| ConvertError::input(file, format!("cannot read: {e}")))?;
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| ConvertError::input(file, format!("not a safetensors file ({e})")))?;
        for (name, view) in st.tensors() {
            let dtype = match view.dtype() {
                Dtype::F32 => Ct2Dtype::F32,
                Dtype::F16 => Ct2Dtype::F16,
                Dtype::BF16 => Ct2Dtype::Bf16,
                other => {
                    return Err(ConvertError::input(
                        file,
                        format!(
                            "tensor {name} is {other:?}; the converter takes float32, float16 \
                             and bfloat16 weights"
                        ),
                    ));
                }
            };
            tensors.insert(
                name,
                Ct2Variable {
                    shape: view.shape().to_vec(),
                    dtype,
                    bytes: view.data().to_vec(),
                },
            );
        }
    }
    Ok(tensors)
}

fn f32_variable(shape: Vec<usize>, values: &[f32]) -> Ct2Variable {
    Ct2Variable {
        shape,
        dtype: Ct2Dtype::F32,
        bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

fn scalar_i16(value: usize) -> Ct2Variable {
    Ct2Variable {
        shape: vec![1],
        dtype: Ct2Dtype::I16,
        bytes: (value as i16).to_le_bytes().to_vec(),
    }
}

/// The tensors of a Hugging Face Whisper, renamed and fused into CTranslate2's names.
struct Renamer {
    tensors: HashMap<String, Ct2Variable>,
    prefix: &'static str,
    out: HashMap<String, Ct2Variable>,
    path: PathBuf,
}

impl Renamer {
    fn take(&mut self, name: &str) -> Result<Ct2Variable> {
        let full = format!("{}{name}", self.prefix);
        self.tensors.remove(&full).ok_or_else(|| {
            ConvertError::input(
                &self.path,
                format!("the checkpoint has no tensor {full}; is it a Whisper checkpoint?"),
            )
        })
    }

    fn put(&mut self, name: String, var: Ct2Variable) {
        self.out.insert(name, var);
    }

    fn linear(&mut self, from: &str, to: &str) -> Result<()> {
        let weight = self.take(&format!("{from}.weight"))?;
        let bias = self.take(&format!("{from}.bias"))?;
        self.put(format!("{to}/weight"), weight);
        self.put(format!("{to}/bias"), bias);
        Ok(())
    }

    fn norm(&mut self, from: &str, to: &str) -> Result<()> {
        let gamma = self.take(&format!("{from}.weight"))?;
        let beta = self.take(&format!("{from}.bias"))?;
        self.put(format!("{to}/gamma"), gamma);
        self.put(format!("{to}/beta"), beta);
        Ok(())
    }

    /// A layer's self-attention block: its LayerNorm, Q, K and V fused (K without a bias),
    /// the output projection.
    fn self_attention(&mut self, from: &str, to: &str) -> Result<()> {
        self.norm(
            &format!("{from}.self_attn_layer_norm"),
            &format!("{to}/self_attention/layer_norm"),
        )?;
        self.fused(
            &[
                (&format!("{from}.self_attn.q_proj"), true),
                (&format!("{from}.self_attn.k_proj"), false),
                (&format!("{from}.self_attn.v_proj"), true),
            ],
            &format!("{to}/self_attention/linear_0"),
        )?;
        self.linear(
            &format!("{from}.self_attn.out_proj"),
            &format!("{to}/self_attention/linear_1"),
        )
    }

    /// A layer's feed-forward block: its LayerNorm and two linear layers.
    fn ffn(&mut self, from: &str, to: &str) -> Result<()> {
        self.norm(
            &format!("{from}.final_layer_norm"),
            &format!("{to}/ffn/layer_norm"),
        )?;
        self.linear(&format!("{from}.fc1"), &format!("{to}/ffn/linear_0"))?;
        self.linear(&format!("{from}.fc2"), &format!("{to}/ffn/linear_1"))
    }

    /// The projections `parts` (each `[d, d_in]`, a missing bias read as zeros) stacked into
    /// one `[parts * d, d_in]` linear layer `to`.
    fn fused(&mut self, parts: &[(&str, bool)], to: &str) -> Result<()> {
        let (mut weight, mut bias, mut rows, mut cols) = (Vec::new(), Vec::new(), 0, 0);
        for &(from, has_bias) in parts {
            let w = self.take(&format!("{from}.weight"))?;
            let [r, c] = w.shape[..] else {
                return Err(ConvertError::input(
                    &self.path,
                    format!(
                        "{from}.weight has shape {:?}, a linear layer's is 2-d",
                        w.shape
                    ),
                ));
            };
            if cols != 0 && c != cols {
                return Err(ConvertError::input(
                    &self.path,
                    format!("{from}.weight has {c} columns, the other projections {cols}"),
                ));
            }
            cols = c;
            rows += r;
            weight.extend(w.to_f32());
            if has_bias {
                bias.extend(self.take(&format!("{from}.bias"))?.to_f32());
            } else {
                bias.extend(std::iter::repeat_n(0.0, r));
            }
        }
        self.put(
            format!("{to}/weight"),
            f32_variable(vec![rows, cols], &weight),
        );
        self.put(format!("{to}/bias"), f32_variable(vec![rows], &bias));
        Ok(())
    }
}

/// `config[key]` as a positive count.
fn count(config: &serde_json::Value, key: &str, path: &Path) -> Result<usize> {
    config[key]
        .as_u64()
        .filter(|&v| v > 0)
        .map(|v| v as usize)
        .ok_or_else(|| {
            ConvertError::input(path, format!("{key} is missing or not a positive integer"))
        })
}

/// The CTranslate2 `config.json` fields the exporter reads, from Hugging Face's
/// `generation_config.json` (when there is one).
fn generation_settings(dir: &Path) -> Result<serde_json::Value> {
    let path = dir.join("generation_config.json");
    if !path.is_file() {
        return Ok(json!({}));
    }
    let g = read_json(&path)?;
    let mut out = json!({});
    for (from, to) in [
        ("suppress_tokens", "suppress_ids"),
        ("begin_suppress_tokens", "suppress_ids_begin"),
        ("alignment_heads", "alignment_heads"),
    ] {
        if let Some(v) = g.get(from).filter(|v| !v.is_null()) {
            out[to] = v.clone();
        }
    }
    if let Some(langs) = g.get("lang_to_id").and_then(|v| v.as_object()) {
        let mut ids: Vec<u64> = langs.values().filter_map(|v| v.as_u64()).collect();
        ids.sort_unstable();
        out["lang_ids"] = json!(ids);
    }
    Ok(out)
}

/// Converts the Hugging Face Whisper checkpoint in `src` into the optimum-layout directory
/// `out` (see [`super::convert::convert_ct2`], which writes the same files from a
/// CTranslate2 checkpoint). Nothing is left at `out` when it fails.
pub fn convert_hf(src: &Path, out: &Path) -> Result<Converted> {
    if out.exists() {
        return Err(ConvertError::OutputExists(out.to_path_buf()));
    }
    let config_path = src.join("config.json");
    if !config_path.is_file() {
        return Err(ConvertError::input(
            src,
            "no config.json: a Hugging Face checkpoint directory holds one",
        ));
    }
    let config = read_json(&config_path)?;
    if config["model_type"].as_str() != Some("whisper") {
        return Err(ConvertError::input(
            &config_path,
            format!("model_type is {}, not whisper", config["model_type"]),
        ));
    }
    let encoder_layers = count(&config, "encoder_layers", &config_path)?;
    let decoder_layers = count(&config, "decoder_layers", &config_path)?;
    let encoder_heads = count(&config, "encoder_attention_heads", &config_path)?;
    let decoder_heads = count(&config, "decoder_attention_heads", &config_path)?;
    if config["scale_embedding"].as_bool() == Some(true) {
        return Err(ConvertError::input(
            &config_path,
            "scale_embedding is true, which no Whisper checkpoint uses and the exporter does \
             not implement",
        ));
    }
    let tensors = read_tensors(&weight_files(src)?)?;
    let prefix = if tensors.keys().any(|k| k.starts_with("model.encoder.")) {
        "model."
    } else {
        ""
    };
    let mut r = Renamer {
        tensors,
        prefix,
        out: HashMap::new(),
        path: src.to_path_buf(),
    };
    for conv in ["conv1", "conv2"] {
        r.linear(&format!("encoder.{conv}"), &format!("encoder/{conv}"))?;
    }
    let positions = r.take("encoder.embed_positions.weight")?;
    r.put("encoder/position_encodings/encodings".into(), positions);
    for i in 0..encoder_layers {
        let (from, to) = (format!("encoder.layers.{i}"), format!("encoder/layer_{i}"));
        r.self_attention(&from, &to)?;
        r.ffn(&from, &to)?;
    }
    r.norm("encoder.layer_norm", "encoder/layer_norm")?;
    r.put("encoder/num_heads".into(), scalar_i16(encoder_heads));

    let embeddings = r.take("decoder.embed_tokens.weight")?;
    r.put("decoder/embeddings/weight".into(), embeddings);
    let positions = r.take("decoder.embed_positions.weight")?;
    r.put("decoder/position_encodings/encodings".into(), positions);
    for i in 0..decoder_layers {
        let (from, to) = (format!("decoder.layers.{i}"), format!("decoder/layer_{i}"));
        r.self_attention(&from, &to)?;
        r.norm(
            &format!("{from}.encoder_attn_layer_norm"),
            &format!("{to}/attention/layer_norm"),
        )?;
        r.linear(
            &format!("{from}.encoder_attn.q_proj"),
            &format!("{to}/attention/linear_0"),
        )?;
        r.fused(
            &[
                (&format!("{from}.encoder_attn.k_proj"), false),
                (&format!("{from}.encoder_attn.v_proj"), true),
            ],
            &format!("{to}/attention/linear_1"),
        )?;
        r.linear(
            &format!("{from}.encoder_attn.out_proj"),
            &format!("{to}/attention/linear_2"),
        )?;
        r.ffn(&from, &to)?;
    }
    r.norm("decoder.layer_norm", "decoder/layer_norm")?;
    r.put("decoder/num_heads".into(), scalar_i16(decoder_heads));

    let model = Ct2Model::from_variables(src, "WhisperSpec".into(), r.out);
    convert_model(
        &model,
        src,
        &generation_settings(src)?,
        out,
        format!("Hugging Face safetensors in {}", src.display()),
    )
}
