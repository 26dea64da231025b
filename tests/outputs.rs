//! Outputs that cannot be written: a write that fails half way (the file-size limit, as a
//! full disk fails it: `ulimit -f` with SIGXFSZ ignored, so that `write` returns EFBIG) and an
//! output path under a file. Each gives one line naming the output and the system's reason,
//! and leaves nothing in the output directory (no partial file, no temporary).

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// Runs the command line `args` in `dir` with files limited to `blocks` 512-byte blocks.
fn limited(dir: &Path, blocks: u32, args: &[&str]) -> std::process::Output {
    let script = format!("trap '' XFSZ; ulimit -f {blocks}; exec \"$0\" \"$@\"",);
    Command::new("sh")
        .current_dir(dir)
        .arg("-c")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_amanuensis"))
        .args(args)
        .output()
        .unwrap()
}

fn assert_refused_and_empty(out: &std::process::Output, dir: &Path, output: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.contains(output) && last.contains("File too large"),
        "the error names the output and the reason: {err}"
    );
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn encode_refuses_a_write_that_fails_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/speech.wav");
    // 50 kB: the features of a window are 2.3 MB.
    let out = limited(
        tmp.path(),
        100,
        &[
            "encode",
            sample.to_str().unwrap(),
            "--model",
            catalog_model("tiny.en").to_str().unwrap(),
            "-o",
            "out.npy",
        ],
    );
    assert_refused_and_empty(&out, tmp.path(), "out.npy");
}

#[test]
fn transcribe_refuses_a_write_that_fails_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/speech.wav");
    let model = catalog_model("tiny.en");
    for format in ["out.json", "out.srt", "out.txt"] {
        // No byte at all may be written.
        let out = limited(
            tmp.path(),
            0,
            &[
                "transcribe",
                sample.to_str().unwrap(),
                "--model",
                model.to_str().unwrap(),
                "-o",
                format,
            ],
        );
        assert_refused_and_empty(&out, tmp.path(), format);
    }
}

#[test]
fn an_output_under_a_file_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("a-file"), b"x").unwrap();
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/speech.wav");
    let out = Command::new(env!("CARGO_BIN_EXE_amanuensis"))
        .current_dir(tmp.path())
        .args([
            "encode",
            sample.to_str().unwrap(),
            "--model",
            catalog_model("tiny.en").to_str().unwrap(),
            "-o",
            "a-file/out.npy",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("a-file/out.npy"), "{err}");
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["a-file"]);
}
