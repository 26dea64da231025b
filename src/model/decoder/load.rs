//! Reading one decoder graph: the ONNX file to a typed, optimised model whose inputs and
//! outputs are named by what they carry ([`Io`]), then its plan ([`Graph`]).

use std::path::{Path, PathBuf};

use amanuensis_kernels::low_precision::WeightPrecision;
use amanuensis_ops::CachedAttention;
use prost::Message;
use tract_linalg::multithread::Executor;
use tract_onnx::pb;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::runtime::RunOptions;
use tract_onnx::tract_hir::infer::Factoid;

use super::cache_name::{Attention, CacheName};
use super::graph::{CrossRows, Feed, Graph, Io};
use super::optimize::optimize;
use super::{DecoderError, DecoderHints};

/// Reads the ONNX model at `path`.
pub(super) fn read_proto(path: &Path) -> Result<pb::ModelProto, DecoderError> {
    let error = |detail: String| DecoderError::Tract {
        path: path.to_path_buf(),
        stage: "reading",
        detail,
    };
    let bytes = std::fs::read(path).map_err(|e| error(e.to_string()))?;
    if bytes.is_empty() {
        return Err(error(
            "the file is empty; download or export it again".into(),
        ));
    }
    pb::ModelProto::decode(&bytes[..])
        .map_err(|e| error(format!("not an ONNX model ({e}); is the file complete?")))
}

/// A graph typed and optimised, not planned yet (so that graphs of one decoder can share their
/// constants first).
pub(super) struct Prepared {
    path: PathBuf,
    model: TypedModel,
    io: Io,
}

/// Reads `proto` (the graph at `path`) as a decoder graph: its inputs typed with symbolic
/// `batch`, `seq` and `past`, the cross-attention inputs with one row when the graph lets them
/// broadcast ([`CrossRows::One`]), else with `batch`; then optimised.
pub(super) fn prepare(
    path: &Path,
    proto: pb::ModelProto,
    hints: &DecoderHints,
    weights: WeightPrecision,
) -> Result<Prepared, DecoderError> {
    let tract = |stage: &'static str| {
        move |e: anyhow::Error| DecoderError::Tract {
            path: path.to_path_buf(),
            stage,
            detail: format!("{e:#}"),
        }
    };
    let dir = path.parent().and_then(Path::to_str);
    let mut model = tract_onnx::onnx()
        .parse(&proto, dir)
        .map_err(tract("reading the graph"))?
        .model;
    drop(proto);
    super::super::encoder::drop_symbolic_annotations(&mut model)
        .map_err(tract("reading the graph"))?;
    let inputs = Inputs::read(&model, path)?;
    let mut io = Io {
        feeds: inputs.feeds.clone(),
        ids_type: inputs.ids_type(),
        logits: None,
        presents: Vec::new(),
        cross_rows: CrossRows::PerRow,
    };
    for (ix, outlet) in model
        .output_outlets()
        .map_err(tract("reading the outputs"))?
        .iter()
        .enumerate()
    {
        let name = model
            .outlet_label(*outlet)
            .map(str::to_string)
            .unwrap_or_else(|| model.node(outlet.node).name.clone());
        if name == "logits" {
            io.logits = Some(ix);
        } else if let Some(cache) = CacheName::parse(&name) {
            io.presents.push((cache, ix));
        }
    }
    let typed = |model: InferenceModel, cross_rows: CrossRows| {
        let model = inputs.set_facts(model, io.ids_type, hints, cross_rows, path)?;
        let typed = model.into_typed().map_err(tract("analysing the graph"))?;
        optimize(typed, weights).map_err(|(stage, e)| tract(stage)(e))
    };
    if io.feeds.iter().any(Feed::is_cross)
        && let Ok(mut model) = typed(model.clone(), CrossRows::One)
        && cross_inputs_broadcast(&model, &io.feeds)
    {
        io.cross_rows = CrossRows::One;
        // Typed with one row to let the fused attention take them; that attention also reads
        // one row per token row, which a batch of windows gives: their rows are `windows`.
        cross_rows_symbolic(&mut model, &io.feeds).map_err(tract("typing the cross-attention"))?;
        return Ok(Prepared {
            path: path.to_path_buf(),
            model,
            io,
        });
    }
    Ok(Prepared {
        path: path.to_path_buf(),
        model: typed(model, CrossRows::PerRow)?,
        io,
    })
}

