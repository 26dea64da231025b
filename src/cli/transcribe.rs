use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use amanuensis::audio::AudioStream;
use amanuensis::backend::Backend;
use amanuensis::model::WeightPrecision;
use amanuensis::transcribe::output::{Format, JsonContext, SubtitleOptions, render, segment_line};
use amanuensis::transcribe::timing::{APPEND_PUNCTUATIONS, PREPEND_PUNCTUATIONS};
use amanuensis::transcribe::{
    DecodingOptions, LanguageDetection, Progress, Segment, SuppressTokens, Task, TranscribeOptions,
    Transcriber, WordOptions,
};
use amanuensis::vad::{SileroVad, VadOptions};

use super::PlanArgs;

/// Transcribe speech to text with Whisper.
///
/// Each input is decoded and resampled, its whole log-mel spectrogram computed, and the
/// encoder (on the chosen backend) and the decoder (on the CPU) run over it as
/// openai-whisper's `transcribe()` does: 30 s windows from the last complete timestamp,
/// temperature fallback, silence skipped, the previous text as the next window's prompt.
/// Segments are printed as they are decoded; files are written only once complete.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    amanuensis transcribe talk.flac\n  \
    amanuensis transcribe talk.mp3 --model base --language fr -o talk.srt\n  \
    amanuensis transcribe a.wav b.m4a --format all -o transcripts/\n  \
    cat talk.ogg | amanuensis transcribe - --format json -o -")]
pub struct TranscribeArgs {
    /// Audio files to transcribe, `-` for standard input.
    #[arg(value_name = "AUDIO", required = true)]
    audio: Vec<PathBuf>,

    #[command(flatten)]
    plan: PlanArgs,

    /// Where the encoder runs (the decoder runs on the CPU).
    #[arg(long, value_parser = super::named::<Backend>(Backend::NAMES), default_value_t = Backend::Cpu)]
    backend: Backend,

    /// Output format; `all` writes txt, vtt, srt, tsv and json. Default: from the extension of
    /// `-o`, else txt printed as segments only.
    #[arg(short, long, value_name = "FORMAT")]
    format: Option<FormatArg>,

    /// Output: a file (one input, one format), `-` for standard output, or a directory (or a
    /// path ending in `/`) where each input gives `<name>.<format>`. Without it, with
    /// `--format`, files are written in the current directory.
    #[arg(short, long, value_name = "OUT")]
    output: Option<PathBuf>,

    /// Language spoken (code or English name); detected from the first 30 s when not given
    /// (multilingual models; English-only models are English).
    #[arg(long, value_name = "LANG")]
    language: Option<String>,

