use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::Args;

use amanuensis::audio::{AudioStream, Input, LogMel};
use amanuensis::backend::Backend;
use amanuensis::model::{Encoder, EncoderOptions};

use super::{PlanArgs, write_json};

/// Run an audio file through the encoder on several backends and compare them: time per
/// window, realtime factor, time per op kind, and each backend's error against a reference
/// (`cpu` unless `--reference` names another).
///
/// The log-mel windows are computed once; every backend encodes the same windows, the
/// reference first. `--reference emu --backends npu` measures the device against its
/// emulator. Time per window is the median of several passes (at least 3 and 2 s). Errors are
/// over all windows' features: largest and mean absolute difference, cosine similarity, and
/// relative L2 (|x - ref| / |ref|); and block by block, at the output of every fused
/// LayerNorm of the first window, for the plans that have them.
///
/// With `--transcribe`, each backend also transcribes the audio (as `amanuensis transcribe`
/// does, the decoder on the CPU); its text is printed with the words that differ from the
/// reference backend's and the share of words the two have in common.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  amanuensis compare talk.flac --model base\n  \
    amanuensis compare talk.flac --model tiny.en --backends tract,cpu,emu --json cmp.json\n  \
    amanuensis compare talk.flac --model base --transcribe"
)]
pub struct CompareArgs {
    /// Audio file to read, or `-` for standard input.
    #[arg(value_name = "AUDIO")]
    audio: PathBuf,

    #[command(flatten)]
    plan: PlanArgs,

    /// Backends to run, comma-separated (the reference is always run).
    #[arg(long, value_parser = super::named::<Backend>(Backend::NAMES), value_delimiter = ',', default_values_t = [Backend::Cpu, Backend::Emu])]
    backends: Vec<Backend>,

    /// The backend the others are measured against (run first).
    #[arg(long, value_parser = super::named::<Backend>(Backend::NAMES), default_value_t = Backend::Cpu)]
    reference: Backend,

    /// Write the report as JSON to this file as well.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,

    /// Transcribe the audio on each backend too, and compare the words with the reference's.
    #[arg(long)]
    transcribe: bool,
}

/// One backend's transcript, against the reference backend's.
#[derive(Debug, serde::Serialize)]
struct TranscriptReport {
    backend: Backend,
    text: String,
    seconds: f64,
    vs_reference: Option<amanuensis::transcribe::WordComparison>,
}

/// Differences between two feature arrays.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Error {
    max_abs: f64,
    mean_abs: f64,
    cosine: f64,
    relative_l2: f64,
}

fn error(x: &[f32], reference: &[f32]) -> Error {
    let (mut max, mut sum, mut xy, mut xx, mut yy, mut dd) = (0f64, 0f64, 0f64, 0f64, 0f64, 0f64);
    for (&a, &b) in x.iter().zip(reference) {
        let (a, b) = (a as f64, b as f64);
        let d = (a - b).abs();
        max = max.max(d);
        sum += d;
        xy += a * b;
        xx += a * a;
        yy += b * b;
        dd += d * d;
    }
    Error {
        max_abs: max,
        mean_abs: sum / x.len().max(1) as f64,
        cosine: xy / (xx * yy).sqrt(),
        relative_l2: (dd / yy).sqrt(),
    }
}

/// The error of one fused LayerNorm's output (the normalised input of a block) against the
/// same node of the reference plan, on the first window.
#[derive(Debug, serde::Serialize)]
struct LayerError {
    node: String,
    error: Error,
}

#[derive(Debug, serde::Serialize)]
struct BackendReport {
    backend: Backend,
    load_ms: f64,
    /// Median over `runs` passes over every window.
    ms_per_window: f64,
    runs: usize,
    realtime: f64,
    op_ms_per_window: BTreeMap<String, f64>,
    error_vs_reference: Option<Error>,
    layers_vs_reference: Vec<LayerError>,
}

/// Named outputs of the fused LayerNorms of one window.
type LayerOutputs = Vec<(String, Vec<f32>)>;

/// Passes over the windows at least, and seconds of passes at least, for the timing.
const MIN_RUNS: usize = 3;
const MIN_SECONDS: f64 = 2.0;
/// Passes at most.
const MAX_RUNS: usize = 20;

#[derive(Debug, serde::Serialize)]
struct Report {
    reference: Backend,
    audio: String,
    seconds: f64,
    windows: usize,
    model: String,
    threads: usize,
    backends: Vec<BackendReport>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    transcripts: Vec<TranscriptReport>,
}

