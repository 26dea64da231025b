//! A Whisper encoder in tract: loaded once, planned once per input shape, run per window.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use amanuensis_ops::DeviceHandle;
use std::time::{Duration, Instant};

use amanuensis_kernels::low_precision::WeightPrecision;
use tract_linalg::multithread::Executor;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::runtime::RunOptions;
use tract_onnx::tract_core::transform::get_transform;
use tract_onnx::tract_hir::infer::Factoid;

use super::{ModelFiles, WhisperDims, locate};
use crate::audio::N_FRAMES;
use crate::backend::{
    self, Backend, BackendError, DeviceFamily, DevicePlan, Kernels, PlanError, Precision, Resolved,
    Rounding,
};
use crate::placement::Placement;
use crate::precision::PrecisionPlan;

/// Why an encoder cannot be loaded or run. Messages name the file and, when there is one, the
/// fix.
#[derive(Debug, thiserror::Error)]
pub enum EncoderError {
    /// Nothing at the given path.
    #[error("{path}: no such file or directory")]
    NotFound {
        /// The path given.
        path: PathBuf,
    },
    /// A directory without an encoder graph.
    #[error(
        "{dir}: no encoder found (looked for encoder_model.onnx, encoder_model_fp16.onnx and \
         encoder.onnx, also under onnx/); pass the .onnx file itself, or a directory exported \
         with `optimum-cli export onnx --model openai/whisper-... DIR`"
    )]
    NoEncoderInDirectory {
        /// The directory.
        dir: PathBuf,
    },
    /// The file is not an ONNX model.
    #[error("{path}: not an ONNX model ({detail})")]
    NotOnnx {
        /// The file.
        path: PathBuf,
        /// What tract or the reader found.
        detail: String,
    },
    /// An ONNX model, but not a Whisper encoder.
    #[error("{path}: not a Whisper encoder: {detail}")]
    NotAnEncoder {
        /// The file.
        path: PathBuf,
        /// What the graph looks like instead.
        detail: String,
    },
    /// The model's `config.json` cannot be read as JSON of the expected fields.
    #[error(
        "{path}: {detail}; fix or remove the file (without it the dimensions are read off the graph)"
    )]
    BadConfig {
        /// The file.
        path: PathBuf,
        /// The reader's or the JSON parser's error.
        detail: String,
    },
    /// The mel input does not fit the model.
    #[error(
        "this encoder expects {expected} mel bins ({family} family), the frontend produced {got}"
    )]
    MelMismatch {
        /// Bins the encoder takes.
        expected: usize,
        /// Bins given.
        got: usize,
        /// The model family that takes `expected` bins.
        family: &'static str,
    },
    /// The backend cannot be used.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// tract failed to analyse, optimise or run the graph.
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

/// How to build the encoder's plan.
#[derive(Debug, Clone)]
pub struct EncoderOptions {
    /// Threads of tract's matrix-multiplication executor and of the offloaded kernels.
    pub threads: usize,
    /// Where the encoder runs.
    pub backend: Backend,
    /// Whether a fallback from the requested backend is an error.
    pub strict: bool,
    /// How the NPU kernels round operands to bfloat16 (`emu` and `npu`).
    pub rounding: Rounding,
    /// bfloat16 products per float32 product in the NPU kernels (`emu`, `npu`).
    pub precision: Precision,
    /// A precision per op instead of `precision` for all (`emu`, `npu`):
    /// [`crate::precision`].
    pub precision_plan: Option<PrecisionPlan>,
    /// The NPU family (`emu`: which array to lay the work out for; `npu`: must be the
    /// device's); `None` for XDNA1 under `emu` and the device's own under `npu`.
    pub family: Option<DeviceFamily>,
    /// A device to run the offloaded ops on instead of the one `backend` names (which must
    /// then be `emu`, `npu` or `auto`): another implementation of the kernel contract.
    pub device: Option<DeviceHandle>,
    /// How the decoder's linear layers hold their weights, for a
    /// [`Transcriber`](crate::transcribe::Transcriber) loaded with these options (the encoder
    /// does not read it).
    pub decoder_weights: WeightPrecision,
}

