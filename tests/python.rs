//! The Python package (`python/`) and its Ray recipe, through their own tests: a venv in the
//! target directory gets `python/tests/requirements.txt` (pytest, numpy, Ray Data) and the
//! package built from this checkout by `pip install ./python` (maturin, sharing this target
//! directory), then `pytest python/tests` runs: the API against `amanuensis transcribe` on
//! jfk, its errors, and the Ray job with a worker killed mid-run.
//!
//! Needs python3 with venv and pip (Debian: python3-venv, python3-pip) and PyPI.

#[path = "common/pip.rs"]
mod pip;

use std::path::{Path, PathBuf};
use std::process::Command;

use pip::run;

/// The venv with the tests' requirements (made once, again when they change).
fn venv(repo: &Path) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("python-venv");
    let requirements = repo.join("python/tests/requirements.txt");
    pip::installed_once(&dir, &requirements, |dir| {
        run(
            "making a venv (needs python3 with venv: Debian's python3-venv)",
            Command::new("python3").args(["-m", "venv"]).arg(dir),
        );
        run(
            "installing python/tests/requirements.txt with pip (PyPI must be reachable)",
            pip::install(dir.join("bin/python"))
                .arg("-r")
                .arg(&requirements),
        );
    })
}

#[test]
fn python_package_and_ray_recipe() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv = venv(repo);
    let python = venv.join("bin/python");
    // This build's target directory, for maturin's cargo (the dependencies are built already).
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap();
    run(
        "building and installing the package (pip install ./python)",
        pip::outside_cargo(&mut pip::install(&python))
            .args(["--force-reinstall", "--no-deps"])
            .arg(repo.join("python"))
            .env("CARGO_TARGET_DIR", target),
    );
    let out = Command::new(&python)
        .args([
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "python/tests",
        ])
        .current_dir(repo)
        .env("AMANUENSIS_BIN", env!("CARGO_BIN_EXE_amanuensis"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("pytest runs");
    let log = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{log}");
    assert!(out.status.success(), "pytest failed:\n{log}");
    assert!(log.contains(" passed"), "{log}");
}