/// The inputs of a graph as the file declares them.
struct Inputs {
    feeds: Vec<Feed>,
    /// The element type each input declares, if it does.
    declared: Vec<Option<DatumType>>,
}

impl Inputs {
    fn read(model: &InferenceModel, path: &Path) -> Result<Inputs, DecoderError> {
        let outlets = model.input_outlets().map_err(|e| DecoderError::Tract {
            path: path.to_path_buf(),
            stage: "reading the inputs",
            detail: format!("{e:#}"),
        })?;
        let mut feeds = Vec::new();
        let mut declared = Vec::new();
        for outlet in outlets {
            let name = &model.node(outlet.node).name;
            feeds.push(match name.as_str() {
                "input_ids" => Feed::Ids,
                "encoder_hidden_states" => Feed::Hidden,
                _ => Feed::Cache(CacheName::parse(name).ok_or_else(|| {
                    DecoderError::NotADecoder {
                        path: path.to_path_buf(),
                        detail: format!(
                            "unexpected input {name} (a Whisper decoder takes input_ids, \
                             encoder_hidden_states and past_key_values.*)"
                        ),
                    }
                })?),
            });
            declared.push(
                model
                    .outlet_fact(*outlet)
                    .ok()
                    .and_then(|f| f.datum_type.concretize()),
            );
        }
        Ok(Inputs { feeds, declared })
    }

    /// The element type of `input_ids`: the declared one if it is an integer, else int64.
    fn ids_type(&self) -> DatumType {
        self.feeds
            .iter()
            .zip(&self.declared)
            .find(|(f, _)| **f == Feed::Ids)
            .and_then(|(_, d)| d.filter(|d| d.is_integer()))
            .unwrap_or(i64::datum_type())
    }

    /// `model` with its inputs typed: `input_ids [batch, seq]`, `encoder_hidden_states
    /// [batch, n_audio_ctx, d_model]`, self-attention caches `[batch, heads, past, head_dim]`
    /// and cross-attention caches `[batch or 1, heads, n_audio_ctx, head_dim]`, heads and head
    /// width as the file declares them, float inputs of the type they declare (else of the
    /// first declared one, else float32).
    fn set_facts(
        &self,
        mut model: InferenceModel,
        ids_type: DatumType,
        hints: &DecoderHints,
        cross_rows: CrossRows,
        path: &Path,
    ) -> Result<InferenceModel, DecoderError> {
        let tract = |e: anyhow::Error| DecoderError::Tract {
            path: path.to_path_buf(),
            stage: "setting the input shapes",
            detail: format!("{e:#}"),
        };
        let batch = model.symbols.sym("batch").to_dim();
        let seq = model.symbols.sym("seq").to_dim();
        let past = model.symbols.sym("past").to_dim();
        let float_type = self
            .declared
            .iter()
            .zip(&self.feeds)
            .find(|(_, f)| **f != Feed::Ids)
            .and_then(|(d, _)| *d)
            .unwrap_or(f32::datum_type());
        let outlets = model.input_outlets().map_err(tract)?.to_vec();
        for (ix, (feed, outlet)) in self.feeds.iter().zip(outlets).enumerate() {
            let dt = self.declared[ix].unwrap_or(float_type);
            let fact = match feed {
                Feed::Ids => InferenceFact::dt_shape(ids_type, tvec![batch.clone(), seq.clone()]),
                Feed::Hidden => InferenceFact::dt_shape(
                    dt,
                    tvec![
                        batch.clone(),
                        hints.n_audio_ctx.to_dim(),
                        hints.d_model.to_dim()
                    ],
                ),
                Feed::Cache(name) => {
                    let ctx = hints.n_audio_ctx.to_dim();
                    let (rows, len) = match (name.attention, cross_rows) {
                        (Attention::SelfAttention, _) => (batch.clone(), past.clone()),
                        (Attention::Cross, CrossRows::One) => (1.to_dim(), ctx),
                        (Attention::Cross, CrossRows::PerRow) => (batch.clone(), ctx),
                    };
                    let declared = model.outlet_fact(outlet).cloned().unwrap_or_default();
                    let declared = |axis: usize| {
                        declared
                            .shape
                            .dims()
                            .nth(axis)
                            .and_then(|d| d.concretize())
                            .filter(|d| d.to_i64().is_ok())
                            .ok_or_else(|| DecoderError::NotADecoder {
                                path: path.to_path_buf(),
                                detail: format!(
                                    "input {} does not declare its heads and head width",
                                    model.node(outlet.node).name
                                ),
                            })
                    };
                    InferenceFact::dt_shape(dt, tvec![rows, declared(1)?, len, declared(3)?])
                }
            };
            model.set_input_fact(ix, fact).map_err(tract)?;
        }
        Ok(model)
    }
}

