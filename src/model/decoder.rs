//! A Whisper decoder in tract, on the CPU: the graphs of one model, planned once, and a
//! session per window that holds the cross-attention keys and values and the self-attention
//! cache of each row.
//!
//! Three layouts of graphs are read, told apart by their inputs:
//! - this project's export (`models convert`): `cross_kv_model.onnx` (encoder features to
//!   every layer's cross-attention keys and values, once per window) and
//!   `decoder_with_past_model.onnx`, which also takes an empty cache for the first tokens;
//! - optimum's split export: `decoder_model.onnx` (no cache in, the cross-attention keys and
//!   values out) for the first tokens, then `decoder_with_past_model.onnx`;
//! - optimum's merged export, `decoder_model_merged.onnx`: one `If` on `use_cache_branch`
//!   whose two branches are the two graphs above; the branches are split into two models
//!   when the file is read (tract cannot type an `If` whose branches give different shapes).
//!
//! A directory with only `decoder_model.onnx` (exported without `-with-past`) runs too, each
//! step recomputing the whole sequence.
//!
//! Every graph is planned once with symbolic batch, sequence and cache lengths.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::encoder::{f16_to_f32, has_f16};
use prost::Message;
use tract_linalg::multithread::Executor;
use tract_onnx::pb;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::optim::Optimizer;
use tract_onnx::tract_core::runtime::RunOptions;
use tract_onnx::tract_hir::infer::Factoid;

/// Why a decoder cannot be loaded or run. Messages name the file and, when there is one, the
/// fix.
#[derive(Debug, thiserror::Error)]
pub enum DecoderError {
    /// The model directory has no decoder graph.
    #[error(
        "{dir}: no decoder found (looked for decoder_with_past_model.onnx with cross_kv_model.onnx \
         or decoder_model.onnx, and decoder_model_merged.onnx, also under onnx/): transcription \
         needs the decoder; export it with `optimum-cli export onnx --model openai/whisper-... \
         --task automatic-speech-recognition-with-past DIR`, or convert a CTranslate2 checkpoint \
         with `amanuensis models convert`"
    )]
    NotFound {
        /// The directory searched.
        dir: PathBuf,
    },
    /// A graph does not have the inputs or outputs of a Whisper decoder.
    #[error("{path}: not a Whisper decoder: {detail}")]
    NotADecoder {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The file is not ONNX, or tract failed on it.
    #[error("{path}: {stage}: {detail}")]
    Tract {
        /// The file.
        path: PathBuf,
        /// What was being done.
        stage: &'static str,
        /// tract's error chain.
        detail: String,
    },
}

/// Where the decoder graphs of a model directory are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecoderFiles {
    /// This project's export: cross-attention graph and the cached decoder.
    CrossKv {
        /// `cross_kv_model.onnx`.
        cross: PathBuf,
        /// `decoder_with_past_model.onnx`.
        step: PathBuf,
    },
    /// optimum's two graphs.
    Split {
        /// `decoder_model.onnx`: the first tokens, without a cache.
        first: PathBuf,
        /// `decoder_with_past_model.onnx`.
        step: PathBuf,
    },
    /// optimum's merged graph.
    Merged(PathBuf),
    /// A decoder without a cache (`decoder_model.onnx` alone).
    NoCache(PathBuf),
}

impl DecoderFiles {
    /// Finds the decoder graphs in `dir` or `dir/onnx`, float32 files first.
    pub fn locate(dir: &Path) -> Result<DecoderFiles, DecoderError> {
        let dirs = [dir.to_path_buf(), dir.join("onnx")];
        let find = |names: &[&str]| {
            names
                .iter()
                .flat_map(|n| dirs.iter().map(move |d| d.join(n)))
                .find(|p| p.is_file())
        };
        let step = find(&[
            "decoder_with_past_model.onnx",
            "decoder_with_past_model_fp16.onnx",
        ]);
        let first = find(&["decoder_model.onnx", "decoder_model_fp16.onnx"]);
        let cross = find(&["cross_kv_model.onnx"]);
        let merged = find(&[
            "decoder_model_merged.onnx",
            "decoder_model_merged_fp16.onnx",
        ]);
        Ok(match (step, cross, first, merged) {
            (Some(step), Some(cross), _, _) => DecoderFiles::CrossKv { cross, step },
            (Some(step), None, Some(first), _) => DecoderFiles::Split { first, step },
            (_, _, _, Some(merged)) => DecoderFiles::Merged(merged),
            (None, _, Some(first), None) => DecoderFiles::NoCache(first),
            _ => {
                return Err(DecoderError::NotFound {
                    dir: dir.to_path_buf(),
                });
            }
        })
    }

