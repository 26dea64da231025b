"""The Ray Data recipe (python/examples/ray_transcribe.py) on a local Ray cluster: a dozen
short files through two actors, one of them killed (SIGKILL) mid-run; every file transcribed,
its output written once and whole, equal to the file transcribed alone; a re-run does
nothing."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time
import wave

import numpy
import pytest

import amanuensis
from conftest import JFK, REPO

RECIPE = REPO / "python/examples/ray_transcribe.py"


def write_wav(path: pathlib.Path, samples: numpy.ndarray) -> None:
    pcm = numpy.clip(numpy.round(samples * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(pcm.tobytes())


def test_a_killed_worker_does_not_stop_the_job(tmp_path):
    try:
        import ray  # noqa: F401
    except ImportError:
        pytest.fail("this test needs Ray: pip install 'ray[data]'")

    audio = amanuensis.decode_audio(JFK)
    inputs = tmp_path / "in"
    (inputs / "part").mkdir(parents=True)
    files = []
    for i in range(12):
        start = (i * 7 % 8) * 16000 // 2
        length = (2 + i % 3) * 16000
        path = inputs / ("part" if i % 2 else "") / f"clip{i:02}.wav"
        write_wav(path, audio[start : start + length])
        files.append(path)
    out = tmp_path / "out"
    command = [sys.executable, str(RECIPE), str(inputs), str(out), "--model", "tiny.en",
               "--backend", "cpu", "--actors", "2", "--threads", "1", "--beam-size", "1",
               "--num-cpus", "2"]
    # The job's output goes to a file (a pipe unread while polling could fill and block it).
    log_file = tmp_path / "job.log"
    job = subprocess.Popen(command, stdout=log_file.open("w"), stderr=subprocess.STDOUT)

    # Once the first transcript is written, kill the worker that wrote it (it goes on to
    # another file meanwhile).
    killed = None
    deadline = time.time() + 300
    while killed is None and job.poll() is None and time.time() < deadline:
        written = list(out.rglob("*.json")) if out.exists() else []
        if written:
            worker = json.loads(written[0].read_text())["worker"]
            killed = int(worker.rsplit(":", 1)[1])
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    job.wait(timeout=600)
    log = log_file.read_text()
    print(log)
    assert killed is not None, f"no transcript before the job ended:\n{log}"
    assert job.returncode == 0, log
    # The worker was killed with a file in hand, and Ray retried it (Ray 2.60's words).
    assert "died or was killed while executing a task" in log, log
    assert "will be retried" in log, log

    outputs = sorted(out.rglob("*.json"))
    assert len(outputs) == 12, log
    assert not list(out.rglob("*.partial")), log
    model = amanuensis.Model("tiny.en", backend="cpu", threads=1)
    workers = set()
    for path in files:
        name = path.relative_to(inputs)
        record = json.loads((out / (str(name) + ".json")).read_text())
        alone = "".join(s.text for s in model.transcribe(path, beam_size=1)[0]).strip()
        assert record["text"] == alone, (name, record["text"], alone)
        workers.add(record["worker"])
    # The killed worker's later files went to other processes (its restarted self is one).
    pids = {int(w.rsplit(":", 1)[1]) for w in workers}
    assert len(pids - {killed}) >= 1, (workers, killed)

    # A file that is not audio: said in its `.error`, the others unharmed, status 1; once it
    # is gone, a re-run ends well.
    bad = inputs / "notes.wav"
    bad.write_text("not audio at all " * 100)
    failed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "not transcribed: " + str(bad) in failed.stderr, failed.stderr
    assert "notes.wav" in (out / "notes.wav.error").read_text()
    bad.unlink()

    # A re-run finds everything done and touches nothing.
    times = {p: p.stat().st_mtime_ns for p in outputs}
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "12 files, 12 already transcribed" in again.stdout, again.stdout
    assert {p: p.stat().st_mtime_ns for p in outputs} == times