    /// What the language is detected on: `window`, the first window as it is transcribed
    /// (its encoding then reused), or `openai`, openai-whisper's 30 s of the audio followed by
    /// zeros (one more encoder run for inputs under 30 s; its probabilities exactly).
    #[arg(
        long,
        value_name = "ON",
        value_parser = super::named::<LanguageDetection>(LanguageDetection::NAMES),
        default_value_t = LanguageDetection::Window
    )]
    language_detection: LanguageDetection,

    /// Transcribe, or translate into English (multilingual models).
    #[arg(long, value_parser = super::named::<Task>(Task::NAMES), default_value_t = Task::Transcribe)]
    task: Task,

    /// Beam search with N beams at temperature 0 (default: greedy).
    #[arg(long, value_name = "N")]
    beam_size: Option<usize>,

    /// Draws ranked at temperatures above 0 (default: one).
    #[arg(long, value_name = "N")]
    best_of: Option<usize>,

    /// Beam search's patience (arXiv:2204.05424).
    #[arg(long, value_name = "P")]
    patience: Option<f32>,

    /// Length penalty alpha of Google NMT for ranking (default: divide by the length).
    #[arg(long, value_name = "ALPHA")]
    length_penalty: Option<f32>,

    /// First temperature.
    #[arg(long, value_name = "T", default_value_t = 0.0)]
    temperature: f32,

    /// Temperature step of the fallback, up to 1.0; `0` disables the fallback.
    #[arg(long, value_name = "STEP", default_value_t = 0.2)]
    temperature_increment_on_fallback: f32,

    /// A window whose text compresses better than this is decoded again hotter.
    #[arg(long, value_name = "RATIO", default_value_t = 2.4)]
    compression_ratio_threshold: f64,

    /// A window whose average log probability is below this is decoded again hotter.
    #[arg(long, value_name = "LOGPROB", default_value_t = -1.0, allow_negative_numbers = true)]
    logprob_threshold: f64,

    /// A window is silence when `<|nospeech|>` is more likely than this and its text
    /// improbable.
    #[arg(long, value_name = "P", default_value_t = 0.6)]
    no_speech_threshold: f64,

    /// Decode each window on its own, without the previous text as prompt.
    #[arg(long)]
    no_condition_on_previous_text: bool,

    /// Text that prompts the first window (names, spellings, style).
    #[arg(long, value_name = "TEXT")]
    initial_prompt: Option<String>,

    /// Prompt every window with the initial prompt.
    #[arg(long)]
    carry_initial_prompt: bool,

    /// Token ids never written, comma-separated; -1 stands for the non-speech symbols.
    #[arg(
        long,
        value_name = "IDS",
        default_value = "-1",
        allow_hyphen_values = true
    )]
    suppress_tokens: SuppressTokens,

    /// Text only, without timestamp tokens (one segment a window).
    #[arg(long)]
    without_timestamps: bool,

    /// The latest first timestamp of a window, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0)]
    max_initial_timestamp: f32,

    /// Seed of the draws at temperatures above 0.
    #[arg(long, value_name = "N", default_value_t = 0)]
    seed: u64,

    /// Transcribe only the speech that Silero VAD finds (faster-whisper's `vad_filter`; its
    /// model is fetched from PyPI the first time, 1.2 MB); times stay those of the input.
    #[arg(long)]
    vad: bool,

    /// How the decoder holds its weights: f32 (as the model has them), bf16 (half the bytes)
    /// or int8 (a scale an output channel, a quarter of the bytes). The decoder waits on
    /// reading its weights: lighter weights decode faster, at a small cost in accuracy.
    #[arg(
        long,
        value_name = "P",
        value_parser = super::named::<WeightPrecision>(WeightPrecision::NAMES),
        default_value_t = WeightPrecision::F32
    )]
    decoder_precision: WeightPrecision,

    /// Transcribe as faster-whisper's batched pipeline: the speech VAD finds, cut into windows
    /// of up to 30 s, N windows decoded together (faster on long audio). Greedy at the first
    /// temperature, no fallback, no previous text as prompt; pauses of 160 ms split speech
    /// unless --vad options say otherwise.
    #[arg(long, value_name = "N")]
    batch_size: Option<usize>,

    /// VAD: a frame this likely to be speech starts speech.
    #[arg(long, value_name = "P", default_value_t = 0.5, requires = "vad")]
    vad_threshold: f32,

    /// VAD: speech ends where the probability stays below this (default: threshold - 0.15).
    #[arg(long, value_name = "P", requires = "vad")]
    vad_neg_threshold: Option<f32>,

    /// VAD: speech this short or shorter is dropped.
    #[arg(long, value_name = "MS", default_value_t = 0, requires = "vad")]
    vad_min_speech_ms: u32,

    /// VAD: speech longer than this is cut (at its last pause if it has one).
    #[arg(long, value_name = "SECONDS", requires = "vad")]
    vad_max_speech_s: Option<f64>,

    /// VAD: a pause shorter than this does not end speech.
    #[arg(long, value_name = "MS", default_value_t = 2000, requires = "vad")]
    vad_min_silence_ms: u32,

    /// VAD: audio kept on each side of speech.
    #[arg(long, value_name = "MS", default_value_t = 400, requires = "vad")]
    vad_speech_pad_ms: u32,

    /// VAD: this model file instead of the cached one (faster-whisper's silero_vad_v6.onnx).
    #[arg(long, value_name = "FILE", requires = "vad")]
    vad_model: Option<PathBuf>,

    /// Word-level timestamps (openai-whisper's `--word_timestamps`): each segment's words with
    /// their start, end and probability, from the decoder's cross-attention, in the JSON and
    /// the subtitles; segment times then follow the words.
    #[arg(long)]
    word_timestamps: bool,

    /// Word timestamps: punctuation merged into the word that follows it.
    #[arg(long, value_name = "CHARS", default_value = PREPEND_PUNCTUATIONS, requires = "word_timestamps")]
    prepend_punctuations: String,

    /// Word timestamps: punctuation merged into the word before it.
    #[arg(long, value_name = "CHARS", default_value = APPEND_PUNCTUATIONS, requires = "word_timestamps")]
    append_punctuations: String,

    /// Subtitles: underline each word as it is spoken (srt, vtt).
    #[arg(long, requires = "word_timestamps")]
    highlight_words: bool,

    /// Subtitles: characters in a line before it is broken.
    #[arg(long, value_name = "N", requires = "word_timestamps", value_parser = clap::value_parser!(u32).range(1..))]
    max_line_width: Option<u32>,

    /// Subtitles: lines in a cue (with --max-line-width).
    #[arg(long, value_name = "N", requires = "word_timestamps", value_parser = clap::value_parser!(u32).range(1..))]
    max_line_count: Option<u32>,

    /// Subtitles: words in a cue (no effect with --max-line-width).
    #[arg(long, value_name = "N", requires = "word_timestamps", value_parser = clap::value_parser!(u32).range(1..))]
    max_words_per_line: Option<u32>,

    /// Skip silences longer than this (seconds) before segments whose words look like a
    /// hallucination (openai-whisper's `--hallucination_silence_threshold`).
    #[arg(
        long,
        value_name = "SECONDS",
        requires = "word_timestamps",
        allow_negative_numbers = true
    )]
    hallucination_silence_threshold: Option<f64>,

    /// Transcribe only these parts: `start,end,start,end,...` in seconds, the last end the
    /// input's end when missing (openai-whisper's `--clip_timestamps`).
    #[arg(long, value_name = "LIST", value_parser = parse_clips, allow_hyphen_values = true)]
    clip_timestamps: Option<Clips>,

    /// Print no segments and no progress.
    #[arg(short, long)]
    quiet: bool,
}

