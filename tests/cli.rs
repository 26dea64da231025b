//! The `amanuensis` binary as a user runs it: outputs, windows, help, and bad input.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use amanuensis::audio::{Input, LogMel, N_FRAMES, N_SAMPLES, load_audio};
use common::*;

fn amanuensis() -> Command {
    Command::new(env!("CARGO_BIN_EXE_amanuensis"))
}

fn sample() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/speech.wav")
}

fn run(args: &[&std::ffi::OsStr]) -> Output {
    amanuensis().args(args).output().expect("the binary runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn mel_writes_the_log_mel_of_every_window() {
    let tmp = tempfile::tempdir().unwrap();
    let out_path = tmp.path().join("speech.npy");
    for n_mels in [80, 128] {
        let out = run(&[
            "mel".as_ref(),
            sample().as_os_str(),
            "--n-mels".as_ref(),
            n_mels.to_string().as_ref(),
            "-o".as_ref(),
            out_path.as_os_str(),
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        let (shape, values) = read_npy(&out_path);
        assert_eq!(shape, [1, n_mels, N_FRAMES]);
        let (samples, _) = load_audio(&Input::Path(sample())).unwrap();
        assert_eq!(values, LogMel::new(n_mels).compute(&samples));
        let report = stderr(&out);
        assert!(
            report.contains("22050 Hz") && report.contains("9.36 s"),
            "{report}"
        );
    }
}

/// 65 s of audio make three windows: two full ones and a zero-padded 5 s one, each the log-mel
/// of its own 30 s of samples (as `log_mel_spectrogram(pad_or_trim(chunk))`).
#[test]
fn long_audio_is_cut_into_30_second_windows() {
    let tmp = tempfile::tempdir().unwrap();
    let samples: Vec<f32> = (0..65 * 16_000)
        .map(|i| {
            let t = i as f32 / 16_000.0;
            0.3 * (2.0 * std::f32::consts::PI * (200.0 + 20.0 * t) * t).sin()
        })
        .collect();
    let wav = tmp.path().join("long.wav");
    write_wav_f32(&wav, 16_000, &samples);
    let npy = tmp.path().join("long.npy");
    let out = run(&[
        "mel".as_ref(),
        wav.as_os_str(),
        "-o".as_ref(),
        npy.as_os_str(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (shape, values) = read_npy(&npy);
    assert_eq!(shape, [3, 80, N_FRAMES]);
    let mel = LogMel::new(80);
    for (w, chunk) in samples.chunks(N_SAMPLES).enumerate() {
        let got = &values[w * mel.window_len()..(w + 1) * mel.window_len()];
        assert_eq!(got, mel.compute(chunk), "window {w}");
    }
}

#[test]
fn standard_input_reads_like_a_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (from_file, from_stdin) = (tmp.path().join("file.npy"), tmp.path().join("stdin.npy"));
    let out = run(&[
        "mel".as_ref(),
        sample().as_os_str(),
        "-o".as_ref(),
        from_file.as_os_str(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = amanuensis()
        .args([
            "mel".as_ref(),
            "-".as_ref(),
            "-o".as_ref(),
            from_stdin.as_os_str(),
        ])
        .stdin(Stdio::from(std::fs::File::open(sample()).unwrap()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("<stdin>"));
    assert_eq!(read_npy(&from_file), read_npy(&from_stdin));
}

#[test]
fn help_describes_the_tool_and_each_command() {
    let out = run(&["--help".as_ref()]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("mel") && text.contains("Whisper"), "{text}");
    let out = run(&["mel".as_ref(), "--help".as_ref()]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--n-mels",
        "--output",
        "standard input",
        "[windows, n_mels, 3000]",
        "Examples",
    ] {
        assert!(
            text.contains(needle),
            "mel --help lacks {needle:?}:\n{text}"
        );
    }
}

/// Runs `mel` on a bad input and checks the failure: non-zero exit, one line on stderr that
/// names the file and the problem, and no output file (nor any temporary one) left behind.
fn assert_refused(input: &Path, problem: &str) {
    let out_dir = tempfile::tempdir().unwrap();
    let npy = out_dir.path().join("out.npy");
    let out = run(&[
        "mel".as_ref(),
        input.as_os_str(),
        "-o".as_ref(),
        npy.as_os_str(),
    ]);
    assert_refused_cleanly(&out, input, problem, out_dir.path());
}

#[test]
fn bad_inputs_fail_with_one_clear_line_and_no_output() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");

    assert_refused(&dir.join("missing.wav"), "No such file");

    std::fs::write(dir.join("empty.wav"), b"").unwrap();
    assert_refused(&dir.join("empty.wav"), "empty");

    std::fs::write(dir.join("notes.wav"), b"these are words, not audio\n").unwrap();
    assert_refused(&dir.join("notes.wav"), "not a recognised audio file");

    let flac = std::fs::read(data.join("speech-44k1-stereo-s24.flac")).unwrap();
    std::fs::write(dir.join("cut.flac"), &flac[..flac.len() / 2]).unwrap();
    assert_refused(&dir.join("cut.flac"), "truncated");
    std::fs::write(dir.join("stub.flac"), &flac[..100]).unwrap();
    assert_refused(&dir.join("stub.flac"), "truncated");

    assert_refused(&data.join("speech.opus"), "Opus codec is not supported");

    write_wav_f32(&dir.join("silence0.wav"), 16_000, &[]);
    assert_refused(&dir.join("silence0.wav"), "no audio samples");

    let mut nan = vec![0.1f32; 32_000];
    nan[24_000] = f32::NAN;
    write_wav_f32(&dir.join("nan.wav"), 16_000, &nan);
    assert_refused(&dir.join("nan.wav"), "NaN) at 1.500 s");

    let mut inf = vec![0.1f32; 32_000];
    inf[8_000] = f32::NEG_INFINITY;
    write_wav_f32(&dir.join("inf.wav"), 16_000, &inf);
    assert_refused(&dir.join("inf.wav"), "infinity) at 0.500 s");
}

/// `encode` opens the audio before it resolves the model: a missing input fails naming
/// itself, without fetching anything (the catalog cache is empty and the Python that would
/// fetch does not exist, so a fetch would fail on that instead).
#[test]
fn encode_opens_the_audio_before_the_model() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing.wav");
    let out = amanuensis()
        .env("AMANUENSIS_HOME", tmp.path().join("cache"))
        .env("AMANUENSIS_PYTHON", tmp.path().join("no-python"))
        .args(["encode", "--model", "tiny"])
        .arg(&missing)
        .arg("-o")
        .arg(tmp.path().join("out.npy"))
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("missing.wav") && err.contains("No such file"),
        "the error names the audio: {err}"
    );
    assert!(
        !err.to_lowercase().contains("fetch") && !err.contains("no-python"),
        "nothing was fetched: {err}"
    );
    assert!(!tmp.path().join("out.npy").exists());
}

#[test]
fn a_bad_output_path_or_option_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let npy = tmp.path().join("no/such/dir/out.npy");
    let out = run(&[
        "mel".as_ref(),
        sample().as_os_str(),
        "-o".as_ref(),
        npy.as_os_str(),
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("no/such/dir") && err.contains("does not exist"),
        "{err}"
    );

    let out = run(&[
        "mel".as_ref(),
        sample().as_os_str(),
        "--n-mels".as_ref(),
        "64".as_ref(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("80 or 128"), "{}", stderr(&out));
}

/// A failure after some windows were written leaves no output: a valid first window followed
/// by NaN 40 s in.
#[test]
fn a_failure_midway_leaves_no_partial_output() {
    let tmp = tempfile::tempdir().unwrap();
    let mut samples = vec![0.05f32; 50 * 16_000];
    samples[40 * 16_000] = f32::NAN;
    let wav = tmp.path().join("late-nan.wav");
    write_wav_f32(&wav, 16_000, &samples);
    let out_dir = tmp.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let npy = out_dir.join("out.npy");
    let out = run(&[
        "mel".as_ref(),
        wav.as_os_str(),
        "-o".as_ref(),
        npy.as_os_str(),
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("at 40.000 s"), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_dir(&out_dir).unwrap().count(),
        0,
        "something was left behind"
    );
}
