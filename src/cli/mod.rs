//! Subcommands of the `amanuensis` binary, one file each.

mod compare;
mod doctor;
mod encode;
mod inspect;
mod mel;
mod models;
mod serve;
mod transcribe;

use std::path::Path;

use amanuensis::audio::Input;
use amanuensis::backend::{DeviceFamily, Precision, Rounding};
use amanuensis::precision::PrecisionPlan;
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
    Transcribe(Box<transcribe::TranscribeArgs>),
    Mel(mel::MelArgs),
    Encode(encode::EncodeArgs),
    Compare(compare::CompareArgs),
    Inspect(inspect::InspectArgs),
    Doctor(doctor::DoctorArgs),
    Models(models::ModelsArgs),
    Serve(Box<serve::ServeArgs>),
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Transcribe(args) => transcribe::run(*args),
        Command::Mel(args) => mel::run(args),
        Command::Encode(args) => encode::run(args),
        Command::Compare(args) => compare::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Doctor(args) => doctor::run(args),
        Command::Models(args) => models::run(args),
        Command::Serve(args) => serve::run(*args),
    }
}

/// A parser for a library type read by its `FromStr` from one of `names`, which `--help`
/// lists.
fn named<T>(names: &'static [&'static str]) -> impl clap::builder::TypedValueParser<Value = T>
where
    T: std::str::FromStr<Err = String> + Clone + Send + Sync + 'static,
{
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(names).try_map(|s| s.parse::<T>())
}

/// The audio a command-line argument names: `-` is standard input, anything else a file.
fn input(arg: &Path) -> Input {
    if arg.as_os_str() == "-" {
        Input::Stdin
    } else {
        Input::Path(arg.to_path_buf())
    }
}

/// The model and how its plan is built, shared by the commands that load an encoder.
#[derive(Debug, clap::Args)]
struct PlanArgs {
    /// An encoder .onnx file, a model directory (optimum layout), or a catalog name
    /// (`amanuensis models list`), fetched on first use. The default, tiny.en, is
    /// English-only: it writes any speech as English; multilingual models (tiny, base, ...)
    /// detect the language.
    #[arg(short, long, value_name = "MODEL", default_value = "tiny.en")]
    model: String,

    /// Fail instead of falling back to the CPU when `--backend auto` finds no NPU or the NPU
    /// fails on a window.
    #[arg(long)]
    strict: bool,

    /// How the NPU kernels (emu, npu) round float32 operands to bfloat16.
    #[arg(long, value_parser = named::<Rounding>(Rounding::NAMES), default_value_t = Rounding::NearestEven)]
    rounding: Rounding,

    /// How the NPU kernels (emu, npu) compute: bf16; bf16x3 for near-float32 products at
    /// three times the work (softmax and GELU then in float32 on the CPU); or a precision per
    /// op, as `bf16,fc2=bf16x3,attention@-1=f32` (KIND[@LAYER]=bf16|bf16x3|f32, f32 on the
    /// host; kinds conv1, conv2, q, k, v, attention, out, fc1, fc2, *; layers from 0, or -1
    /// for the last).
    #[arg(long, value_name = "PRECISION", default_value = "bf16")]
    precision: PrecisionPlan,

    /// The NPU family to lay the work out for under emu and inspect (default XDNA1); under
    /// npu it must be the device's.
    #[arg(long, value_parser = named::<DeviceFamily>(DeviceFamily::NAMES))]
    device_family: Option<DeviceFamily>,

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
            precision: self
                .precision
                .contract_precision()
                .unwrap_or(Precision::Bf16),
            precision_plan: match self.precision.contract_precision() {
                Some(_) => None,
                None => Some(self.precision.clone()),
            },
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

/// Writes `value` as pretty JSON to `path`, whole or not at all ([`amanuensis::atomic`]).
fn write_json(path: &std::path::Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    use anyhow::Context;
    amanuensis::atomic::write_file(path, |w| {
        serde_json::to_writer_pretty(&mut *w, value)?;
        w.write_all(b"\n")
    })
    .with_context(|| format!("cannot write {}", path.display()))
}