    /// The file named in messages about the decoder.
    pub fn main_file(&self) -> &Path {
        match self {
            DecoderFiles::CrossKv { step, .. } | DecoderFiles::Split { step, .. } => step,
            DecoderFiles::Merged(p) | DecoderFiles::NoCache(p) => p,
        }
    }
}

/// The shapes of a decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct DecoderShape {
    /// Logits per position: the vocabulary with its special and timestamp tokens.
    pub n_vocab: usize,
    /// Decoder layers.
    pub n_layers: usize,
    /// Attention heads.
    pub n_heads: usize,
    /// Width of the residual stream.
    pub d_model: usize,
    /// Encoder positions the cross-attention reads (1500).
    pub n_audio_ctx: usize,
}

/// What feeds one input of a graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Feed {
    Ids,
    Hidden,
    /// A cache tensor: layer, cross-attention (else self-attention), value (else key).
    Past(usize, bool, bool),
}

/// One planned graph and how its inputs and outputs map to the decoder's tensors.
struct Graph {
    path: PathBuf,
    plan: Arc<TypedRunnableModel>,
    feeds: Vec<Feed>,
    ids_type: DatumType,
    logits: Option<usize>,
    /// Output index of `present.{layer}.{decoder|encoder}.{key|value}`, by `Feed::Past`.
    presents: Vec<(Feed, usize)>,
}

impl Graph {
    fn present(&self, layer: usize, cross: bool, value: bool) -> Option<usize> {
        self.presents
            .iter()
            .find(|(f, _)| *f == Feed::Past(layer, cross, value))
            .map(|(_, ix)| *ix)
    }

    fn run(&self, inputs: TVec<TValue>) -> Result<TVec<TValue>, DecoderError> {
        self.plan.run(inputs).map_err(|e| DecoderError::Tract {
            path: self.path.clone(),
            stage: "running",
            detail: format!("{e:#}"),
        })
    }
}

enum Kind {
    CrossKv { cross: Graph, step: Graph },
    Split { first: Graph, step: Graph },
    NoCache { first: Graph },
}

/// A Whisper decoder ready to run.
pub struct DecoderModel {
    files: DecoderFiles,
    shape: DecoderShape,
    kind: Kind,
}

impl std::fmt::Debug for DecoderModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecoderModel")
            .field("files", &self.files)
            .field("shape", &self.shape)
            .finish_non_exhaustive()
    }
}

/// Which way an ONNX `If`'s branches are taken apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Branch {
    Then,
    Else,
}

/// The model of one branch of the `If` at the top of a merged decoder: the main graph's other
/// nodes and initializers with the branch's nodes inlined, its outputs renamed to the `If`'s,
/// and the inputs the branch does not read (the condition among them) removed.
fn split_merged(proto: &pb::ModelProto, branch: Branch) -> Result<pb::ModelProto, String> {
    let graph = proto.graph.as_ref().ok_or("no graph")?;
    let (ix, node) = graph
        .node
        .iter()
        .enumerate()
        .find(|(_, n)| n.op_type == "If")
        .ok_or("no If node at the top of the merged graph")?;
    let name = match branch {
        Branch::Then => "then_branch",
        Branch::Else => "else_branch",
    };
    let body = node
        .attribute
        .iter()
        .find(|a| a.name == name)
        .and_then(|a| a.g.as_ref())
        .ok_or_else(|| format!("the If has no {name}"))?;
    if body.output.len() != node.output.len() {
        return Err(format!(
            "the If's {name} gives {} outputs for {}",
            body.output.len(),
            node.output.len()
        ));
    }
    let mut nodes: Vec<pb::NodeProto> = graph.node[..ix].to_vec();
    nodes.extend(body.node.iter().cloned());
    for (inner, outer) in body.output.iter().zip(&node.output) {
        if inner.name != *outer {
            nodes.push(pb::NodeProto {
                input: vec![inner.name.clone()],
                output: vec![outer.clone()],
                name: format!("{outer}_from_{name}"),
                op_type: "Identity".into(),
                ..Default::default()
            });
        }
    }
    nodes.extend(graph.node[ix + 1..].iter().cloned());
    let used: std::collections::HashSet<&str> = nodes
        .iter()
        .flat_map(|n| n.input.iter().map(String::as_str))
        .collect();
    let mut initializer: Vec<pb::TensorProto> = graph
        .initializer
        .iter()
        .filter(|t| used.contains(t.name.as_str()))
        .cloned()
        .collect();
    initializer.extend(body.initializer.iter().cloned());
    let input = graph
        .input
        .iter()
        .filter(|i| used.contains(i.name.as_str()))
        .cloned()
        .collect();
    let mut split = proto.clone();
    split.graph = Some(pb::GraphProto {
        node: nodes,
        initializer,
        input,
        ..graph.clone()
    });
    Ok(split)
}

