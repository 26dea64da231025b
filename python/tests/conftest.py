"""Shared fixtures: the repository's files, the `amanuensis` binary and tiny.en."""

import json
import os
import pathlib
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
JFK = REPO / "tests/data/reference/audio/jfk.flac"


def binary() -> pathlib.Path:
    """The command-line tool, to compare with: AMANUENSIS_BIN, else the release build."""
    target = os.environ.get("CARGO_TARGET_DIR", str(REPO / "target"))
    path = pathlib.Path(os.environ.get("AMANUENSIS_BIN", pathlib.Path(target) / "release/amanuensis"))
    if not path.exists():
        pytest.fail(f"{path} is missing: build it with `cargo build --release` (or set AMANUENSIS_BIN)")
    return path


def cli_json(model_path: str, audio: pathlib.Path, *args: str) -> dict:
    """`amanuensis transcribe`'s JSON of `audio` on the CPU, 2 threads."""
    out = subprocess.run(
        [str(binary()), "transcribe", "--quiet", "--threads", "2", "--backend", "cpu",
         "--model", model_path, str(audio), "--format", "json", "-o", "-", *args],
        capture_output=True, text=True, check=False,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.fixture(scope="session")
def tiny():
    import amanuensis

    return amanuensis.Model("tiny.en", backend="cpu", threads=2)