/// Seconds of `--clip-timestamps`.
#[derive(Debug, Clone)]
struct Clips(Vec<f64>);

fn parse_clips(text: &str) -> Result<Clips, String> {
    if text.trim().is_empty() {
        return Ok(Clips(Vec::new()));
    }
    text.split(',')
        .map(|t| {
            t.trim().parse::<f64>().map_err(|_| {
                format!(
                    "{t:?} is not a number of seconds: give start,end,start,end,... such as 10,20.5"
                )
            })
        })
        .collect::<Result<_, _>>()
        .map(Clips)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum FormatArg {
    Txt,
    Srt,
    Vtt,
    Tsv,
    Json,
    All,
}

impl FormatArg {
    fn formats(self) -> Vec<Format> {
        match self {
            FormatArg::Txt => vec![Format::Txt],
            FormatArg::Srt => vec![Format::Srt],
            FormatArg::Vtt => vec![Format::Vtt],
            FormatArg::Tsv => vec![Format::Tsv],
            FormatArg::Json => vec![Format::Json],
            FormatArg::All => Format::ALL.to_vec(),
        }
    }
}

/// Where each format of each input goes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// Segment lines only.
    None,
    /// Standard output (one input, one format).
    Stdout(Format),
    /// This file (one input, one format).
    File(PathBuf, Format),
    /// `<dir>/<input stem>.<ext>` for each format.
    Dir(PathBuf, Vec<Format>),
}