/// Gives the cross-attention inputs of `model` (which go straight into fused attentions) the
/// symbolic number of rows `windows`, where they were typed with one.
fn cross_rows_symbolic(model: &mut TypedModel, feeds: &[Feed]) -> TractResult<()> {
    let windows = model.symbols.sym("windows").to_dim();
    let outlets = model.input_outlets()?.to_vec();
    for (feed, outlet) in feeds.iter().zip(outlets) {
        if !feed.is_cross() {
            continue;
        }
        let mut fact = model.outlet_fact(outlet)?.clone();
        let mut dims: TVec<TDim> = fact.shape.iter().cloned().collect();
        dims[0] = windows.clone();
        fact.shape = dims.into();
        model.nodes[outlet.node].op = Box::new(
            tract_onnx::tract_core::ops::source::TypedSource::new(fact.clone()),
        );
        model.set_outlet_fact(outlet, fact)?;
    }
    model.refresh_output_facts()
}

/// Whether every cross-attention input of `model` goes straight into a fused attention as its
/// keys or values: then one row of them serves any number of query rows.
fn cross_inputs_broadcast(model: &TypedModel, feeds: &[Feed]) -> bool {
    let Ok(inputs) = model.input_outlets() else {
        return false;
    };
    feeds
        .iter()
        .zip(inputs)
        .filter(|(feed, _)| feed.is_cross())
        .all(|(_, outlet)| {
            model.outlet_successors(*outlet).iter().all(|inlet| {
                model.node(inlet.node).op_is::<CachedAttention>() && matches!(inlet.slot, 1 | 2)
            })
        })
}

impl Prepared {
    /// A model typed and optimised elsewhere, with its interface.
    pub(super) fn new(path: PathBuf, model: TypedModel, io: Io) -> Prepared {
        Prepared { path, model, io }
    }

    /// The file read.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// The typed, optimised model.
    pub(super) fn model_mut(&mut self) -> &mut TypedModel {
        &mut self.model
    }

    /// Plans the graph; tract's products run on `executor`.
    pub(super) fn plan(self, executor: &Executor) -> Result<Graph, DecoderError> {
        let run_options = RunOptions {
            executor: Some(executor.clone()),
            ..Default::default()
        };
        let plan = TypedSimplePlan::new_with_options(self.model, &run_options).map_err(|e| {
            DecoderError::Tract {
                path: self.path.clone(),
                stage: "planning",
                detail: format!("{e:#}"),
            }
        })?;
        Ok(Graph {
            path: self.path,
            plan,
            io: self.io,
        })
    }
}
