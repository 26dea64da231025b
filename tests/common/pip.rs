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

/// `command` without the variables `cargo test` sets for a test (`CARGO_MANIFEST_DIR`,
/// `CARGO_PKG_*`, ...): a cargo started by it (maturin's) would see build scripts' inputs
/// changed (ring's reads `CARGO_MANIFEST_DIR`) and build them and all that depends on them
/// again, here and in the test build that follows.
pub fn outside_cargo(command: &mut Command) -> &mut Command {
    const SET_BY_CARGO: [&str; 6] = [
        "CARGO_PKG_",
        "CARGO_MANIFEST_",
        "CARGO_CRATE_",
        "CARGO_BIN_",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
    ];
    for (name, _) in std::env::vars_os() {
        let name_str = name.to_string_lossy();
        if name_str == "CARGO"
            || name_str == "OUT_DIR"
            || name_str == "CARGO_RUSTC_CURRENT_DIR"
            || SET_BY_CARGO.iter().any(|p| name_str.starts_with(p))
        {
            command.env_remove(&name);
        }
    }
    command
}

/// `python -m pip install --quiet --disable-pip-version-check`, for the caller's arguments.
pub fn install(python: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new(python);
    command.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
    ]);
    command
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