/// The declutter passes of tract without `FoldUniformMask`, and without `PushSliceUp` when
/// `keep_slices`.
///
/// `FoldUniformMask`, in tract 0.23, folds the causal mask of optimum's decoders into a
/// constant of the shape it had for two tokens, so that any other prompt length fails to
/// broadcast ("Can not broadcast 3 against 2"); the mask is cheap, so it is left as it is.
/// `PushSliceUp` moves the last-position slice before the logits up into the last layer's
/// attention, where the fused attention would no longer be recognised: the attention is fused
/// first, then the slice pushed up.
fn declutter(model: &mut TypedModel, keep_slices: bool) -> TractResult<()> {
    let mut optimizer = Optimizer::declutter();
    optimizer.passes.retain(|p| {
        let name = format!("{p:?}");
        let pushes_slices = keep_slices && name.contains("PushSliceUp");
        !(name.contains("FoldUniformMask") || pushes_slices)
    });
    optimizer.session().optimize(model)
}

/// Gives every matrix product its own copy of a constant it shares with other nodes (the same
/// tensor, not a copy of its data).
///
/// tract packs a constant operand once, at planning, only when the product is the constant's
/// only consumer; Whisper ties its output projection to the token embedding, which a Gather
/// also reads, so the 51865 x d_model matrix would be packed again at every token (30 ms of a
/// 50 ms step for tiny).
fn unshare_product_constants(model: &mut TypedModel) -> TractResult<()> {
    use tract_onnx::tract_core::ops::einsum::EinSum;
    use tract_onnx::tract_core::ops::konst::Const;
    let shared: Vec<(usize, Arc<Tensor>)> = model
        .nodes()
        .iter()
        .filter(|n| n.outputs.len() == 1 && n.outputs[0].successors.len() > 1)
        .filter_map(|n| {
            let konst = n.op_as::<Const>()?;
            Some((n.id, konst.val().clone()))
        })
        .collect();
    for (id, tensor) in shared {
        let products: Vec<InletId> = model.nodes()[id].outputs[0]
            .successors
            .iter()
            .copied()
            .filter(|inlet| model.nodes()[inlet.node].op_is::<EinSum>())
            .collect();
        for (i, inlet) in products.into_iter().enumerate() {
            let name = format!("{}.for_product_{i}", model.nodes()[id].name);
            // A node of its own: `add_const` and `wire_node` would hand back the shared one.
            let fact = model.nodes()[id].outputs[0].fact.clone();
            let konst = model.add_node(name, Const::new(tensor.clone())?, tvec![fact])?;
            model.add_edge(OutletId::new(konst, 0), inlet)?;
        }
    }
    Ok(())
}

/// Parses the name of a cache tensor: `past_key_values.{i}.{decoder|encoder}.{key|value}` or
/// `present.{i}.{decoder|encoder}.{key|value}`.
fn cache_feed(name: &str) -> Option<Feed> {
    let rest = name
        .strip_prefix("past_key_values.")
        .or_else(|| name.strip_prefix("present."))?;
    let mut parts = rest.split('.');
    let layer = parts.next()?.parse().ok()?;
    let cross = match parts.next()? {
        "decoder" => false,
        "encoder" => true,
        _ => return None,
    };
    let value = match parts.next()? {
        "key" => false,
        "value" => true,
        _ => return None,
    };
    parts
        .next()
        .is_none()
        .then_some(Feed::Past(layer, cross, value))
}

/// What the caller knows of the model before its decoder is read.
#[derive(Debug, Clone, Copy)]
pub struct DecoderHints {
    /// Width of the encoder's features.
    pub d_model: usize,
    /// Encoder positions (1500).
    pub n_audio_ctx: usize,
    /// Decoder attention heads, when `config.json` says.
    pub n_heads: Option<usize>,
}

