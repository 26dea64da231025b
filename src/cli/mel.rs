use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;

use amanuensis::audio::{AudioStream, LogMel, N_FRAMES, SAMPLE_RATE};
use amanuensis::npy::NpyRowWriter;

/// Compute Whisper's log-mel spectrogram of an audio file.
///
/// The audio is decoded (wav, flac, mp3, ogg/vorbis, m4a/aac, aiff, caf, mkv/webm), mixed to
/// mono, resampled to 16 kHz, cut into consecutive 30 s windows (the last one zero-padded) and
/// turned into log-mel spectrograms exactly as OpenAI's `whisper.log_mel_spectrogram` does.
/// The output is a float32 .npy array of shape [windows, n_mels, 3000].
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  amanuensis mel talk.flac -o talk.mel.npy\n  \
    amanuensis mel talk.mp3 --n-mels 128 -o talk.mel128.npy   # for large-v3\n  \
    ffmpeg -i talk.opus -f wav - | amanuensis mel - -o talk.mel.npy"
)]
pub struct MelArgs {
    /// Audio file to read, or `-` for standard input.
    #[arg(value_name = "AUDIO")]
    audio: PathBuf,

    /// Mel bins: 80 (Whisper tiny to large-v2) or 128 (large-v3 and large-v3-turbo).
    #[arg(long, value_name = "N", default_value_t = 80, value_parser = parse_n_mels)]
    n_mels: usize,

    /// Where to write the .npy array; nothing is written there unless the whole file succeeds.
    #[arg(short, long, value_name = "OUT.npy")]
    output: PathBuf,

    /// Windows computed in parallel (default: all cores).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
}

fn parse_n_mels(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n @ (80 | 128)) => Ok(n),
        _ => Err(format!("Whisper uses 80 or 128 mel bins, not {s}")),
    }
}

pub fn run(args: MelArgs) -> Result<()> {
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    if threads == 0 {
        bail!("--threads must be at least 1");
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    let input = super::input(&args.audio);
    let started = Instant::now();
    let mut stream = AudioStream::open(&input)?;
    let mel = LogMel::new(args.n_mels);
    let mut out = NpyRowWriter::create(&args.output, &[args.n_mels, N_FRAMES])
        .with_context(|| format!("cannot write {}", args.output.display()))?;

    let mut mel_seconds = 0.0;
    let (mut min, mut max, mut sum) = (f32::INFINITY, f32::NEG_INFINITY, 0.0f64);
    loop {
        let mut batch = Vec::with_capacity(threads);
        while batch.len() < threads {
            match stream.next_window()? {
                Some(window) => batch.push(window.samples),
                None => break,
            }
        }
        if batch.is_empty() {
            break;
        }
        let t = Instant::now();
        let mels = pool.install(|| mel.compute_batch(&batch));
        mel_seconds += t.elapsed().as_secs_f64();
        for window in mels.chunks(mel.window_len()) {
            for &v in window {
                min = min.min(v);
                max = max.max(v);
                sum += v as f64;
            }
            out.push(window)
                .with_context(|| format!("cannot write {}", args.output.display()))?;
        }
    }
    let windows = out.rows();
    out.finish()
        .with_context(|| format!("cannot write {}", args.output.display()))?;

    let info = stream.info();
    let seconds = stream.seconds();
    let elapsed = started.elapsed().as_secs_f64();
    let skipped = stream.decoder().skipped_packets();
    eprintln!(
        "{}: {} {} Hz, {} channel{}, {:.2} s -> {} Hz mono",
        info.name,
        info.codec,
        info.sample_rate,
        info.channels,
        if info.channels == 1 { "" } else { "s" },
        seconds,
        SAMPLE_RATE,
    );
    if skipped > 0 {
        eprintln!("warning: {skipped} damaged packets were skipped");
    }
    eprintln!(
        "log-mel: {windows} window{} x {} x {N_FRAMES}, values {min:.3}..{max:.3} (mean {:.3})",
        if windows == 1 { "" } else { "s" },
        args.n_mels,
        sum / (windows as f64 * mel.window_len() as f64),
    );
    eprintln!(
        "time: {:.1} ms in all ({:.1} ms log-mel), {:.0}x realtime -> {}",
        elapsed * 1e3,
        mel_seconds * 1e3,
        seconds / elapsed,
        args.output.display()
    );
    Ok(())
}