fn target(args: &TranscribeArgs) -> Result<Target> {
    let single = args.audio.len() == 1;
    let formats = args.format.map(FormatArg::formats);
    let Some(out) = &args.output else {
        return Ok(match formats {
            None => Target::None,
            Some(f) => {
                check_distinct_names(&args.audio, Path::new("."))?;
                Target::Dir(PathBuf::from("."), f)
            }
        });
    };
    if out.as_os_str() == "-" {
        let formats = formats.unwrap_or(vec![Format::Txt]);
        if !single || formats.len() != 1 {
            bail!("-o - writes one format of one input to standard output");
        }
        return Ok(Target::Stdout(formats[0]));
    }
    let is_dir = out.is_dir() || out.as_os_str().to_string_lossy().ends_with('/');
    let from_ext = out
        .extension()
        .and_then(|e| e.to_str())
        .and_then(Format::from_extension);
    if !is_dir && single {
        match (formats.as_deref(), from_ext) {
            (Some([f]), _) => return Ok(Target::File(out.clone(), *f)),
            (None, Some(f)) => return Ok(Target::File(out.clone(), f)),
            (None, None) => {
                bail!(
                    "{}: give --format, or an output name ending in .txt, .srt, .vtt, .tsv or \
                     .json, or a directory (ending in /)",
                    out.display()
                )
            }
            _ => {}
        }
    }
    if !is_dir && from_ext.is_some() {
        bail!(
            "{} names one file, but {} would be written: give a directory (ending in /)",
            out.display(),
            if single {
                "several formats".to_string()
            } else {
                format!("{} inputs", args.audio.len())
            }
        );
    }
    check_distinct_names(&args.audio, out)?;
    Ok(Target::Dir(
        out.clone(),
        formats.unwrap_or_else(|| Format::ALL.to_vec()),
    ))
}

/// Refuses inputs that would write files of the same name into `dir` (`a/x.wav` and
/// `b/x.mp3` both give `x.txt`), before any work is done.
fn check_distinct_names(inputs: &[PathBuf], dir: &Path) -> Result<()> {
    let mut seen: std::collections::HashMap<String, &PathBuf> = std::collections::HashMap::new();
    for input in inputs {
        if let Some(first) = seen.insert(stem(input), input) {
            bail!(
                "{} and {} would both be written as {}.*: transcribe them into different \
                 directories, or rename one",
                first.display(),
                input.display(),
                dir.join(stem(input)).display()
            );
        }
    }
    Ok(())
}

/// The name files are given after an input: its stem, `stdin` for standard input.
fn stem(input: &Path) -> String {
    if input.as_os_str() == "-" {
        return "stdin".into();
    }
    input
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "transcript".into())
}

/// Writes `text` to `path`, whole or not at all ([`amanuensis::atomic`]), creating its
/// directory.
fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let dir = amanuensis::atomic::parent_dir(path);
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    amanuensis::atomic::write_file(path, |w| w.write_all(text.as_bytes()))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Segment lines and a progress bar over audio time.
struct Console {
    bar: Option<ProgressBar>,
    /// Segment lines go to standard error (standard output holds the transcript).
    to_stderr: bool,
    quiet: bool,
    total: usize,
}

impl Console {
    fn print(&self, line: &str) {
        let emit = || {
            if self.to_stderr {
                eprintln!("{line}");
            } else {
                println!("{line}");
            }
        };
        match &self.bar {
            Some(bar) => bar.suspend(emit),
            None => emit(),
        }
    }
}

impl Progress for Console {
    fn language(&mut self, code: &str, p: f64) {
        if !self.quiet {
            let line = format!(
                "Detected language: {} ({:.0}%)",
                amanuensis::transcribe::languages::language_name(code),
                p * 100.0
            );
            match &self.bar {
                Some(bar) => bar.suspend(|| eprintln!("{line}")),
                None => eprintln!("{line}"),
            }
        }
    }

    fn segment(&mut self, segment: &Segment) {
        if !self.quiet {
            self.print(&segment_line(segment));
        }
    }