fn load_graph(
    path: &Path,
    split: Option<Branch>,
    hints: &DecoderHints,
    executor: &Executor,
) -> Result<Graph, DecoderError> {
    let tract = |stage: &'static str, e: anyhow::Error| DecoderError::Tract {
        path: path.to_path_buf(),
        stage,
        detail: format!("{e:#}"),
    };
    let not_decoder = |detail: String| DecoderError::NotADecoder {
        path: path.to_path_buf(),
        detail,
    };
    let bytes = std::fs::read(path).map_err(|e| tract("reading", e.into()))?;
    if bytes.is_empty() {
        return Err(tract("reading", anyhow::anyhow!("the file is empty")));
    }
    let proto = pb::ModelProto::decode(&bytes[..]).map_err(|e| {
        tract(
            "reading",
            anyhow::anyhow!("not an ONNX model ({e}); is the file complete?"),
        )
    })?;
    drop(bytes);
    let proto = match split {
        Some(branch) => split_merged(&proto, branch).map_err(not_decoder)?,
        None => proto,
    };
    let onnx = tract_onnx::onnx();
    let dir = path.parent().and_then(Path::to_str);
    let mut model = onnx
        .parse(&proto, dir)
        .map_err(|e| tract("reading the graph", e))?
        .model;
    drop(proto);
    super::encoder::drop_symbolic_annotations(&mut model)
        .map_err(|e| tract("reading the graph", e))?;

    let batch = model.symbols.sym("batch");
    let seq = model.symbols.sym("seq");
    let past = model.symbols.sym("past");
    let inputs = model
        .input_outlets()
        .map_err(|e| tract("reading the inputs", e))?
        .to_vec();
    let mut feeds = Vec::new();
    let mut ids_type = i64::datum_type();
    let mut float_type = f32::datum_type();
    for (ix, outlet) in inputs.iter().enumerate() {
        let name = model.node(outlet.node).name.clone();
        let declared = model
            .outlet_fact(*outlet)
            .ok()
            .and_then(|f| f.datum_type.concretize());
        let (feed, fact) = if name == "input_ids" {
            ids_type = declared.filter(|d| d.is_integer()).unwrap_or(ids_type);
            (
                Feed::Ids,
                InferenceFact::dt_shape(ids_type, tvec![batch.to_dim(), seq.to_dim()]),
            )
        } else if name == "encoder_hidden_states" {
            float_type = declared.unwrap_or(float_type);
            (
                Feed::Hidden,
                InferenceFact::dt_shape(
                    float_type,
                    tvec![
                        batch.to_dim(),
                        hints.n_audio_ctx.to_dim(),
                        hints.d_model.to_dim()
                    ],
                ),
            )
        } else if let Some(feed @ Feed::Past(_, cross, _)) = cache_feed(&name) {
            float_type = declared.unwrap_or(float_type);
            let len = if cross {
                hints.n_audio_ctx.to_dim()
            } else {
                past.to_dim()
            };
            let fact = model.outlet_fact(*outlet).cloned().unwrap_or_default();
            let mut shape: TVec<TDim> = tvec![batch.to_dim(), TDim::from(0), len, TDim::from(0)];
            for axis in [1, 3] {
                shape[axis] = fact
                    .shape
                    .dims()
                    .nth(axis)
                    .and_then(|d| d.concretize())
                    .filter(|d| d.to_i64().is_ok())
                    .ok_or_else(|| {
                        not_decoder(format!(
                            "input {name} does not declare its heads and head width"
                        ))
                    })?;
            }
            (feed, InferenceFact::dt_shape(float_type, shape))
        } else {
            return Err(not_decoder(format!(
                "unexpected input {name} (a Whisper decoder takes input_ids, \
                 encoder_hidden_states and past_key_values.*)"
            )));
        };
        model
            .set_input_fact(ix, fact)
            .map_err(|e| tract("setting the input shapes", e))?;
        feeds.push(feed);
    }
    let outputs = model
        .output_outlets()
        .map_err(|e| tract("reading the outputs", e))?
        .to_vec();
    let mut logits = None;
    let mut presents = Vec::new();
    for (ix, outlet) in outputs.iter().enumerate() {
        let name = model
            .outlet_label(*outlet)
            .map(str::to_string)
            .unwrap_or_else(|| model.node(outlet.node).name.clone());
        if name == "logits" {
            logits = Some(ix);
        } else if let Some(feed) = cache_feed(&name) {
            presents.push((feed, ix));
        }
    }
    let mut typed = model
        .into_typed()
        .map_err(|e| tract("analysing the graph", e))?;
    if has_f16(&typed) {
        f16_to_f32(&mut typed).map_err(|e| tract("converting float16 to float32", e))?;
    }
    declutter(&mut typed, true).map_err(|e| tract("decluttering", e))?;
    // A product's constant of its own folds with its layout changes, before the rules read it.
    unshare_product_constants(&mut typed).map_err(|e| tract("decluttering", e))?;
    declutter(&mut typed, true).map_err(|e| tract("decluttering", e))?;
    crate::rewrite::rewrite(
        &mut typed,
        &crate::rewrite::RewriteContext::new(None),
        &[crate::rewrite::Stage::Cpu, crate::rewrite::Stage::Decoder],
    )
    .map_err(|e| tract("fusing for the CPU", anyhow::anyhow!(e)))?;
    declutter(&mut typed, false).map_err(|e| tract("decluttering", e))?;
    unshare_product_constants(&mut typed).map_err(|e| tract("decluttering", e))?;

    typed.optimize().map_err(|e| tract("optimising", e))?;
    let run_options = RunOptions {
        executor: Some(executor.clone()),
        ..Default::default()
    };
    let plan =
        TypedSimplePlan::new_with_options(typed, &run_options).map_err(|e| tract("planning", e))?;
    Ok(Graph {
        path: path.to_path_buf(),
        plan,
        feeds,
        ids_type,
        logits,
        presents,
    })
}

