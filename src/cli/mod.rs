//! Subcommands of the `amanuensis` binary, one file each.

mod compare;
mod doctor;
mod encode;
mod inspect;
mod mel;
mod models;
mod transcribe;

use clap::{Parser, Subcommand};

/// Whisper on AMD Ryzen AI NPUs: a Whisper-exact audio frontend, encoder offload through
/// tract, and the tools to check one against the other.
#[derive(Debug, Parser)]
#[command(
    name = "amanuensis",
    version,
    propagate_version = true,
    max_term_width = 100,
    after_help = "Run `amanuensis COMMAND --help` for the details of a command.\n\nExample:\n  \
                  amanuensis transcribe speech.flac"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Transcribe(transcribe::TranscribeArgs),
    Mel(mel::MelArgs),
    Encode(encode::EncodeArgs),
    Compare(compare::CompareArgs),
    Inspect(inspect::InspectArgs),
    Doctor(doctor::DoctorArgs),
    Models(models::ModelsArgs),
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Transcribe(args) => transcribe::run(args),
        Command::Mel(args) => mel::run(args),
        Command::Encode(args) => encode::run(args),
        Command::Compare(args) => compare::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Doctor(args) => doctor::run(args),
        Command::Models(args) => models::run(args),
    }
}

/// The model and how its plan is built, shared by the commands that load an encoder.
#[derive(Debug, clap::Args)]
struct PlanArgs {
    /// An encoder .onnx file, a model directory (optimum layout), or a catalog name
    /// (`amanuensis models list`), fetched on first use.
    #[arg(short, long, value_name = "MODEL", default_value = "tiny.en")]
    model: String,

    /// Fail instead of falling back to the CPU when `--backend auto` finds no NPU or the NPU
    /// fails on a window.
    #[arg(long)]
    strict: bool,

    /// How the NPU kernels (emu, npu) round float32 operands to bfloat16.
    #[arg(long, value_enum, default_value_t = amanuensis::backend::Rounding::NearestEven)]
    rounding: amanuensis::backend::Rounding,

    /// bfloat16 products per float32 product in the NPU kernels (emu, npu): bf16, or bf16x3
    /// for near-float32 products at three times the work (softmax and GELU then in float32 on
    /// the CPU).
    #[arg(long, value_enum, default_value_t = amanuensis::backend::Precision::Bf16)]
    precision: amanuensis::backend::Precision,

    /// The NPU family to lay the work out for under emu and inspect (default XDNA1); under
    /// npu it must be the device's.
    #[arg(long, value_enum)]
    device_family: Option<amanuensis::backend::Family>,

    /// Threads of the encoder (default: all cores).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
}

impl PlanArgs {
    /// The encoder options for `backend`.
    fn options(
        &self,
        backend: amanuensis::backend::Backend,
    ) -> anyhow::Result<amanuensis::model::EncoderOptions> {
        let mut options = amanuensis::model::EncoderOptions {
            backend,
            strict: self.strict,
            rounding: self.rounding,
            precision: self.precision,
            family: self.device_family,
            ..Default::default()
        };
        if let Some(threads) = self.threads {
            anyhow::ensure!(threads >= 1, "--threads must be at least 1");
            options.threads = threads;
        }
        Ok(options)
    }

    /// The model's directory, fetched when it is a catalog name not yet cached.
    fn model_dir(&self) -> anyhow::Result<std::path::PathBuf> {
        Ok(amanuensis::model::resolve_model(
            &self.model,
            &mut |line| eprintln!("{line}"),
        )?)
    }
}

/// Writes `value` as pretty JSON to `path` through a temporary file renamed when complete, so
/// that no partial report is left behind.
fn write_json(path: &std::path::Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let mut tmp = amanuensis::npy::output_temp_file(dir)
        .with_context(|| format!("cannot write {}", path.display()))?;
    serde_json::to_writer_pretty(&mut tmp, value)?;
    tmp.write_all(b"\n")?;
    tmp.persist(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
