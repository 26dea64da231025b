//! `amanuensis transcribe` as a user runs it: segments printed as they are decoded, every
//! output format and where it goes, standard input, several inputs, options the model cannot
//! honour, and bad input. Uses the catalog's tiny.en (fetched on first use).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;

fn amanuensis() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_amanuensis"));
    c.args(["transcribe", "--threads", "2"]);
    c
}

fn jfk() -> PathBuf {
    reference("audio/jfk.flac")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// tiny.en's directory, fetched once for the whole binary.
fn model() -> String {
    catalog_model("tiny.en").display().to_string()
}

fn run(args: &[&std::ffi::OsStr]) -> Output {
    let out = amanuensis()
        .args(["--model", &model()])
        .args(args)
        .output()
        .expect("the binary runs");
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    out
}

#[test]
fn segments_are_printed_as_openai_whisper_prints_them() {
    let out = run(&[jfk().as_os_str()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "[00:00.000 --> 00:07.740]  And so my fellow Americans ask not what your country can \
         do for you\n[00:07.740 --> 00:10.740]  ask what you can do for your country\n"
    );
    // Piped, there is no progress bar; the summary names the time split.
    let err = stderr(&out);
    assert!(!err.contains('█') && !err.contains("left)"), "{err}");
    for needle in ["11.00 s of audio", "encoder", "decoder", "realtime"] {
        assert!(err.contains(needle), "{needle:?} missing from {err}");
    }
}

#[test]
fn each_format_is_written_where_asked() {
    let tmp = tempfile::tempdir().unwrap();
    // A file named with its format's extension.
    let srt = tmp.path().join("speech.srt");
    let out = run(&[jfk().as_os_str(), "-o".as_ref(), srt.as_os_str()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(&srt).unwrap(),
        "1\n00:00:00,000 --> 00:00:07,740\nAnd so my fellow Americans ask not what your country \
         can do for you\n\n2\n00:00:07,740 --> 00:00:10,740\nask what you can do for your \
         country\n\n"
    );
    // Every format into a directory, named after the input.
    let dir = tmp.path().join("all/");
    let out = run(&[
        jfk().as_os_str(),
        "--format".as_ref(),
        "all".as_ref(),
        "-o".as_ref(),
        dir.as_os_str(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["jfk.json", "jfk.srt", "jfk.tsv", "jfk.txt", "jfk.vtt"]
    );
    let vtt = std::fs::read_to_string(dir.join("jfk.vtt")).unwrap();
    assert!(
        vtt.starts_with("WEBVTT\n\n00:00.000 --> 00:07.740\nAnd so my fellow Americans"),
        "{vtt}"
    );
    let txt = std::fs::read_to_string(dir.join("jfk.txt")).unwrap();
    assert_eq!(
        txt,
        "And so my fellow Americans ask not what your country can do for you\nask what you can \
         do for your country\n"
    );
    let tsv = std::fs::read_to_string(dir.join("jfk.tsv")).unwrap();
    assert!(
        tsv.starts_with("start\tend\ttext\n0\t7740\tAnd so my"),
        "{tsv}"
    );
    // JSON to standard output.
    let out = run(&[
        jfk().as_os_str(),
        "--format".as_ref(),
        "json".as_ref(),
        "-o".as_ref(),
        "-".as_ref(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json["language"], "en");
    assert_eq!(json["backend"], "cpu");
    assert!(json["model"].as_str().unwrap().contains("tiny.en"));
    let segment = &json["segments"][0];
    for field in [
        "id",
        "start",
        "end",
        "text",
        "tokens",
        "avg_logprob",
        "compression_ratio",
        "no_speech_prob",
        "temperature",
    ] {
        assert!(
            !segment[field].is_null(),
            "segments lack {field}: {segment}"
        );
    }
    assert_eq!(segment["tokens"][0], 50363, "the first token is <|0.00|>");
    let timings = &json["timings"];
    for field in ["mel", "decoder", "total", "realtime_factor"] {
        assert!(timings[field].as_f64().unwrap() > 0.0, "{field}: {timings}");
    }
    assert_eq!(
        timings["encoder"].as_array().unwrap().len(),
        1,
        "one window"
    );
    assert!(
        timings["decoder_wait"].as_f64().unwrap() >= 0.0,
        "{timings}"
    );
    // Greedy at temperature 0 without fallback: one pass for the prompt and one for each
    // token after it, the end of text included.
    let segments = json["segments"].as_array().unwrap();
    assert!(segments.iter().all(|s| s["temperature"] == 0.0), "{json}");
    let tokens: usize = segments
        .iter()
        .map(|s| s["tokens"].as_array().unwrap().len())
        .sum();
    assert_eq!(
        timings["decoder_forwards"].as_u64().unwrap() as usize,
        tokens + 1,
        "decoder passes: {timings}"
    );
    // The segment lines went to standard error, standard output holds the JSON only.
    assert!(stderr(&out).contains("[00:00.000 --> 00:07.740]"));
}

#[test]
fn standard_input_and_several_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    let out = amanuensis()
        .args(["--model", &model(), "-", "--format", "txt", "-o", "-"])
        .stdin(Stdio::from(std::fs::File::open(jfk()).unwrap()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("And so my fellow Americans"),
        "{}",
        stdout(&out)
    );

    let copy = tmp.path().join("again.flac");
    std::fs::copy(jfk(), &copy).unwrap();
    let dir = tmp.path().join("out");
    let out = run(&[
        jfk().as_os_str(),
        copy.as_os_str(),
        "--format".as_ref(),
        "txt".as_ref(),
        "-o".as_ref(),
        dir.as_os_str(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let a = std::fs::read_to_string(dir.join("jfk.txt")).unwrap();
    let b = std::fs::read_to_string(dir.join("again.txt")).unwrap();
    assert_eq!(a, b);
}

#[test]
fn options_the_model_cannot_honour_are_refused() {
    for (args, needle) in [
        (vec!["--language", "fr"], "English-only"),
        (vec!["--task", "translate"], "cannot translate"),
        (vec!["--language", "klingon"], "unknown language"),
        (
            vec!["--best-of", "5", "--temperature-increment-on-fallback", "0"],
            "temperatures above 0",
        ),
        (vec!["--patience", "2"], "patience needs a beam size"),
        (
            vec!["--vad", "--vad-threshold", "1.5"],
            "VAD threshold is a probability",
        ),
        (
            vec!["--vad", "--vad-neg-threshold", "0.7"],
            "between 0 and the speech threshold",
        ),
        (
            vec!["--vad", "--vad-model", "Cargo.toml"],
            "Cargo.toml: not a Silero VAD model",
        ),
    ] {
        let audio = jfk();
        let mut full: Vec<&std::ffi::OsStr> = vec![audio.as_os_str()];
        full.extend(args.iter().map(std::ffi::OsStr::new));
        let out = run(&full);
        let err = stderr(&out);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "{args:?}: not one line:\n{err}"
        );
    }
}

/// A VAD option without `--vad` is a usage error (clap's, which says what is missing).
#[test]
fn vad_options_need_vad() {
    let audio = jfk();
    let out = run(&[
        audio.as_os_str(),
        "--vad-threshold".as_ref(),
        "0.3".as_ref(),
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("required arguments were not provided") && err.contains("--vad"),
        "{err}"
    );
}

/// Word timestamps from the command line: the JSON's segments carry their words (each word of
/// the text, in order, with times inside the segment's), and the options that need word
/// timestamps, a bad clip list or a negative threshold are refused with a message.
#[test]
fn word_timestamps_from_the_command_line() {
    let audio = jfk();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("jfk.json");
    let out = run(&[
        audio.as_os_str(),
        "--word-timestamps".as_ref(),
        "-o".as_ref(),
        json.as_os_str(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let t: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let mut words = Vec::new();
    for s in t["segments"].as_array().unwrap() {
        let (start, end) = (s["start"].as_f64().unwrap(), s["end"].as_f64().unwrap());
        let list = s["words"].as_array().expect("words on every segment");
        let text: String = list.iter().map(|w| w["word"].as_str().unwrap()).collect();
        assert_eq!(text, s["text"].as_str().unwrap());
        for w in list {
            let (a, b) = (w["start"].as_f64().unwrap(), w["end"].as_f64().unwrap());
            assert!(start <= a && a <= b && b <= end, "{w} in [{start}, {end}]");
            let p = w["probability"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&p), "{w}");
            words.push(w["word"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(words.len(), 22, "{words:?}");

    for (args, says) in [
        (&["--highlight-words"][..], "--word-timestamps"),
        (&["--max-line-width", "42"][..], "--word-timestamps"),
        (
            &["--hallucination-silence-threshold", "2"][..],
            "--word-timestamps",
        ),
        (&["--word-timestamps", "--max-line-width", "0"][..], "0"),
        (
            &["--clip-timestamps", "1,abc"][..],
            "\"abc\" is not a number of seconds",
        ),
        (&["--clip-timestamps", "-1"][..], "seconds from 0"),
        (
            &[
                "--word-timestamps",
                "--hallucination-silence-threshold",
                "-2",
            ][..],
            "seconds from 0",
        ),
        (&["--clip-timestamps", "1,5", "--vad"][..], "without --vad"),
    ] {
        let mut all: Vec<&std::ffi::OsStr> = vec![audio.as_os_str()];
        all.extend(args.iter().map(|a| std::ffi::OsStr::new(*a)));
        let out = run(&all);
        assert!(!out.status.success(), "{args:?} was accepted");
        let err = stderr(&out);
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// A bad input fails with one line that names it and the problem, and leaves no output.
fn assert_refused(input: &Path, problem: &str) {
    let out_dir = tempfile::tempdir().unwrap();
    let txt = out_dir.path().join("out.txt");
    let out = run(&[input.as_os_str(), "-o".as_ref(), txt.as_os_str()]);
    assert_refused_cleanly(&out, input, problem, out_dir.path());
}

#[test]
fn bad_inputs_fail_with_one_clear_line_and_no_output() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    assert_refused(&dir.join("missing.wav"), "No such file");
    std::fs::write(dir.join("notes.wav"), b"these are words, not audio\n").unwrap();
    assert_refused(&dir.join("notes.wav"), "not a recognised audio file");
    let flac = std::fs::read(data.join("speech-44k1-stereo-s24.flac")).unwrap();
    std::fs::write(dir.join("cut.flac"), &flac[..flac.len() / 2]).unwrap();
    assert_refused(&dir.join("cut.flac"), "truncated");
    write_wav_f32(&dir.join("silence0.wav"), 16_000, &[]);
    assert_refused(&dir.join("silence0.wav"), "no audio samples");
}

/// A tenth of a second is an empty transcript, not an error.
#[test]
fn a_tenth_of_a_second_is_an_empty_transcript() {
    let tmp = tempfile::tempdir().unwrap();
    let short = tmp.path().join("short.wav");
    let mut rng = Rng(3);
    write_wav_f32(&short, 16_000, &rng.vec(1_600, 0.1));
    let json = tmp.path().join("short.json");
    let out = run(&[short.as_os_str(), "-o".as_ref(), json.as_os_str()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(json["text"], "");
    assert_eq!(json["segments"].as_array().unwrap().len(), 0);
}

/// `compare --transcribe`: each backend's text and its words against the reference backend's.
#[test]
fn compare_transcribes_on_each_backend_and_compares_the_words() {
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("cmp.json");
    let out = Command::new(env!("CARGO_BIN_EXE_amanuensis"))
        .args([
            "compare",
            "--threads",
            "2",
            "--transcribe",
            "--model",
            &model(),
        ])
        .arg(jfk())
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("emu (") && text.contains("against cpu: 100.00% of the words agree"),
        "{text}"
    );
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let transcripts = report["transcripts"].as_array().unwrap();
    assert_eq!(transcripts.len(), 2);
    assert_eq!(transcripts[1]["backend"], "emu");
    assert_eq!(transcripts[1]["vs_reference"]["agreement"], 1.0);
    assert!(
        transcripts[0]["text"]
            .as_str()
            .unwrap()
            .starts_with("And so my fellow")
    );
}

/// A model directory without a decoder, or without a tokenizer, is refused with a message that
/// names what is missing and how to get it, before any audio is decoded.
#[test]
fn a_model_without_decoder_or_tokenizer_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let full = catalog_model("tiny.en");
    let encoder_only = tmp.path().join("encoder-only");
    std::fs::create_dir(&encoder_only).unwrap();
    for file in ["encoder_model.onnx", "config.json", "tokenizer.json"] {
        std::fs::copy(full.join(file), encoder_only.join(file)).unwrap();
    }
    let no_tokenizer = tmp.path().join("no-tokenizer");
    std::fs::create_dir(&no_tokenizer).unwrap();
    for file in [
        "encoder_model.onnx",
        "cross_kv_model.onnx",
        "decoder_with_past_model.onnx",
        "config.json",
    ] {
        std::fs::copy(full.join(file), no_tokenizer.join(file)).unwrap();
    }
    for (dir, needle) in [
        (&encoder_only, "no decoder found"),
        (&no_tokenizer, "tokenizer.json is missing"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_amanuensis"))
            .args(["transcribe", "--model"])
            .arg(dir)
            .arg(jfk())
            .output()
            .unwrap();
        let err = stderr(&out);
        assert!(!out.status.success(), "{} was accepted", dir.display());
        assert!(
            err.contains(needle) && err.contains(&*dir.display().to_string()),
            "{err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "not one line:\n{err}");
    }
}

/// Best-of ranks draws at the temperatures above 0, as openai-whisper's fallback applies it:
/// `--temperature 0.2 --best-of 5` decodes every window from five draws at 0.2, and
/// openai-whisper's own defaults (beam size 5 and best-of 5 together) run beam search at 0.
#[test]
fn best_of_applies_to_the_temperatures_above_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("sampled.json");
    let out = run(&[
        jfk().as_os_str(),
        "--temperature".as_ref(),
        "0.2".as_ref(),
        "--best-of".as_ref(),
        "5".as_ref(),
        "-o".as_ref(),
        json.as_os_str(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let segments = v["segments"].as_array().unwrap();
    assert!(!segments.is_empty());
    for s in segments {
        let t = s["temperature"].as_f64().unwrap();
        assert!(t >= 0.2 - 1e-6, "a window decoded at {t}: {s}");
    }
    let text = v["text"].as_str().unwrap().to_lowercase();
    assert!(text.contains("country"), "{text}");

    let out = run(&[
        jfk().as_os_str(),
        "--beam-size".as_ref(),
        "5".as_ref(),
        "--best-of".as_ref(),
        "5".as_ref(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("ask what you can do for your country"));
}

/// Inputs that would write files of one name into one directory (`a/speech.flac` and
/// `b/speech.flac`) are refused before any work, naming both; nothing is written.
#[test]
fn inputs_that_would_overwrite_each_other_are_refused_first() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    for dir in [&a, &b] {
        std::fs::create_dir(dir).unwrap();
        std::fs::copy(jfk(), dir.join("speech.flac")).unwrap();
    }
    let out_dir = tmp.path().join("out/");
    // No model is loaded (or fetched) first: a model that does not exist is never reached.
    let out = Command::new(env!("CARGO_BIN_EXE_amanuensis"))
        .args(["transcribe", "--model", "/nonexistent/model.onnx"])
        .arg(a.join("speech.flac"))
        .arg(b.join("speech.flac"))
        .arg("-o")
        .arg(&out_dir)
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(!out.status.success(), "accepted");
    assert!(
        err.contains(&*a.join("speech.flac").display().to_string())
            && err.contains(&*b.join("speech.flac").display().to_string())
            && err.contains("different directories"),
        "{err}"
    );
    assert!(!out_dir.exists(), "something was written");
}

/// The default model is English-only, and the help says so where the model is chosen.
#[test]
fn the_help_says_the_default_model_is_english_only() {
    let out = Command::new(env!("CARGO_BIN_EXE_amanuensis"))
        .args(["transcribe", "--help"])
        .output()
        .unwrap();
    let help = stdout(&out)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        help.contains("The default, tiny.en, is English-only"),
        "{help}"
    );
}
