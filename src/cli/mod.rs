//! Subcommands of the `amanuensis` binary, one file each.

mod compare;
mod doctor;
mod encode;
mod inspect;
mod mel;
mod models;

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
                  amanuensis mel speech.flac -o speech.mel.npy"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
        Command::Mel(args) => mel::run(args),
        Command::Encode(args) => encode::run(args),
        Command::Compare(args) => compare::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Doctor(args) => doctor::run(args),
        Command::Models(args) => models::run(args),
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
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot write {}", path.display()))?;
    serde_json::to_writer_pretty(&mut tmp, value)?;
    tmp.write_all(b"\n")?;
    tmp.persist(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