impl DecoderModel {
    /// Loads the decoder graphs `files` of a model whose encoder gives `[n_audio_ctx, d_model]`
    /// features; tract's matrix products run on `threads` threads.
    pub fn load(
        files: DecoderFiles,
        hints: DecoderHints,
        threads: usize,
    ) -> Result<DecoderModel, DecoderError> {
        let executor = if threads > 1 {
            Executor::multithread(threads)
        } else {
            Executor::SingleThread
        };
        let kind = match &files {
            DecoderFiles::CrossKv { cross, step } => Kind::CrossKv {
                cross: load_graph(cross, None, &hints, &executor)?,
                step: load_graph(step, None, &hints, &executor)?,
            },
            DecoderFiles::Split { first, step } => Kind::Split {
                first: load_graph(first, None, &hints, &executor)?,
                step: load_graph(step, None, &hints, &executor)?,
            },
            DecoderFiles::Merged(path) => Kind::Split {
                first: load_graph(path, Some(Branch::Else), &hints, &executor)?,
                step: load_graph(path, Some(Branch::Then), &hints, &executor)?,
            },
            DecoderFiles::NoCache(path) => Kind::NoCache {
                first: load_graph(path, None, &hints, &executor)?,
            },
        };
        let shape = check_kind(&kind, &hints)?;
        Ok(DecoderModel { files, shape, kind })
    }

    /// The files read.
    pub fn files(&self) -> &DecoderFiles {
        &self.files
    }

    /// The decoder's shapes.
    pub fn shape(&self) -> &DecoderShape {
        &self.shape
    }

    /// A session over one window's encoder features (`[n_audio_ctx, d_model]`), with one row
    /// and nothing decoded yet.
    pub fn session(&self, features: &[f32]) -> Result<DecoderSession<'_>, DecoderError> {
        let DecoderShape {
            n_audio_ctx,
            d_model,
            n_layers,
            ..
        } = self.shape;
        let hidden = Tensor::from_shape(&[1, n_audio_ctx, d_model], features).map_err(|e| {
            DecoderError::Tract {
                path: self.files.main_file().to_path_buf(),
                stage: "building the input",
                detail: format!("{e:#}"),
            }
        })?;
        let cross = match &self.kind {
            Kind::CrossKv { cross, .. } => {
                let out = cross.run(tvec![hidden.clone().into_tvalue()])?;
                let mut layers = Vec::with_capacity(n_layers);
                for layer in 0..n_layers {
                    let k = cross.present(layer, true, false).expect("checked at load");
                    let v = cross.present(layer, true, true).expect("checked at load");
                    layers.push([out[k].clone(), out[v].clone()]);
                }
                Some(layers)
            }
            _ => None,
        };
        Ok(DecoderSession {
            model: self,
            hidden: hidden.into_arc_tensor(),
            cross,
            past: None,
            history: vec![Vec::new()],
            rows: 1,
            forwards: 0,
        })
    }
}

