//! `amanuensis serve` driven by the clients people use: OpenAI's official Python client
//! (`openai` from PyPI) on every response format of both routes, streaming and errors; the
//! web page at `/` in headless Chromium through selenium, a file and a microphone recording.
//! The texts are compared with `amanuensis transcribe`'s output on the same file.
//!
//! Needs python3 with pip (the clients of `tests/clients/requirements.txt` are installed into
//! the target directory on first use) and, for the page, Debian's `chromium` and
//! `chromium-driver`.

mod common;
#[path = "common/pip.rs"]
mod pip;
#[path = "common/server.rs"]
mod server;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use server::{Server, cli_output};

/// A directory holding the pinned clients, for `PYTHONPATH`: installed with pip on first use
/// (again when the requirements change).
fn python_clients() -> PathBuf {
    static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let requirements = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/requirements.txt");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("python-clients");
    pip::installed_once(&dir, &requirements, |dir| {
        pip::run(
            "installing the test clients of tests/clients/requirements.txt with pip (needs \
             python3 with pip, python3-pip on Debian, and PyPI)",
            pip::install("python3")
                .arg("--target")
                .arg(dir)
                .arg("-r")
                .arg(&requirements),
        );
    })
}

/// Runs a client script of `tests/clients` with `args`; its JSON output.
fn run_client(script: &str, args: &[&std::ffi::OsStr]) -> serde_json::Value {
    let clients = python_clients();
    let out_dir = tempfile::tempdir().unwrap();
    let out_file = out_dir.path().join("out.json");
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(script);
    let status = Command::new("python3")
        .arg(&script)
        .args(args)
        .arg(&out_file)
        .env("PYTHONPATH", &clients)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .status()
        .expect("python3 runs");
    assert!(status.success(), "{} failed: {status}", script.display());
    let text = std::fs::read_to_string(&out_file).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// The official client: every format of both routes equal to the command's output, the
/// streamed events, and OpenAI's errors raised as the client's own exception classes.
#[test]
fn openai_client_every_format_and_route() {
    let tiny = catalog_model("tiny.en");
    let base = catalog_model("base");
    let jfk = reference("audio/jfk.flac");
    let server = Server::start_with(&[tiny.clone(), base.clone()], &["--api-key", "k3y"]);
    let found = run_client(
        "openai_client.py",
        &[
            server.url.as_ref(),
            "k3y".as_ref(),
            jfk.as_os_str(),
            "whisper-1".as_ref(),
            base.as_os_str(),
        ],
    );
    assert_eq!(found["backend"], "cpu");

    for (route, model, extra) in [
        ("transcriptions", &tiny, &[][..]),
        ("translations", &base, &["--task", "translate"][..]),
    ] {
        let got = &found[route];
        let cli = |format: &str, more: &[&str]| {
            let args: Vec<&str> = extra.iter().chain(more).copied().collect();
            cli_output(model, &jfk, format, &args)
        };
        let cli_json = json(&cli("json", &[]));
        let text = cli_json["text"].as_str().unwrap().trim();
        assert_eq!(got["json"]["text"], text, "{route}");
        assert_eq!(got["text"].as_str().unwrap().trim(), text, "{route}");
        assert_eq!(got["srt"], cli("srt", &[]).as_str(), "{route}");
        assert_eq!(got["vtt"], cli("vtt", &[]).as_str(), "{route}");
        let verbose = &got["verbose_json"];
        assert_eq!(verbose["text"], text, "{route}");
        assert_eq!(verbose["language"], "english", "{route}");
        assert_eq!(verbose["duration"], 11.0, "{route}");
        // Word times were asked for on transcriptions (timestamp_granularities), and they
        // move segment ends: as the command's with --word-timestamps.
        let cli_verbose = if route == "transcriptions" {
            json(&cli("json", &["--word-timestamps"]))
        } else {
            cli_json.clone()
        };
        let segments = verbose["segments"].as_array().unwrap();
        let cli_segments = cli_verbose["segments"].as_array().unwrap();
        assert_eq!(segments.len(), cli_segments.len(), "{route}");
        for (a, b) in segments.iter().zip(cli_segments) {
            for key in [
                "id",
                "seek",
                "start",
                "end",
                "text",
                "tokens",
                "temperature",
            ] {
                assert_eq!(a[key], b[key], "{route} {key}");
            }
        }
        if route == "transcriptions" {
            let cli_words: Vec<serde_json::Value> = cli_verbose["segments"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|s| s["words"].as_array().unwrap().clone())
                .collect();
            let words = verbose["words"].as_array().unwrap();
            assert_eq!(words.len(), cli_words.len());
            for (a, b) in words.iter().zip(&cli_words) {
                assert_eq!(a["word"], b["word"].as_str().unwrap().trim());
                assert_eq!((&a["start"], &a["end"]), (&b["start"], &b["end"]));
            }
        }
    }

    // Streamed, as the client parses OpenAI's events.
    let events = found["stream"].as_array().unwrap();
    let (done, deltas) = events.split_last().unwrap();
    assert_eq!(done["type"], "transcript.text.done");
    assert_eq!(done["text"], found["transcriptions"]["json"]["text"]);
    let joined: String = deltas
        .iter()
        .map(|e| {
            assert_eq!(e["type"], "transcript.text.delta");
            e["delta"].as_str().unwrap()
        })
        .collect();
    assert_eq!(joined.trim(), done["text"].as_str().unwrap());

    // Errors: the client's exception class, status and message.
    let errors = &found["errors"];
    for (case, class, status, says) in [
        ("unknown_model", "NotFoundError", 404, "large-v9"),
        ("bad_format", "BadRequestError", 400, "docx"),
        ("not_audio", "BadRequestError", 400, "notes.txt"),
        ("wrong_key", "AuthenticationError", 401, "incorrect API key"),
    ] {
        let e = &errors[case];
        assert_eq!(e["class"], class, "{case}: {e}");
        assert_eq!(e["status"], status, "{case}: {e}");
        assert!(e["message"].as_str().unwrap().contains(says), "{case}: {e}");
    }
    let models: Vec<&str> = found["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    assert!(
        models.contains(&"whisper-1") && models.contains(&"large-v3"),
        "{models:?}"
    );
    assert!(server.leftovers().is_empty(), "{:?}", server.leftovers());
    assert!(server.stop().success());
}

/// The page in headless Chromium: jfk picked in the file field, its segments read off the
/// page with their times and its four downloads, all as `amanuensis transcribe` writes them;
/// then a recording from the microphone (Chromium's fake device playing jfk) transcribed to
/// the same words. The screenshot is kept in the target directory.
#[test]
fn web_page_in_headless_chromium() {
    let chromium = std::env::var("AMANUENSIS_CHROMIUM").unwrap_or("/usr/bin/chromium".into());
    let driver = std::env::var("AMANUENSIS_CHROMEDRIVER").unwrap_or("/usr/bin/chromedriver".into());
    for program in [&chromium, &driver] {
        assert!(
            Path::new(program).exists(),
            "{program} is missing: the page's test needs Chromium and its driver (Debian: \
             apt install chromium chromium-driver; or set AMANUENSIS_CHROMIUM and \
             AMANUENSIS_CHROMEDRIVER)"
        );
    }
    let tiny = catalog_model("tiny.en");
    let jfk = reference("audio/jfk.flac");
    let dir = tempfile::tempdir().unwrap();
    // The microphone's sound: jfk as 16-bit PCM, which Chromium's fake device plays.
    let mic = dir.path().join("mic.wav");
    {
        let (samples, _) =
            amanuensis::audio::load_audio(&amanuensis::audio::Input::Path(jfk.clone())).unwrap();
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 16000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(&mic, spec).unwrap();
        for s in samples {
            w.write_sample((s * 32767.0).round().clamp(-32768.0, 32767.0) as i16)
                .unwrap();
        }
        w.finalize().unwrap();
    }
    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("serve-web-page.png");
    let server = Server::start_with(std::slice::from_ref(&tiny), &[]);
    let found = run_client(
        "web_page.py",
        &[
            server.url.as_ref(),
            jfk.as_os_str(),
            mic.as_os_str(),
            screenshot.as_os_str(),
        ],
    );
    eprintln!("the page's screenshot: {}", screenshot.display());
    assert!(screenshot.exists());
    assert_eq!(found["title"], "amanuensis");
    assert_eq!(found["models"], serde_json::json!([tiny.to_str().unwrap()]));
    // "detect" and Whisper's 100 languages.
    assert_eq!(found["languages"], 101);
    assert_eq!(found["key_field_shown"], false);

    let file = &found["file"];
    assert!(
        file["status"].as_str().unwrap().starts_with("Done"),
        "{file}"
    );
    let cli = |format: &str| cli_output(&tiny, &jfk, format, &[]);
    let cli_json = json(&cli("json"));
    let cli_segments = cli_json["segments"].as_array().unwrap();
    let shown = file["segments"].as_array().unwrap();
    assert_eq!(shown.len(), cli_segments.len(), "{file}");
    for (row, segment) in shown.iter().zip(cli_segments) {
        assert_eq!(row["text"], segment["text"].as_str().unwrap().trim());
        let stamp = |t: f64| {
            let ms = (t * 1000.0).round() as u64;
            format!("{:02}:{:02}.{:03}", ms / 60000, ms / 1000 % 60, ms % 1000)
        };
        let time = format!(
            "[{} → {}]",
            stamp(segment["start"].as_f64().unwrap()),
            stamp(segment["end"].as_f64().unwrap())
        );
        assert_eq!(row["time"], time.as_str());
    }
    let downloads = &file["downloads"];
    for format in ["txt", "srt", "vtt"] {
        assert_eq!(downloads[format], cli(format).as_str(), "{format}");
    }
    let page_json = json(downloads["json"].as_str().unwrap());
    assert_eq!(page_json["text"], cli_json["text"]);
    assert_eq!(page_json["segments"], cli_json["segments"]);
    assert_eq!(
        file["download_names"],
        serde_json::json!(["jfk.txt", "jfk.srt", "jfk.vtt", "jfk.json"])
    );

    // The recording: the same words (through the browser's capture at its own rate).
    let recording = &found["recording"];
    assert!(
        recording["status"].as_str().unwrap().starts_with("Done"),
        "{recording}"
    );
    let words = |text: &str| -> Vec<String> {
        text.split_whitespace()
            .map(|w| {
                w.chars()
                    .filter(|c| c.is_alphanumeric())
                    .collect::<String>()
                    .to_lowercase()
            })
            .filter(|w| !w.is_empty())
            .collect()
    };
    let heard: String = recording["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| format!("{} ", s["text"].as_str().unwrap()))
        .collect();
    // The browser captures at its own rate (48 kHz) in 16 bits and the server resamples
    // back: a spectrogram that differs a little, on which tiny.en may change a word (seen:
    // "American" for "Americans"). At most 2 of jfk's 22 words differ (edit distance).
    let (heard, said) = (words(&heard), words(cli_json["text"].as_str().unwrap()));
    let distance = edit_distance(&heard, &said);
    assert!(
        said.len() >= 20 && distance <= 2,
        "{distance} words differ: {heard:?} against {said:?}"
    );
    assert!(server.leftovers().is_empty(), "{:?}", server.leftovers());
    assert!(server.stop().success());
}

/// Levenshtein's distance between two word sequences.
fn edit_distance(a: &[String], b: &[String]) -> usize {
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, x) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, y) in b.iter().enumerate() {
            let next = (row[j + 1] + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(x != y));
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}