impl Default for EncoderOptions {
    fn default() -> Self {
        EncoderOptions {
            threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            backend: Backend::Cpu,
            strict: false,
            rounding: Rounding::NearestEven,
            precision: Precision::Bf16,
            precision_plan: None,
            family: None,
            device: None,
            decoder_weights: WeightPrecision::F32,
        }
    }
}

/// A Whisper encoder ready to run: tract's optimised plan for one `[1, n_mels, 3000]` window,
/// built once and reused for every window.
pub struct Encoder {
    files: ModelFiles,
    dims: WhisperDims,
    plan: Arc<TypedRunnableModel>,
    load_time: Duration,
    resolved: Resolved,
    placement: Placement,
    pool: rayon::ThreadPool,
    fallback: Option<Arc<TypedRunnableModel>>,
    notes: Mutex<Vec<String>>,
    needs: Vec<amanuensis_kernels::device::KernelNeed>,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("files", &self.files)
            .field("dims", &self.dims)
            .finish()
    }
}

fn chain(err: &anyhow::Error) -> String {
    format!("{err:#}")
}

/// Drops the shapes that an exporter wrote for intermediate tensors in its own symbols.
///
/// torch's dynamo exporter annotates every tensor of a graph exported with a dynamic batch as
/// `[batch, ...]`. Once the input is fixed to `[1, n_mels, 3000]`, tract cannot unify `batch`
/// with 1 and stops ("Failed analyse for node ... ConvHir: Impossible to unify Sym(batch) with
/// Val(1)"). tract infers every intermediate shape from the input anyway, so annotations with
/// free symbols are dropped, their element types kept.
pub(crate) fn drop_symbolic_annotations(model: &mut InferenceModel) -> TractResult<()> {
    let inputs: Vec<usize> = model.input_outlets()?.iter().map(|o| o.node).collect();
    let mut relax = Vec::new();
    for node in model.nodes() {
        if inputs.contains(&node.id) {
            continue;
        }
        for (slot, output) in node.outputs.iter().enumerate() {
            let symbolic = output
                .fact
                .shape
                .dims()
                .any(|d| d.concretize().is_some_and(|d| d.to_i64().is_err()));
            if symbolic {
                relax.push((OutletId::new(node.id, slot), output.fact.datum_type));
            }
        }
    }
    for (outlet, datum_type) in relax {
        let fact = InferenceFact {
            datum_type,
            ..InferenceFact::default()
        };
        model.set_outlet_fact(outlet, fact)?;
    }
    Ok(())
}

/// Hugging Face `config.json` fields that describe the encoder.
#[derive(Debug, Default, serde::Deserialize)]
struct HfConfig {
    num_mel_bins: Option<usize>,
    d_model: Option<usize>,
    encoder_attention_heads: Option<usize>,
    encoder_layers: Option<usize>,
    encoder_ffn_dim: Option<usize>,
    model_type: Option<String>,
}

impl Encoder {
    /// Loads the encoder of the model at `path` (an `.onnx` file or a model directory).
    pub fn load(path: &Path, options: &EncoderOptions) -> Result<Encoder, EncoderError> {
        let files = locate(path)?;
        Encoder::load_files(files, options)
    }