    fn position(&mut self, done: usize, total: usize) {
        if self.quiet || !std::io::stderr().is_terminal() {
            return;
        }
        let bar = self.bar.get_or_insert_with(|| {
            let bar = ProgressBar::new(total as u64);
            bar.set_style(
                ProgressStyle::with_template("{bar:40} {msg} ({elapsed}, {eta} left)")
                    .expect("valid template"),
            );
            bar
        });
        self.total = total;
        bar.set_position(done as u64);
        bar.set_message(format!(
            "{} / {}",
            amanuensis::transcribe::output::format_timestamp(done as f64 / 100.0, false, '.'),
            amanuensis::transcribe::output::format_timestamp(total as f64 / 100.0, false, '.')
        ));
    }

    fn note(&mut self, message: &str) {
        if !self.quiet {
            match &self.bar {
                Some(bar) => bar.suspend(|| eprintln!("{message}")),
                None => eprintln!("{message}"),
            }
        }
    }
}

fn options(args: &TranscribeArgs) -> Result<TranscribeOptions> {
    let mut temperatures = vec![args.temperature];
    let step = args.temperature_increment_on_fallback;
    anyhow::ensure!(
        args.temperature >= 0.0 && step >= 0.0,
        "temperatures and their step must not be negative"
    );
    if step > 0.0 {
        // OpenAI's np.arange(temperature, 1.0 + 1e-6, step).
        for i in 1.. {
            let t = args.temperature as f64 + i as f64 * step as f64;
            if t > 1.0 + 1e-6 {
                break;
            }
            temperatures.push(t as f32);
        }
    }
    Ok(TranscribeOptions {
        decoding: DecodingOptions {
            task: args.task,
            language: args.language.clone(),
            beam_size: args.beam_size,
            best_of: args.best_of,
            patience: args.patience,
            length_penalty: args.length_penalty,
            suppress_tokens: args.suppress_tokens.clone(),
            without_timestamps: args.without_timestamps,
            max_initial_timestamp: Some(args.max_initial_timestamp),
            ..DecodingOptions::default()
        },
        temperatures,
        compression_ratio_threshold: Some(args.compression_ratio_threshold),
        logprob_threshold: Some(args.logprob_threshold),
        no_speech_threshold: Some(args.no_speech_threshold),
        condition_on_previous_text: !args.no_condition_on_previous_text,
        initial_prompt: args.initial_prompt.clone(),
        carry_initial_prompt: args.carry_initial_prompt,
        seed: args.seed,
        language_detection: args.language_detection,
        vad: args.vad.then(|| VadOptions {
            threshold: args.vad_threshold,
            neg_threshold: args.vad_neg_threshold,
            min_speech_duration_ms: args.vad_min_speech_ms,
            max_speech_duration_s: args.vad_max_speech_s.unwrap_or(f64::INFINITY),
            min_silence_duration_ms: args.vad_min_silence_ms,
            speech_pad_ms: args.vad_speech_pad_ms,
        }),
        batch_size: args.batch_size,
        word_timestamps: args.word_timestamps.then(|| WordOptions {
            prepend_punctuations: args.prepend_punctuations.clone(),
            append_punctuations: args.append_punctuations.clone(),
            hallucination_silence_threshold: args.hallucination_silence_threshold,
        }),
        clip_timestamps: args
            .clip_timestamps
            .as_ref()
            .map(|c| c.0.clone())
            .unwrap_or_default(),
    })
}

