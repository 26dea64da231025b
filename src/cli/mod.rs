//! Subcommands of the `amanuensis` binary, one file each.

mod encode;
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
    Models(models::ModelsArgs),
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Mel(args) => mel::run(args),
        Command::Encode(args) => encode::run(args),
        Command::Models(args) => models::run(args),
    }
}