    /// Loads the encoder of located model files.
    pub fn load_files(
        files: ModelFiles,
        options: &EncoderOptions,
    ) -> Result<Encoder, EncoderError> {
        let started = Instant::now();
        let path = files.encoder.clone();
        let config: HfConfig = match &files.config {
            Some(p) => {
                let bad = |detail: String| EncoderError::BadConfig {
                    path: p.clone(),
                    detail,
                };
                let bytes = std::fs::read(p).map_err(|e| bad(format!("cannot read: {e}")))?;
                serde_json::from_slice(&bytes).map_err(|e| bad(format!("not valid JSON: {e}")))?
            }
            None => HfConfig::default(),
        };
        if config.model_type.as_deref().is_some_and(|t| t != "whisper") {
            return Err(EncoderError::NotAnEncoder {
                path,
                detail: format!(
                    "config.json says model_type {:?}",
                    config.model_type.unwrap_or_default()
                ),
            });
        }
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if len == 0 {
            return Err(EncoderError::NotOnnx {
                path,
                detail: "the file is empty".into(),
            });
        }
        let mut model =
            tract_onnx::onnx()
                .model_for_path(&path)
                .map_err(|e| EncoderError::NotOnnx {
                    path: path.clone(),
                    detail: format!("{}; is the file complete?", chain(&e)),
                })?;

        let inputs: Vec<(String, InferenceFact)> = model
            .input_outlets()
            .map_err(|e| EncoderError::NotOnnx {
                path: path.clone(),
                detail: chain(&e),
            })?
            .iter()
            .map(|o| {
                let node = &model.nodes()[o.node];
                (
                    node.name.clone(),
                    model.outlet_fact(*o).cloned().unwrap_or_default(),
                )
            })
            .collect();
        let names = inputs
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        if inputs.len() != 1 {
            let decoder = inputs.iter().any(|(n, _)| n.contains("input_ids"));
            return Err(EncoderError::NotAnEncoder {
                path,
                detail: if decoder {
                    format!("its inputs ({names}) are a decoder's; pass the encoder_model.onnx")
                } else {
                    format!(
                        "it has {} inputs ({names}), a Whisper encoder has one",
                        inputs.len()
                    )
                },
            });
        }
        let (input_name, fact) = &inputs[0];
        let dt = fact.datum_type.concretize().unwrap_or(f32::datum_type());
        if !dt.is_float() {
            return Err(EncoderError::NotAnEncoder {
                path,
                detail: format!("its input {input_name} is {dt:?}, a mel spectrogram is float"),
            });
        }
        let rank = fact.shape.rank().concretize();
        if rank.is_some_and(|r| r != 3) {
            return Err(EncoderError::NotAnEncoder {
                path,
                detail: format!(
                    "its input {input_name} has rank {}, a mel input is [batch, n_mels, frames]",
                    rank.unwrap_or(0)
                ),
            });
        }
        let declared_mels = fact
            .shape
            .dims()
            .nth(1)
            .and_then(|d| d.concretize())
            .and_then(|d| d.to_i64().ok())
            .map(|d| d as usize);
        let n_mels = declared_mels.or(config.num_mel_bins).unwrap_or(80);

        let tract = |stage: &'static str, e: anyhow::Error| EncoderError::Tract {
            path: path.clone(),
            stage,
            detail: chain(&e),
        };
        drop_symbolic_annotations(&mut model).map_err(|e| tract("reading the graph", e))?;
        model
            .set_input_fact(0, InferenceFact::dt_shape(dt, tvec![1, n_mels, N_FRAMES]))
            .map_err(|e| tract("setting the input shape", e))?;
        let mut typed = model
            .into_typed()
            .map_err(|e| tract("analysing the graph", e))?;
        if dt == f16::datum_type() || has_f16(&typed) {
            f16_to_f32(&mut typed).map_err(|e| tract("converting float16 to float32", e))?;
        }
        let typed = typed
            .into_decluttered()
            .map_err(|e| tract("decluttering", e))?;
        let output = typed
            .output_fact(0)
            .map_err(|e| tract("reading the output", e))?;
        let out_shape: Option<Vec<usize>> = output.shape.as_concrete().map(|s| s.to_vec());
        let Some([1, n_ctx, d_model]) = out_shape
            .as_deref()
            .and_then(|s| <[usize; 3]>::try_from(s).ok())
        else {
            return Err(EncoderError::NotAnEncoder {
                path,
                detail: format!(
                    "its output is {:?}, a Whisper encoder gives [1, 1500, d_model]",
                    output.shape
                ),
            });
        };
        let softmaxes = typed
            .nodes()
            .iter()
            .filter(|n| n.op.name().to_lowercase().contains("softmax"))
            .count();
        let n_layers = config.encoder_layers.unwrap_or(softmaxes);
        let dims = WhisperDims {
            n_mels,
            n_audio_ctx: n_ctx,
            d_model,
            n_heads: config.encoder_attention_heads.unwrap_or(d_model / 64),
            n_layers,
            n_ffn: config.encoder_ffn_dim.unwrap_or(4 * d_model),
        };
        if let Some(d) = config.d_model.filter(|&d| d != d_model) {
            return Err(EncoderError::NotAnEncoder {
                path,
                detail: format!("config.json says d_model {d}, the graph's output has {d_model}"),
            });
        }