pub fn run(args: TranscribeArgs) -> Result<()> {
    let target = target(&args)?;
    let transcribe_options = options(&args)?;
    transcribe_options.verify().map_err(anyhow::Error::msg)?;
    let stdin_inputs = args.audio.iter().filter(|a| a.as_os_str() == "-").count();
    anyhow::ensure!(
        stdin_inputs <= 1,
        "standard input (-) can be read only once"
    );
    // Every input is opened before the model is loaded (or fetched): a missing or unreadable
    // file fails first.
    let mut unreadable = Vec::new();
    for audio in args.audio.iter().filter(|a| a.as_os_str() != "-") {
        if let Err(err) = AudioStream::open(&super::input(audio)) {
            unreadable.push(err.to_string());
        }
    }
    match unreadable.len() {
        0 => {}
        1 => bail!("{}", unreadable[0]),
        n => {
            for err in &unreadable {
                eprintln!("error: {err}");
            }
            bail!("{n} inputs cannot be read; nothing was transcribed")
        }
    }

    let mut encoder_options = args.plan.options(args.backend)?;
    encoder_options.decoder_weights = args.decoder_precision;
    let model_dir = args.plan.model_dir()?;
    let transcriber = Transcriber::load(&model_dir, &encoder_options)?;
    if let Some(note) = &transcriber.encoder().backend().note {
        eprintln!("{note}");
    }
    transcriber.check_options(&transcribe_options)?;
    if args.vad || args.batch_size.is_some() {
        let vad = match &args.vad_model {
            Some(path) => SileroVad::load(path)?,
            None => SileroVad::fetch(&mut |m| eprintln!("{m}"))?,
        };
        transcriber.set_vad(vad)?;
    }
    let backend = transcriber.encoder().backend().backend.to_string();
    let model_name = args.plan.model.clone();
    let subtitles = SubtitleOptions {
        highlight_words: args.highlight_words,
        max_line_width: args.max_line_width.map(|n| n as usize),
        max_line_count: args.max_line_count.map(|n| n as usize),
        max_words_per_line: args.max_words_per_line.map(|n| n as usize),
    };

    let mut failures = Vec::new();
    for audio in &args.audio {
        let input = super::input(audio);
        let mut console = Console {
            bar: None,
            to_stderr: matches!(target, Target::Stdout(_)),
            quiet: args.quiet,
            total: 0,
        };
        let result = transcriber.transcribe(&input, &transcribe_options, &mut console);
        if let Some(bar) = console.bar.take() {
            bar.finish_and_clear();
        }
        let transcript = match result {
            Ok(t) => t,
            Err(err) if args.audio.len() == 1 => return Err(err.into()),
            Err(err) => {
                eprintln!("error: {err:#}");
                failures.push(audio.display().to_string());
                continue;
            }
        };
        let name = input.name();
        let context = JsonContext {
            audio: &name,
            model: &model_name,
            backend: &backend,
        };
        let written = match &target {
            Target::None => Ok(()),
            Target::Stdout(format) => {
                let mut stdout = std::io::stdout().lock();
                stdout
                    .write_all(render(&transcript, *format, &context, &subtitles).as_bytes())
                    .and_then(|_| stdout.flush())
                    .context("cannot write to standard output")
            }
            Target::File(path, format) => {
                write_atomic(path, &render(&transcript, *format, &context, &subtitles))
            }
            Target::Dir(dir, formats) => formats.iter().try_for_each(|format| {
                let path = dir.join(format!("{}.{}", stem(audio), format.extension()));
                write_atomic(&path, &render(&transcript, *format, &context, &subtitles))
            }),
        };
        if let Err(err) = written {
            if args.audio.len() == 1 {
                return Err(err);
            }
            eprintln!("error: {err:#}");
            failures.push(audio.display().to_string());
            continue;
        }
        if !args.quiet {
            let t = &transcript.timings;
            let encoder: f64 = t.encoder.iter().sum();
            eprintln!(
                "{name}: {:.2} s of audio, language {}, {} segment(s) in {:.2} s, {:.1}x realtime \
                 (audio and log-mel {:.2} s, encoder {:.2} s in {} window(s) on {backend}, \
                 decoder {:.2} s on the CPU in {} passes{}); model loaded in {:.2} s",
                transcript.duration,
                transcript.language,
                transcript.segments.len(),
                t.total,
                t.realtime_factor,
                t.mel,
                encoder,
                t.encoder.len(),
                t.decoder,
                t.decoder_forwards,
                if t.decoder_wait >= 0.005 {
                    format!(", {:.2} s waiting for its loading", t.decoder_wait)
                } else {
                    String::new()
                },
                t.load
            );
        }
    }
    if !failures.is_empty() {
        bail!(
            "{} of {} input(s) failed: {}",
            failures.len(),
            args.audio.len(),
            failures.join(", ")
        );
    }
    Ok(())
}
