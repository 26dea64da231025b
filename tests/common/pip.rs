//! Python packages a test installs once into the target directory.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `command`, failing the test with `what` and its output when it fails.
pub fn run(what: &str, command: &mut Command) {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {command:?}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `dir` with `requirements` installed by `install(dir)`: done once, again when the
/// requirements change (their text is kept in `dir/.requirements`).
pub fn installed_once(dir: &Path, requirements: &Path, install: impl FnOnce(&Path)) -> PathBuf {
    let wanted = std::fs::read_to_string(requirements).unwrap();
    let stamp = dir.join(".requirements");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) {
        let _ = std::fs::remove_dir_all(dir);
        install(dir);
        std::fs::write(&stamp, wanted).unwrap();
    }
    dir.to_path_buf()
}