        let kernels = Kernels {
            rounding: options.rounding,
            // Under a plan the device's own contract is plain bf16, the plan's other
            // precisions on devices of their own.
            precision: match options.precision_plan {
                Some(_) => Precision::Bf16,
                None => options.precision,
            },
            family: options.family,
        };
        let resolved = backend::resolve_with(
            options.device.as_ref(),
            options.backend,
            options.strict,
            kernels,
        )?;
        let devices = match &options.precision_plan {
            Some(plan) => {
                backend::precision_devices(&resolved, kernels, options.device.is_some(), plan)?
                    .map(|d| (plan, d))
            }
            None => None,
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(options.threads.max(1))
            .build()
            .map_err(|e| tract("starting threads", e.into()))?;
        let plan = pool
            .install(|| {
                backend::plan(
                    typed,
                    options.backend,
                    options.strict,
                    resolved,
                    devices.as_ref().map(|(p, d)| (*p, d)),
                )
            })
            .map_err(|e| match e {
                PlanError::Backend(e) => EncoderError::Backend(e),
                PlanError::Tract { stage, detail } => EncoderError::Tract {
                    path: path.clone(),
                    stage,
                    detail,
                },
            })?;
        let DevicePlan {
            model: typed,
            resolved,
            placement,
            needs,
            fallback: fallback_model,
        } = plan;
        let optimized = typed.into_optimized().map_err(|e| tract("optimising", e))?;
        let executor = if options.threads > 1 {
            Executor::multithread(options.threads)
        } else {
            Executor::SingleThread
        };
        let run_options = RunOptions {
            executor: Some(executor),
            ..Default::default()
        };
        let plan = TypedSimplePlan::new_with_options(optimized, &run_options)
            .map_err(|e| tract("planning", e))?;
        let fallback = match fallback_model {
            Some(model) => {
                let model = model
                    .into_optimized()
                    .map_err(|e| tract("optimising the CPU fallback", e))?;
                Some(
                    TypedSimplePlan::new_with_options(model, &run_options)
                        .map_err(|e| tract("planning the CPU fallback", e))?,
                )
            }
            None => None,
        };
        Ok(Encoder {
            files,
            dims,
            plan,
            load_time: started.elapsed(),
            resolved,
            placement,
            pool,
            fallback,
            notes: Mutex::default(),
            needs,
        })
    }

    /// The model's files.
    pub fn files(&self) -> &ModelFiles {
        &self.files
    }

    /// The model's dimensions.
    pub fn dims(&self) -> &WhisperDims {
        &self.dims
    }

    /// Time spent loading and planning.
    pub fn load_time(&self) -> Duration {
        self.load_time
    }

    /// The backend that runs, its device, and what `auto` chose.
    pub fn backend(&self) -> &Resolved {
        &self.resolved
    }

    /// The kernels the device needs for this plan, one entry per distinct dispatch (empty for
    /// the CPU plans).
    pub fn kernel_needs(&self) -> &[amanuensis_kernels::device::KernelNeed] {
        &self.needs
    }

    /// Which op runs where, and the device traffic of one window.
    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    /// Messages about windows that did not run as planned (a device failure under `auto`,
    /// encoded on the CPU instead), since the last call; each is one line for the user.
    pub fn take_notes(&self) -> Vec<String> {
        std::mem::take(&mut *self.notes.lock().expect("notes"))
    }

    /// tract's optimised model behind the plan.
    pub fn model(&self) -> &TypedModel {
        self.plan.model()
    }