/// Checks that the graphs give logits and the caches the session needs, and reads the shape.
fn check_kind(kind: &Kind, hints: &DecoderHints) -> Result<DecoderShape, DecoderError> {
    let (main, cache_graphs): (&Graph, Vec<(&Graph, bool, bool)>) = match kind {
        // (graph, must give self-attention presents, must give cross presents)
        Kind::CrossKv { cross, step } => (step, vec![(step, true, false), (cross, false, true)]),
        Kind::Split { first, step } => (step, vec![(step, true, false), (first, true, true)]),
        Kind::NoCache { first } => (first, vec![]),
    };
    let not_decoder = |g: &Graph, detail: String| DecoderError::NotADecoder {
        path: g.path.clone(),
        detail,
    };
    let step_like = [main]
        .into_iter()
        .chain(match kind {
            Kind::Split { first, .. } => Some(first),
            _ => None,
        })
        .collect::<Vec<_>>();
    for g in &step_like {
        if g.logits.is_none() || !g.feeds.contains(&Feed::Ids) {
            return Err(not_decoder(
                g,
                "it has no input_ids input or no logits output".into(),
            ));
        }
    }
    let n_layers = main
        .feeds
        .iter()
        .chain(main.presents.iter().map(|(f, _)| f))
        .filter_map(|f| match f {
            Feed::Past(l, _, _) => Some(l + 1),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    if n_layers == 0 && !matches!(kind, Kind::NoCache { .. }) {
        return Err(not_decoder(main, "it has no past_key_values inputs".into()));
    }
    for (g, needs_self, needs_cross) in &cache_graphs {
        for layer in 0..n_layers {
            for value in [false, true] {
                for (needed, cross) in [(*needs_self, false), (*needs_cross, true)] {
                    if needed && g.present(layer, cross, value).is_none() {
                        return Err(not_decoder(
                            g,
                            format!(
                                "output present.{layer}.{}.{} is missing",
                                if cross { "encoder" } else { "decoder" },
                                if value { "value" } else { "key" }
                            ),
                        ));
                    }
                }
            }
        }
    }
    let logits = main
        .plan
        .model()
        .output_fact(main.logits.unwrap())
        .map_err(|e| not_decoder(main, format!("cannot read the logits' shape: {e:#}")))?;
    let n_vocab = logits
        .shape
        .dims()
        .last()
        .and_then(|d| d.to_i64().ok())
        .ok_or_else(|| not_decoder(main, format!("logits of shape {:?}", logits.shape)))?
        as usize;
    let n_heads = main
        .plan
        .model()
        .input_outlets()
        .ok()
        .and_then(|inputs| {
            main.feeds
                .iter()
                .position(|f| matches!(f, Feed::Past(..)))
                .and_then(|ix| main.plan.model().outlet_fact(inputs[ix]).ok())
                .and_then(|f| f.shape[1].to_i64().ok())
        })
        .map(|h| h as usize)
        .or(hints.n_heads)
        .unwrap_or(hints.d_model / 64);
    Ok(DecoderShape {
        n_vocab,
        n_layers,
        n_heads,
        d_model: hints.d_model,
        n_audio_ctx: hints.n_audio_ctx,
    })
}

/// The rows `source` of `t` along its first axis, in that order.
fn gather_rows(t: &Tensor, source: &[usize]) -> TractResult<Tensor> {
    let rows = t.shape()[0];
    let mut shape: TVec<usize> = t.shape().into();
    shape[0] = source.len();
    let plain = t.try_as_plain_ram()?;
    let data = plain.as_slice::<f32>()?;
    let per_row = data.len().checked_div(rows).unwrap_or(0);
    let mut out = Vec::with_capacity(per_row * source.len());
    for &s in source {
        out.extend_from_slice(&data[s * per_row..(s + 1) * per_row]);
    }
    Tensor::from_shape(&shape, &out)
}

/// One window's decoding state: the cross-attention keys and values, and per row the
/// self-attention cache of the tokens decoded so far.
pub struct DecoderSession<'m> {
    model: &'m DecoderModel,
    hidden: Arc<Tensor>,
    cross: Option<Vec<[TValue; 2]>>,
    past: Option<Vec<[TValue; 2]>>,
    /// Every row's tokens so far (used by graphs without a cache).
    history: Vec<Vec<u32>>,
    rows: usize,
    forwards: usize,
}

impl DecoderSession<'_> {
    fn tract(&self, stage: &'static str, e: anyhow::Error) -> DecoderError {
        DecoderError::Tract {
            path: self.model.files.main_file().to_path_buf(),
            stage,
            detail: format!("{e:#}"),
        }
    }

    fn ids(&self, graph: &Graph, tokens: &[Vec<u32>]) -> Result<TValue, DecoderError> {
        let len = tokens[0].len();
        let flat: Vec<i64> = tokens.iter().flatten().map(|&t| t as i64).collect();
        let t = Tensor::from_shape(&[tokens.len(), len], &flat)
            .and_then(|t| t.cast_to_dt(graph.ids_type).map(|t| t.into_owned()))
            .map_err(|e| self.tract("building the input", e))?;
        Ok(t.into_tvalue())
    }

    fn hidden_rows(&self) -> Result<TValue, DecoderError> {
        if self.rows == 1 {
            return Ok(self.hidden.clone().into_tvalue());
        }
        gather_rows(&self.hidden, &vec![0; self.rows])
            .map(IntoTValue::into_tvalue)
            .map_err(|e| self.tract("building the input", e))
    }

    fn empty_cache(&self, graph: &Graph) -> Result<Vec<[TValue; 2]>, DecoderError> {
        let shape = self.model.shape;
        let inputs = graph
            .plan
            .model()
            .input_outlets()
            .map_err(|e| self.tract("reading", e))?;
        let head_dim = graph
            .feeds
            .iter()
            .position(|f| matches!(f, Feed::Past(_, false, _)))
            .and_then(|ix| graph.plan.model().outlet_fact(inputs[ix]).ok())
            .and_then(|f| f.shape[3].to_i64().ok())
            .unwrap_or(64) as usize;
        let empty = Tensor::zero::<f32>(&[self.rows, shape.n_heads, 0, head_dim])
            .map_err(|e| self.tract("building the input", e))?
            .into_tvalue();
        Ok((0..shape.n_layers)
            .map(|_| [empty.clone(), empty.clone()])
            .collect())
    }

    /// Logits of the last position of every row, from a `[rows, seq, n_vocab]` output.
    fn last_logits(&self, out: &TValue) -> Result<Vec<f32>, DecoderError> {
        let view = out
            .to_plain_array_view::<f32>()
            .map_err(|e| self.tract("reading the logits", e))?;
        let shape = view.shape().to_vec();
        let n_vocab = *shape.last().unwrap_or(&0);
        let seq = if shape.len() == 3 { shape[1] } else { 1 };
        let mut logits = Vec::with_capacity(self.rows * n_vocab);
        for row in 0..self.rows {
            let start = (row * seq + seq - 1) * n_vocab;
            logits.extend(view.iter().skip(start).take(n_vocab));
        }
        Ok(logits)
    }

    /// Like [`forward`](DecoderSession::forward) for this project's export, timing every node
    /// of the step: where one token's time goes, per op kind, slowest first.
    pub fn profile(&mut self, tokens: &[Vec<u32>]) -> Result<Vec<super::OpTime>, DecoderError> {
        use std::collections::HashMap;
        use std::time::{Duration, Instant};
        use tract_onnx::tract_core::plan::eval;
        let model = self.model;
        let Kind::CrossKv { step, .. } = &model.kind else {
            self.forward(tokens)?;
            return Ok(Vec::new());
        };
        let inputs = self.step_inputs(step, tokens)?;
        let mut state = step.plan.spawn().map_err(|e| self.tract("running", e))?;
        let mut times: HashMap<String, (usize, Duration)> = HashMap::new();
        let out = state
            .run_plan_with_eval(inputs, |ctx, op_state, node, inputs| {
                let t = Instant::now();
                let result = eval(ctx, op_state, node, inputs);
                let entry = times.entry(node.op().name().to_string()).or_default();
                entry.0 += 1;
                entry.1 += t.elapsed();
                result
            })
            .map_err(|e| self.tract("running", e))?;
        self.keep_presents(step, &out);
        let mut ops: Vec<super::OpTime> = times
            .into_iter()
            .map(|(op, (nodes, time))| super::OpTime { op, nodes, time })
            .collect();
        ops.sort_by_key(|t| std::cmp::Reverse(t.time));
        Ok(ops)
    }

    fn step_inputs(
        &mut self,
        graph: &Graph,
        tokens: &[Vec<u32>],
    ) -> Result<TVec<TValue>, DecoderError> {
        if self.past.is_none() {
            self.past = Some(self.empty_cache(graph)?);
        }
        let past = self.past.as_ref().expect("set above");
        let cross = self
            .cross
            .as_ref()
            .expect("the cross-attention cache is set");
        let mut inputs = TVec::new();
        for feed in &graph.feeds {
            inputs.push(match *feed {
                Feed::Ids => self.ids(graph, tokens)?,
                Feed::Hidden => self.hidden_rows()?,
                Feed::Past(layer, true, value) => cross[layer][value as usize].clone(),
                Feed::Past(layer, false, value) => past[layer][value as usize].clone(),
            });
        }
        Ok(inputs)
    }

    fn keep_presents(&mut self, graph: &Graph, out: &TVec<TValue>) {
        let n_layers = self.model.shape.n_layers;
        let mut next = Vec::with_capacity(n_layers);
        for layer in 0..n_layers {
            let k = graph.present(layer, false, false).expect("checked at load");
            let v = graph.present(layer, false, true).expect("checked at load");
            next.push([out[k].clone(), out[v].clone()]);
        }
        self.past = Some(next);
    }

    fn run_step(&mut self, graph: &Graph, tokens: &[Vec<u32>]) -> Result<Vec<f32>, DecoderError> {
        let inputs = self.step_inputs(graph, tokens)?;
        // The old cache is released before the step so that its presents do not double it.
        self.past = None;
        let out = graph.run(inputs)?;
        self.keep_presents(graph, &out);
        self.last_logits(&out[graph.logits.expect("checked at load")])
    }

    /// Runs `tokens` (one row each, all of one length) after what each row holds; returns
    /// the logits of each row's last position, `[rows * n_vocab]`.
    pub fn forward(&mut self, tokens: &[Vec<u32>]) -> Result<Vec<f32>, DecoderError> {
        assert_eq!(tokens.len(), self.rows, "one token row per session row");
        self.forwards += 1;
        let model = self.model;
        match &model.kind {
            Kind::CrossKv { step, .. } => self.run_step(step, tokens),
            Kind::Split { first, step } => {
                if self.past.is_some() {
                    return self.run_step(step, tokens);
                }
                let out = first.run(
                    first
                        .feeds
                        .iter()
                        .map(|f| match f {
                            Feed::Ids => self.ids(first, tokens),
                            _ => self.hidden_rows(),
                        })
                        .collect::<Result<_, _>>()?,
                )?;
                let n_layers = model.shape.n_layers;
                let (mut past, mut cross) = (Vec::new(), Vec::new());
                for layer in 0..n_layers {
                    let at = |c, v| first.present(layer, c, v).expect("checked at load");
                    past.push([out[at(false, false)].clone(), out[at(false, true)].clone()]);
                    cross.push([out[at(true, false)].clone(), out[at(true, true)].clone()]);
                }
                self.past = Some(past);
                self.cross = Some(cross);
                self.last_logits(&out[first.logits.expect("checked at load")])
            }
            Kind::NoCache { first } => {
                for (h, t) in self.history.iter_mut().zip(tokens) {
                    h.extend_from_slice(t);
                }
                let history = self.history.clone();
                let out = first.run(
                    first
                        .feeds
                        .iter()
                        .map(|f| match f {
                            Feed::Ids => self.ids(first, &history),
                            _ => self.hidden_rows(),
                        })
                        .collect::<Result<_, _>>()?,
                )?;
                self.last_logits(&out[first.logits.expect("checked at load")])
            }
        }
    }

    /// The forward passes run so far (a prompt counts one, as does each later token of all
    /// rows together), resets included.
    pub fn forwards(&self) -> usize {
        self.forwards
    }

    /// Forgets the decoded tokens, keeping the window's cross-attention keys and values when
    /// they came from their own graph: a fresh session for another decoding of the window.
    pub fn reset(&mut self) {
        self.past = None;
        if !matches!(self.model.kind, Kind::CrossKv { .. }) {
            self.cross = None;
        } else if let Some(cross) = &mut self.cross
            && self.rows != 1
        {
            for pair in cross.iter_mut() {
                for t in pair.iter_mut() {
                    if let Ok(row) = gather_rows(t, &[0]) {
                        *t = row.into_tvalue();
                    }
                }
            }
        }
        self.history = vec![Vec::new()];
        self.rows = 1;
    }

    /// Keeps row `source[i]` as row `i` of the caches (which may change the number of rows).
    pub fn reorder(&mut self, source: &[usize]) -> Result<(), DecoderError> {
        if source.iter().copied().eq(0..self.rows) {
            return Ok(());
        }
        let gather = |layers: &mut Vec<[TValue; 2]>| -> TractResult<()> {
            for pair in layers.iter_mut() {
                for t in pair.iter_mut() {
                    *t = gather_rows(t, source)?.into_tvalue();
                }
            }
            Ok(())
        };
        if let Some(past) = &mut self.past {
            gather(past).map_err(|e| self.tract("reordering the cache", e))?;
        }
        if source.len() != self.rows
            && let Some(cross) = &mut self.cross
        {
            gather(cross).map_err(|e| self.tract("reordering the cache", e))?;
        }
        self.history = source.iter().map(|&s| self.history[s].clone()).collect();
        self.rows = source.len();
        Ok(())
    }
}

impl crate::transcribe::Session for DecoderSession<'_> {
    fn forward(&mut self, tokens: &[Vec<u32>]) -> Result<Vec<f32>, DecoderError> {
        DecoderSession::forward(self, tokens)
    }

    fn expand(&mut self, n: usize) -> Result<(), DecoderError> {
        self.reorder(&vec![0; n])
    }

    fn reorder(&mut self, source: &[usize]) -> Result<(), DecoderError> {
        DecoderSession::reorder(self, source)
    }
}