pub fn run(args: CompareArgs) -> Result<()> {
    let options = args.plan.options(Backend::Cpu)?;
    let mut backends = vec![args.reference];
    for b in &args.backends {
        if !backends.contains(b) {
            backends.push(*b);
        }
    }
    // The audio is opened first: a bad file fails before any model is loaded. Transcription
    // reads it a second time: standard input is kept in a temporary file for that.
    let mut input = super::input(&args.audio);
    let _stdin_copy = if args.transcribe && matches!(input, Input::Stdin) {
        let mut tmp = tempfile::NamedTempFile::new()?;
        std::io::copy(&mut std::io::stdin().lock(), &mut tmp)?;
        input = Input::Path(tmp.path().to_path_buf());
        Some(tmp)
    } else {
        None
    };
    let mut stream = AudioStream::open(&input)?;
    let model_dir = args.plan.model_dir()?;

    let mut encoders = Vec::new();
    for &backend in &backends {
        let encoder = Encoder::load(
            &model_dir,
            &EncoderOptions {
                backend,
                ..options.clone()
            },
        )?;
        if let Some(note) = &encoder.backend().note {
            eprintln!("{note}");
        }
        encoders.push((backend, encoder));
    }
    let n_mels = encoders[0].1.dims().n_mels;

    let mel = LogMel::new(n_mels);
    let mut windows = Vec::new();
    while let Some(window) = stream.next_window()? {
        windows.push(mel.compute(&window.samples));
    }
    let seconds = stream.seconds();
    let info = stream.info().clone();

    let model_name = encoders[0].1.files().encoder.display().to_string();
    let mut reports = Vec::new();
    // The reference plan's features and its LayerNorm outputs.
    let mut reference: Option<(Vec<f32>, LayerOutputs)> = None;
    for (backend, encoder) in &encoders {
        // One window first, profiled node by node: it also warms the caches.
        let profile = encoder.profile(&windows[0])?;
        // Every window once, then again until MIN_RUNS passes and MIN_SECONDS: the median
        // pass gives the time per window.
        let mut passes = Vec::new();
        let mut features = Vec::new();
        let started = Instant::now();
        while passes.len() < MIN_RUNS || started.elapsed().as_secs_f64() < MIN_SECONDS {
            let t = Instant::now();
            let mut out = Vec::new();
            for w in &windows {
                out.extend(encoder.encode(w)?);
                for note in encoder.take_notes() {
                    eprintln!("{backend}: {note}");
                }
            }
            passes.push(t.elapsed().as_secs_f64());
            features = out;
            if passes.len() >= MAX_RUNS {
                break;
            }
        }
        passes.sort_by(f64::total_cmp);
        let pass = passes[passes.len() / 2];
        let (error_vs_reference, layers_vs_reference) = match &reference {
            Some((r, r_layers)) => {
                let layers = profile
                    .layer_norms
                    .iter()
                    .filter_map(|(name, x)| {
                        let (_, r) = r_layers.iter().find(|(n, _)| n == name)?;
                        Some(LayerError {
                            node: name.clone(),
                            error: error(x, r),
                        })
                    })
                    .collect();
                (Some(error(&features, r)), layers)
            }
            None => (None, Vec::new()),
        };
        if reference.is_none() {
            reference = Some((features, profile.layer_norms.clone()));
        }
        reports.push(BackendReport {
            backend: *backend,
            load_ms: encoder.load_time().as_secs_f64() * 1e3,
            ms_per_window: pass * 1e3 / windows.len() as f64,
            runs: passes.len(),
            realtime: seconds / pass.max(1e-9),
            op_ms_per_window: profile
                .ops
                .iter()
                .map(|t| (t.op.clone(), t.time.as_secs_f64() * 1e3))
                .collect(),
            error_vs_reference,
            layers_vs_reference,
        });
    }

    println!(
        "audio: {} ({} {} Hz), {seconds:.2} s in {} window(s); model {} ({}); {} thread(s)",
        info.name,
        info.codec,
        info.sample_rate,
        windows.len(),
        encoders[0].1.files().encoder.display(),
        encoders[0].1.dims().family(),
        options.threads
    );
    println!();
    println!(
        "{:<8} {:>12} {:>10} {:>11} {:>11} {:>12} {:>11}",
        "backend", "ms/window", "realtime", "max abs", "mean abs", "cosine", "rel L2"
    );
    for r in &reports {
        let (max, mean, cos, rel) = match &r.error_vs_reference {
            Some(e) => (
                format!("{:.3e}", e.max_abs),
                format!("{:.3e}", e.mean_abs),
                format!("{:.7}", e.cosine),
                format!("{:.3e}", e.relative_l2),
            ),
            None => ("(ref)".into(), String::new(), String::new(), String::new()),
        };
        println!(
            "{:<8} {:>12.1} {:>9.1}x {:>11} {:>11} {:>12} {:>11}",
            r.backend.to_string(),
            r.ms_per_window,
            r.realtime,
            max,
            mean,
            cos,
            rel
        );
    }
    let reference_ms = reports[0].ms_per_window;
    for r in reports.iter().skip(1) {
        println!(
            "{} / {} time: {:.2}x",
            r.backend,
            args.reference,
            r.ms_per_window / reference_ms.max(1e-9)
        );
    }
    for r in reports.iter().skip(1) {
        if r.layers_vs_reference.is_empty() {
            continue;
        }
        println!();
        println!(
            "{} against {}, block by block (outputs of the fused LayerNorms, first window):",
            r.backend, args.reference
        );
        println!(
            "{:<44} {:>11} {:>11} {:>12} {:>11}",
            "node", "max abs", "mean abs", "cosine", "rel L2"
        );
        for l in &r.layers_vs_reference {
            println!(
                "{:<44} {:>11.3e} {:>11.3e} {:>12.7} {:>11.3e}",
                l.node, l.error.max_abs, l.error.mean_abs, l.error.cosine, l.error.relative_l2
            );
        }
    }
    println!();
    println!("time per op kind, ms per window (one profiled window):");
    let mut ops: Vec<String> = Vec::new();
    for r in &reports {
        let mut by_time: Vec<_> = r.op_ms_per_window.iter().collect();
        by_time.sort_by(|a, b| b.1.total_cmp(a.1));
        for (op, _) in by_time {
            if !ops.contains(op) {
                ops.push(op.clone());
            }
        }
    }
    print!("{:<24}", "op");
    for r in &reports {
        print!(" {:>10}", r.backend.to_string());
    }
    println!();
    for op in &ops {
        print!("{op:<24}");
        for r in &reports {
            match r.op_ms_per_window.get(op) {
                Some(ms) => print!(" {ms:>10.2}"),
                None => print!(" {:>10}", "-"),
            }
        }
        println!();
    }
    let mut transcripts: Vec<TranscriptReport> = Vec::new();
    if args.transcribe {
        drop(encoders);
        let transcribe_options = amanuensis::transcribe::TranscribeOptions::default();
        for &backend in &backends {
            let transcriber = amanuensis::transcribe::Transcriber::load(
                &model_dir,
                &EncoderOptions {
                    backend,
                    ..options.clone()
                },
            )?;
            let t = Instant::now();
            let transcript = transcriber.transcribe(
                &input,
                &transcribe_options,
                &mut amanuensis::transcribe::Quiet,
            )?;
            let vs_reference = transcripts.first().map(|r: &TranscriptReport| {
                amanuensis::transcribe::compare_words(&r.text, &transcript.text)
            });
            transcripts.push(TranscriptReport {
                backend,
                text: transcript.text.trim().to_string(),
                seconds: t.elapsed().as_secs_f64(),
                vs_reference,
            });
        }
        println!();
        println!("transcripts (decoder on the CPU):");
        for t in &transcripts {
            println!("{} ({:.2} s): {}", t.backend, t.seconds, t.text);
            if let Some(c) = &t.vs_reference {
                println!(
                    "  against {}: {:.2}% of the words agree ({} of {}); {}",
                    args.reference,
                    c.agreement * 100.0,
                    c.common,
                    c.reference_words.max(c.words),
                    if c.differences.is_empty() {
                        "the same words".to_string()
                    } else {
                        format!("differences: {}", c.differences.join(" "))
                    }
                );
            }
        }
    }
    if let Some(path) = &args.json {
        write_json(
            path,
            &Report {
                reference: args.reference,
                audio: info.name.clone(),
                seconds,
                windows: windows.len(),
                model: model_name,
                threads: options.threads,
                backends: reports,
                transcripts,
            },
        )?;
    }
    Ok(())
}