    /// Encodes one window's log-mel spectrogram (`[n_mels, 3000]`, row-major) into
    /// `[1500, d_model]` features.
    pub fn encode(&self, mel: &[f32]) -> Result<Vec<f32>, EncoderError> {
        let n_mels = mel.len() / N_FRAMES;
        if n_mels != self.dims.n_mels || !mel.len().is_multiple_of(N_FRAMES) {
            return Err(EncoderError::MelMismatch {
                expected: self.dims.n_mels,
                got: n_mels,
                family: self.dims.family(),
            });
        }
        let path = &self.files.encoder;
        let input =
            Tensor::from_shape(&[1, n_mels, N_FRAMES], mel).map_err(|e| EncoderError::Tract {
                path: path.clone(),
                stage: "building the input",
                detail: chain(&e),
            })?;
        let run = |plan: &Arc<TypedRunnableModel>| {
            self.pool
                .install(|| plan.run(tvec![input.clone().into_tvalue()]))
                .map_err(|e| EncoderError::Tract {
                    path: path.clone(),
                    stage: "running",
                    detail: chain(&e),
                })
        };
        let outputs = match (run(&self.plan), &self.fallback) {
            (Ok(outputs), _) => outputs,
            (Err(err), Some(cpu)) => {
                let outputs = run(cpu)?;
                self.notes.lock().expect("notes").push(format!(
                    "backend auto: the device failed on this window ({err}); it was encoded \
                     on the CPU"
                ));
                outputs
            }
            (Err(err), None) => return Err(err),
        };
        let view = outputs[0]
            .to_plain_array_view::<f32>()
            .map_err(|e| EncoderError::Tract {
                path: path.clone(),
                stage: "reading the output",
                detail: chain(&e),
            })?;
        Ok(view.iter().copied().collect())
    }
}

/// Time spent in one kind of op during a profiled run.
#[derive(Debug, Clone)]
pub struct OpTime {
    /// tract's name of the op.
    pub op: String,
    /// Nodes of this op kind in the plan.
    pub nodes: usize,
    /// Time spent in them.
    pub time: Duration,
}

/// A profiled run of one window.
#[derive(Debug, Clone)]
pub struct Profile {
    /// Time per op kind, slowest first.
    pub ops: Vec<OpTime>,
    /// The output of every fused LayerNorm (`CpuLayerNorm`), in plan order, by node name:
    /// the normalised input of each attention and feed-forward block and the final norm,
    /// where errors between two plans can be followed layer by layer.
    pub layer_norms: Vec<(String, Vec<f32>)>,
}

impl Encoder {
    /// Runs one window, times every node of the plan (summed by op kind) and keeps the
    /// outputs of the fused LayerNorms.
    pub fn profile(&self, mel: &[f32]) -> Result<Profile, EncoderError> {
        use std::collections::HashMap;
        use tract_onnx::tract_core::plan::eval;
        let path = self.files.encoder.clone();
        let fail = |stage: &'static str, e: anyhow::Error| EncoderError::Tract {
            path: path.clone(),
            stage,
            detail: chain(&e),
        };
        let input = Tensor::from_shape(&[1, self.dims.n_mels, N_FRAMES], mel)
            .map_err(|e| fail("building the input", e))?;
        let mut state = self.plan.spawn().map_err(|e| fail("running", e))?;
        let mut times: HashMap<String, (usize, Duration)> = HashMap::new();
        let mut layer_norms = Vec::new();
        self.pool
            .install(|| {
                state.run_plan_with_eval(
                    tvec![input.into_tvalue()],
                    |ctx, op_state, node, inputs| {
                        let t = Instant::now();
                        let result = eval(ctx, op_state, node, inputs);
                        let name = node.op().name();
                        let entry = times.entry(name.to_string()).or_default();
                        entry.0 += 1;
                        entry.1 += t.elapsed();
                        if name == "CpuLayerNorm"
                            && let Ok(outputs) = &result
                            && let Ok(view) = outputs[0].to_plain_array_view::<f32>()
                        {
                            layer_norms.push((node.name.clone(), view.iter().copied().collect()));
                        }
                        result
                    },
                )
            })
            .map_err(|e| fail("running", e))?;
        let mut ops: Vec<OpTime> = times
            .into_iter()
            .map(|(op, (nodes, time))| OpTime { op, nodes, time })
            .collect();
        ops.sort_by_key(|t| std::cmp::Reverse(t.time));
        Ok(Profile { ops, layer_norms })
    }
}

/// Whether any value of `typed` is float16.
pub(crate) fn has_f16(typed: &TypedModel) -> bool {
    typed.nodes().iter().any(|n| {
        n.outputs
            .iter()
            .any(|o| o.fact.datum_type == f16::datum_type())
    })
}

/// tract's `f16_to_f32` transform: the graph computed in float32.
pub(crate) fn f16_to_f32(typed: &mut TypedModel) -> TractResult<()> {
    get_transform("f16_to_f32")?
        .expect("tract registers f16_to_f32")
        .transform(typed)
}
