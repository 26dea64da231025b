use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;

use amanuensis::audio::{AudioStream, LogMel};
use amanuensis::backend::Backend;
use amanuensis::model::Encoder;

use super::PlanArgs;
use amanuensis::npy::NpyRowWriter;

/// Run a Whisper encoder over an audio file.
///
/// The audio goes through the frontend (as `amanuensis mel`) window by window, each 30 s
/// window through the encoder; the output is a float32 .npy array of shape
/// [windows, 1500, d_model]. The model, the backend, the audio's duration, the encoder's time
/// and the realtime factor are printed to stderr.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  amanuensis encode talk.flac --model tiny.en -o talk.enc.npy\n  \
    amanuensis encode talk.mp3 --model ./whisper-base-onnx/ --threads 1 -o talk.enc.npy"
)]
pub struct EncodeArgs {
    /// Audio file to read, or `-` for standard input.
    #[arg(value_name = "AUDIO")]
    audio: PathBuf,

    #[command(flatten)]
    plan: PlanArgs,

    /// Where the encoder runs.
    #[arg(long, value_parser = super::named::<Backend>(Backend::NAMES), default_value_t = Backend::Cpu)]
    backend: Backend,

    /// Where to write the .npy array; nothing is written there unless every window succeeds.
    #[arg(short, long, value_name = "OUT.npy")]
    output: PathBuf,
}

pub fn run(args: EncodeArgs) -> Result<()> {
    let options = args.plan.options(args.backend)?;
    // The audio is opened before the model is resolved (and maybe fetched): a missing or
    // unreadable input fails at once, naming itself.
    let input = super::input(&args.audio);
    let mut stream = AudioStream::open(&input)?;
    let model_dir = args.plan.model_dir()?;
    let encoder = Encoder::load(&model_dir, &options)?;
    if let Some(note) = &encoder.backend().note {
        eprintln!("{note}");
    }
    let dims = *encoder.dims();
    let mel = LogMel::new(dims.n_mels);
    let mut out = NpyRowWriter::create(&args.output, &[dims.n_audio_ctx, dims.d_model])
        .with_context(|| format!("cannot write {}", args.output.display()))?;

    let started = Instant::now();
    let (mut mel_time, mut encoder_time) = (0.0, 0.0);
    let mut features = Vec::new();
    while let Some(window) = stream.next_window()? {
        let t = Instant::now();
        let spectrogram = mel.compute(&window.samples);
        mel_time += t.elapsed().as_secs_f64();
        let t = Instant::now();
        features.clear();
        features.extend(encoder.encode(&spectrogram)?);
        encoder_time += t.elapsed().as_secs_f64();
        for note in encoder.take_notes() {
            eprintln!("window {}: {note}", out.rows() + 1);
        }
        out.push(&features)
            .with_context(|| format!("cannot write {}", args.output.display()))?;
    }
    let windows = out.rows();
    out.finish()
        .with_context(|| format!("cannot write {}", args.output.display()))?;

    let seconds = stream.seconds();
    let info = stream.info();
    eprintln!(
        "model: {} ({}: {} mels, d_model {}, {} layers, {} heads), loaded in {:.0} ms",
        encoder.files().encoder.display(),
        dims.family(),
        dims.n_mels,
        dims.d_model,
        dims.n_layers,
        dims.n_heads,
        encoder.load_time().as_secs_f64() * 1e3
    );
    eprintln!(
        "backend: {}, {} thread(s)",
        encoder.backend().backend,
        options.threads
    );
    eprintln!(
        "audio: {} ({} {} Hz), {seconds:.2} s in {windows} window(s)",
        info.name, info.codec, info.sample_rate
    );
    eprintln!(
        "encoder: {:.1} ms in all, {:.1} ms per window, {:.1}x realtime (log-mel {:.1} ms, \
         total {:.1} ms) -> {}",
        encoder_time * 1e3,
        encoder_time * 1e3 / windows.max(1) as f64,
        seconds / encoder_time.max(1e-9),
        mel_time * 1e3,
        started.elapsed().as_secs_f64() * 1e3,
        args.output.display()
    );
    Ok(())
}
